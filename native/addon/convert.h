// Conversions between JS values and engine types. Tensors cross as { data: TypedArray, shape: number[] }:
// inputs are borrowed (no copy) and outputs wrap the engine's memory in an external ArrayBuffer (no copy).
#pragma once

#include <napi.h>

#include <array>
#include <string>
#include <vector>

#include "g2l/engine.h"

namespace g2l::addon {

/** Reads { data, shape } into a HostTensor that borrows `data`'s memory; `what` names the argument in errors. */
HostTensor tensor_from_js(const Napi::Value& value, const std::string& what);

/** Wraps a HostTensor as { data: TypedArray, shape: number[] } without copying. */
Napi::Object tensor_to_js(Napi::Env env, HostTensor& t);

std::array<float, 3> float3_from_js(const Napi::Value& value, const std::string& what);
std::string string_from_js(const Napi::Value& value, const std::string& what);

}  // namespace g2l::addon
