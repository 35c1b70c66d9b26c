// Conversions between JS values and engine types. Tensors cross as { data: TypedArray, shape: number[] }:
// inputs are borrowed (no copy) and outputs wrap the engine's memory in an external ArrayBuffer (no copy).
#pragma once

#include <napi.h>

#include <array>
#include <string>
#include <vector>

#include "g2l/augment.h"
#include "g2l/distill.h"
#include "g2l/engine.h"
#include "g2l/models.h"

namespace g2l::addon {

/** Reads { data, shape } into a HostTensor that borrows `data`'s memory; `what` names the argument in errors. */
HostTensor tensor_from_js(const Napi::Value& value, const std::string& what);

/** Wraps a HostTensor as { data: TypedArray, shape: number[] } without copying. */
Napi::Object tensor_to_js(Napi::Env env, HostTensor& t);

std::array<float, 3> float3_from_js(const Napi::Value& value, const std::string& what);
std::string string_from_js(const Napi::Value& value, const std::string& what);

/** An external ArrayBuffer over the HostTensor's memory that keeps its owner alive (no copy). */
Napi::ArrayBuffer external_array_buffer(Napi::Env env, HostTensor& t);

// Optional fields of an options object: each leaves `out` unchanged when the key is absent (undefined or null),
// and throws a TypeError naming `what.key` when the value has the wrong type.
bool has_field(const Napi::Object& o, const char* key);
void read_number(const Napi::Object& o, const char* key, double& out, const std::string& what);
void read_int(const Napi::Object& o, const char* key, int64_t& out, const std::string& what);
void read_bool(const Napi::Object& o, const char* key, bool& out, const std::string& what);
void read_string(const Napi::Object& o, const char* key, std::string& out, const std::string& what);

/** The augmentation options { enabled, crop, pHflip, ... } (lib/backends/types.ts AugmentConfig); unset keys keep G2L's
 * defaults. */
AugmentConfig augment_config_from_js(const Napi::Object& o, const std::string& what);

/** The training-only rates { dropPath, attnDrop, projDrop, posDrop, headDrop, hiddenDrop } (absent keys: 0). */
Regularization regularization_from_js(const Napi::Object& o, const std::string& what);

/** A resolved model spec (lib/models/spec.ts NativeModelSpec: VitSpec + configJson + preprocessorJson), every field
 *  required. */
ModelSpec model_spec_from_js(const Napi::Value& value, const std::string& what);

// Positional arguments: an integer (TypeError naming `what` otherwise); the device string, "cpu" when absent.
int64_t int_arg(const Napi::CallbackInfo& info, size_t i, const char* what);
std::string device_at(const Napi::CallbackInfo& info, size_t i);

/** An options object: undefined reads as {}, anything else but an object is a TypeError naming `what`. */
Napi::Object object_arg(const Napi::Value& v, const std::string& what);
std::vector<std::string> strings_from_js(const Napi::Value& v, const std::string& what);

// The distillation options (lib/distill/native-types.ts); unset keys keep the engine's values.
LossOptions loss_options_from_js(const Napi::Object& o);
OptimizerConfig optimizer_config_from_js(const Napi::Object& o);
/** { packQkv, fusedNorm, fusedSwiglu, fusedAdamw, sdpa, fp8Quant, fp8FastAccum } <-> KernelOptions (g2l/kernels.h). */
KernelOptions kernel_options_from_js(const Napi::Object& o);
Napi::Object kernel_options_to_js(Napi::Env env, const KernelOptions& k);

}  // namespace g2l::addon
