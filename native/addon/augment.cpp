// Tile augmentation for JS: sampleAugmentParams and augmentBatch (engine: g2l/augment.h). Converts the options
// object and the tensors, runs the engine on the threadpool; float16/bfloat16 results cross as Uint16Array bits.
#include <memory>
#include <string>

#include "async.h"
#include "convert.h"
#include "exports.h"
#include "g2l/augment.h"

namespace g2l::addon {

namespace {

AugmentConfig config_from_js(const Napi::Value& value) {
  if (value.IsUndefined() || value.IsNull()) return AugmentConfig{};
  if (!value.IsObject()) throw Napi::TypeError::New(value.Env(), "augment config must be an object");
  return augment_config_from_js(value.As<Napi::Object>(), "augment config");
}

Normalization norm_from_js(const Napi::Value& value, const std::string& what) {
  if (!value.IsObject()) throw Napi::TypeError::New(value.Env(), what + " must be { mean: number[3], std: number[3] }");
  Napi::Object o = value.As<Napi::Object>();
  return Normalization{float3_from_js(o.Get("mean"), what + ".mean"), float3_from_js(o.Get("std"), what + ".std")};
}

int64_t int_from_js(const Napi::Value& v, const std::string& what) {
  if (!v.IsNumber() || v.As<Napi::Number>().DoubleValue() != static_cast<double>(v.As<Napi::Number>().Int64Value())) {
    throw Napi::TypeError::New(v.Env(), what + " must be an integer");
  }
  return v.As<Napi::Number>().Int64Value();
}

uint64_t seed_from_js(const Napi::Value& v) {
  if (v.IsBigInt()) {
    bool lossless = true;
    return v.As<Napi::BigInt>().Uint64Value(&lossless);
  }
  double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1;
  if (!(d >= 0) || d != static_cast<double>(static_cast<uint64_t>(d))) {
    throw Napi::TypeError::New(v.Env(), "seed must be a non-negative integer or a bigint");
  }
  return static_cast<uint64_t>(d);
}

/** Like tensor_to_js, but 16-bit floats become a Uint16Array of their bits; `dtype` names the element type. */
Napi::Object any_tensor_to_js(Napi::Env env, HostTensor& t) {
  if (t.dtype != DType::F16 && t.dtype != DType::BF16) {
    Napi::Object o = tensor_to_js(env, t);
    o.Set("dtype", dtype_name(t.dtype));
    return o;
  }
  Napi::ArrayBuffer buf = external_array_buffer(env, t);
  Napi::Array shape = Napi::Array::New(env, t.shape.size());
  for (size_t i = 0; i < t.shape.size(); ++i) shape.Set(static_cast<uint32_t>(i), static_cast<double>(t.shape[i]));
  Napi::Object o = Napi::Object::New(env);
  o.Set("data", Napi::Uint16Array::New(env, static_cast<size_t>(t.numel()), buf, 0));
  o.Set("shape", shape);
  o.Set("dtype", dtype_name(t.dtype));
  return o;
}

// sampleAugmentParams(batch, tileH, tileW, config, seed) -> Promise<{ data: Float32Array, shape: [B,15] }>
Napi::Value SampleAugmentParamsJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t batch = int_from_js(info[0], "batch");
  int64_t tile_h = int_from_js(info[1], "tileH");
  int64_t tile_w = int_from_js(info[2], "tileW");
  AugmentConfig config = config_from_js(info[3]);
  uint64_t seed = seed_from_js(info[4]);
  return run_async<HostTensor>(
      env, [=] { return sample_augment_params(batch, tile_h, tile_w, config, seed); },
      [](Napi::Env e, HostTensor& out) -> Napi::Value { return tensor_to_js(e, out); });
}

// augmentBatch(tiles {Uint8Array,[B,H,W,3]}, params {Float32Array,[B,15]}, config, teacherNorm, studentNorm,
//              teacherDtype 'float16'|'bfloat16'|'float32', device) -> Promise<{ teacher, student }>
Napi::Value AugmentBatchJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  HostTensor tiles = tensor_from_js(info[0], "tiles");
  HostTensor params = tensor_from_js(info[1], "params");
  AugmentConfig config = config_from_js(info[2]);
  Normalization teacher = norm_from_js(info[3], "teacherNorm");
  Normalization student = norm_from_js(info[4], "studentNorm");
  std::string dtype = info.Length() > 5 && !info[5].IsUndefined() ? string_from_js(info[5], "teacherDtype") : "float16";
  DType teacher_dtype;
  if (dtype == "float16")
    teacher_dtype = DType::F16;
  else if (dtype == "bfloat16")
    teacher_dtype = DType::BF16;
  else if (dtype == "float32")
    teacher_dtype = DType::F32;
  else
    throw Napi::TypeError::New(env, "teacherDtype must be 'float16', 'bfloat16' or 'float32', got '" + dtype + "'");
  std::string device = info.Length() > 6 && !info[6].IsUndefined() ? string_from_js(info[6], "device") : "cpu";
  return run_async<HostAugmentedBatch>(
      env, [=] { return augment_batch(tiles, params, config, teacher, student, teacher_dtype, device); },
      [](Napi::Env e, HostAugmentedBatch& out) -> Napi::Value {
        Napi::Object o = Napi::Object::New(e);
        o.Set("teacher", any_tensor_to_js(e, out.teacher));
        o.Set("student", any_tensor_to_js(e, out.student));
        return o;
      },
      {info[0], info[1]});
}

// allocTileBuffer(bytes, pinned) -> Uint8Array: engine-owned memory for tile batches (pinned on CUDA machines).
Napi::Value AllocTileBufferJs(const Napi::CallbackInfo& info) {
  int64_t bytes = int_from_js(info[0], "bytes");
  bool pinned = info.Length() > 1 && info[1].ToBoolean().Value();
  HostTensor t = alloc_tile_buffer(bytes, pinned);
  return tensor_to_js(info.Env(), t).Get("data");
}

}  // namespace

void register_augment(Napi::Env env, Napi::Object exports) {
  exports.Set("allocTileBuffer", Napi::Function::New(env, AllocTileBufferJs, "allocTileBuffer"));
  exports.Set("sampleAugmentParams", Napi::Function::New(env, SampleAugmentParamsJs, "sampleAugmentParams"));
  exports.Set("augmentBatch", Napi::Function::New(env, AugmentBatchJs, "augmentBatch"));
}

}  // namespace g2l::addon
