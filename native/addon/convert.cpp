#include "convert.h"

#include <memory>

namespace g2l::addon {

static DType dtype_of(napi_typedarray_type type, const std::string& what, Napi::Env env) {
  switch (type) {
    case napi_float32_array:
      return DType::F32;
    case napi_float64_array:
      return DType::F64;
    case napi_uint8_array:
      return DType::U8;
    case napi_bigint64_array:
      return DType::I64;
    default:
      throw Napi::TypeError::New(env,
                                 what + ": data must be a Float32Array, Float64Array, Uint8Array or BigInt64Array");
  }
}

HostTensor tensor_from_js(const Napi::Value& value, const std::string& what) {
  Napi::Env env = value.Env();
  if (!value.IsObject()) throw Napi::TypeError::New(env, what + ": expected { data, shape }");
  Napi::Object obj = value.As<Napi::Object>();
  Napi::Value data = obj.Get("data");
  Napi::Value shape = obj.Get("shape");
  if (!data.IsTypedArray()) throw Napi::TypeError::New(env, what + ".data must be a typed array");
  if (!shape.IsArray()) throw Napi::TypeError::New(env, what + ".shape must be an array of integers");
  Napi::TypedArray arr = data.As<Napi::TypedArray>();
  Napi::Array dims = shape.As<Napi::Array>();
  std::vector<int64_t> sizes;
  int64_t numel = 1;
  for (uint32_t i = 0; i < dims.Length(); ++i) {
    Napi::Value d = dims.Get(i);
    double v = d.IsNumber() ? d.As<Napi::Number>().DoubleValue() : -1;
    if (!(v >= 0) || v != static_cast<double>(static_cast<int64_t>(v))) {
      throw Napi::TypeError::New(env, what + ".shape[" + std::to_string(i) + "] must be a non-negative integer");
    }
    sizes.push_back(static_cast<int64_t>(v));
    numel *= sizes.back();
  }
  if (static_cast<int64_t>(arr.ElementLength()) != numel) {
    throw Napi::RangeError::New(env, what + ": data has " + std::to_string(arr.ElementLength()) +
                                         " elements but shape needs " + std::to_string(numel));
  }
  DType dtype = dtype_of(arr.TypedArrayType(), what, env);
  auto* base = static_cast<uint8_t*>(arr.ArrayBuffer().Data()) + arr.ByteOffset();
  return HostTensor::borrow(dtype, std::move(sizes), base);
}

Napi::ArrayBuffer external_array_buffer(Napi::Env env, HostTensor& t) {
  if (t.nbytes() == 0) return Napi::ArrayBuffer::New(env, 0);
  // The ArrayBuffer keeps the engine's buffer alive through a heap copy of its shared owner.
  auto* keep = new std::shared_ptr<void>(t.owner);
  return Napi::ArrayBuffer::New(
      env, t.data, t.nbytes(), [](Napi::Env, void*, std::shared_ptr<void>* k) { delete k; }, keep);
}

Napi::Object tensor_to_js(Napi::Env env, HostTensor& t) {
  Napi::ArrayBuffer buf = external_array_buffer(env, t);
  Napi::Value data;
  size_t n = static_cast<size_t>(t.numel());
  switch (t.dtype) {
    case DType::F32:
      data = Napi::Float32Array::New(env, n, buf, 0);
      break;
    case DType::F64:
      data = Napi::Float64Array::New(env, n, buf, 0);
      break;
    case DType::U8:
      data = Napi::Uint8Array::New(env, n, buf, 0);
      break;
    case DType::I64:
      data = Napi::BigInt64Array::New(env, n, buf, 0);
      break;
    default:
      throw Napi::TypeError::New(env, std::string("engine returned ") + dtype_name(t.dtype) + ", which JS cannot hold");
  }
  Napi::Array shape = Napi::Array::New(env, t.shape.size());
  for (size_t i = 0; i < t.shape.size(); ++i)
    shape.Set(static_cast<uint32_t>(i), Napi::Number::New(env, static_cast<double>(t.shape[i])));
  Napi::Object out = Napi::Object::New(env);
  out.Set("data", data);
  out.Set("shape", shape);
  return out;
}

std::array<float, 3> float3_from_js(const Napi::Value& value, const std::string& what) {
  Napi::Env env = value.Env();
  if (!value.IsArray() || value.As<Napi::Array>().Length() != 3) {
    throw Napi::TypeError::New(env, what + " must be an array of 3 numbers");
  }
  Napi::Array a = value.As<Napi::Array>();
  std::array<float, 3> out{};
  for (uint32_t i = 0; i < 3; ++i) {
    Napi::Value v = a.Get(i);
    if (!v.IsNumber()) throw Napi::TypeError::New(env, what + " must be an array of 3 numbers");
    out[i] = v.As<Napi::Number>().FloatValue();
  }
  return out;
}

std::string string_from_js(const Napi::Value& value, const std::string& what) {
  if (!value.IsString()) throw Napi::TypeError::New(value.Env(), what + " must be a string");
  return value.As<Napi::String>().Utf8Value();
}

bool has_field(const Napi::Object& o, const char* key) {
  return o.Has(key) && !o.Get(key).IsUndefined() && !o.Get(key).IsNull();
}

void read_number(const Napi::Object& o, const char* key, double& out, const std::string& what) {
  if (!has_field(o, key)) return;
  Napi::Value v = o.Get(key);
  if (!v.IsNumber()) throw Napi::TypeError::New(o.Env(), what + "." + key + " must be a number");
  out = v.As<Napi::Number>().DoubleValue();
}

void read_int(const Napi::Object& o, const char* key, int64_t& out, const std::string& what) {
  double d = static_cast<double>(out);
  read_number(o, key, d, what);
  if (d != static_cast<double>(static_cast<int64_t>(d))) {
    throw Napi::TypeError::New(o.Env(), what + "." + key + " must be an integer");
  }
  out = static_cast<int64_t>(d);
}

void read_bool(const Napi::Object& o, const char* key, bool& out, const std::string& what) {
  if (!has_field(o, key)) return;
  Napi::Value v = o.Get(key);
  if (!v.IsBoolean()) throw Napi::TypeError::New(o.Env(), what + "." + key + " must be a boolean");
  out = v.As<Napi::Boolean>().Value();
}

void read_string(const Napi::Object& o, const char* key, std::string& out, const std::string& what) {
  if (!has_field(o, key)) return;
  out = string_from_js(o.Get(key), what + "." + key);
}

AugmentConfig augment_config_from_js(const Napi::Object& o, const std::string& what) {
  AugmentConfig c;
  read_bool(o, "enabled", c.enabled, what);
  read_int(o, "crop", c.crop, what);
  read_number(o, "pHflip", c.p_hflip, what);
  read_number(o, "pVflip", c.p_vflip, what);
  read_number(o, "pJitter", c.p_jitter, what);
  read_number(o, "brightness", c.brightness, what);
  read_number(o, "contrast", c.contrast, what);
  read_number(o, "saturation", c.saturation, what);
  read_number(o, "hue", c.hue, what);
  read_number(o, "pBlur", c.p_blur, what);
  read_int(o, "blurKernel", c.blur_kernel, what);
  read_number(o, "blurSigmaMin", c.blur_sigma_min, what);
  read_number(o, "blurSigmaMax", c.blur_sigma_max, what);
  return c;
}

Regularization regularization_from_js(const Napi::Object& o, const std::string& what) {
  Regularization r;
  read_number(o, "dropPath", r.drop_path, what);
  read_number(o, "attnDrop", r.attn_drop, what);
  read_number(o, "projDrop", r.proj_drop, what);
  read_number(o, "posDrop", r.pos_drop, what);
  read_number(o, "headDrop", r.head_drop, what);
  read_number(o, "hiddenDrop", r.hidden_drop, what);
  return r;
}

ModelSpec model_spec_from_js(const Napi::Value& value, const std::string& what) {
  Napi::Env env = value.Env();
  if (!value.IsObject()) throw Napi::TypeError::New(env, what + " must be a model spec object (lib/models/spec.ts)");
  Napi::Object o = value.As<Napi::Object>();
  // Every field is required: the spec is resolved in lib/models/spec.ts and the engine has no defaults of its own.
  auto need = [&](const char* key) {
    if (!has_field(o, key)) throw Napi::TypeError::New(env, what + "." + key + " is missing");
  };
  ModelSpec s;
  auto str = [&](const char* key, std::string& out) {
    need(key);
    read_string(o, key, out, what);
  };
  auto integer = [&](const char* key, int64_t& out) {
    need(key);
    read_int(o, key, out, what);
  };
  auto flag = [&](const char* key, bool& out) {
    need(key);
    read_bool(o, key, out, what);
  };
  auto number = [&](const char* key, double& out) {
    need(key);
    read_number(o, key, out, what);
  };
  str("family", s.family);
  str("layout", s.layout);
  str("preset", s.preset);
  str("folder", s.folder);
  integer("imgSize", s.img_size);
  integer("inputSize", s.input_size);
  integer("patchSize", s.patch_size);
  integer("embedDim", s.embed_dim);
  integer("depth", s.depth);
  integer("numHeads", s.num_heads);
  integer("numRegisters", s.num_registers);
  integer("mlpHidden", s.mlp_hidden);
  str("mlp", s.mlp);
  number("initValues", s.init_values);
  flag("layerScale", s.layer_scale);
  flag("noEmbedClass", s.no_embed_class);
  flag("qkvFused", s.qkv_fused);
  flag("qkvBias", s.qkv_bias);
  number("normEps", s.norm_eps);
  flag("posAntialias", s.pos_antialias);
  flag("maskToken", s.mask_token);
  integer("numClasses", s.num_classes);
  str("pool", s.pool);
  flag("fcNorm", s.fc_norm);
  need("mean");
  s.mean = float3_from_js(o.Get("mean"), what + ".mean");
  need("std");
  s.std = float3_from_js(o.Get("std"), what + ".std");
  need("drop");
  if (!o.Get("drop").IsObject()) throw Napi::TypeError::New(env, what + ".drop must be an object of rates");
  s.drop = regularization_from_js(o.Get("drop").As<Napi::Object>(), what + ".drop");
  str("configJson", s.config_json);
  str("preprocessorJson", s.preprocessor_json);
  return s;
}

// ---------------------------------------------------------------------------------------------------------------
// Positional arguments
// ---------------------------------------------------------------------------------------------------------------

int64_t int_arg(const Napi::CallbackInfo& info, size_t i, const char* what) {
  if (info.Length() <= i || !info[i].IsNumber())
    throw Napi::TypeError::New(info.Env(), std::string(what) + " must be a number");
  return info[i].As<Napi::Number>().Int64Value();
}

std::string device_at(const Napi::CallbackInfo& info, size_t i) {
  return info.Length() > i && !info[i].IsUndefined() ? string_from_js(info[i], "device") : "cpu";
}

// ---------------------------------------------------------------------------------------------------------------
// Distillation options: a missing or undefined key keeps the engine's default; a wrong type is a TypeError naming it.
// ---------------------------------------------------------------------------------------------------------------

Napi::Object object_arg(const Napi::Value& v, const std::string& what) {
  if (v.IsUndefined()) return Napi::Object::New(v.Env());
  if (!v.IsObject()) throw Napi::TypeError::New(v.Env(), what + " must be an object");
  return v.As<Napi::Object>();
}

LossOptions loss_options_from_js(const Napi::Object& o) {
  LossOptions opts;
  read_number(o, "alpha", opts.alpha, "loss");
  read_string(o, "reduction", opts.reduction, "loss");
  read_number(o, "bnEps", opts.bn_eps, "loss");
  read_bool(o, "teacherBn", opts.teacher_bn, "loss");
  read_string(o, "sync", opts.sync, "loss");
  return opts;
}

OptimizerConfig optimizer_config_from_js(const Napi::Object& o) {
  OptimizerConfig c;
  read_number(o, "lr", c.lr, "optimizer");
  read_number(o, "finalLr", c.final_lr, "optimizer");
  read_number(o, "weightDecay", c.weight_decay, "optimizer");
  read_number(o, "finalWeightDecay", c.final_weight_decay, "optimizer");
  read_int(o, "warmupSteps", c.warmup_steps, "optimizer");
  read_int(o, "totalSteps", c.total_steps, "optimizer");
  read_number(o, "beta1", c.beta1, "optimizer");
  read_number(o, "beta2", c.beta2, "optimizer");
  read_number(o, "eps", c.eps, "optimizer");
  read_number(o, "clipGradNorm", c.clip_grad_norm, "optimizer");
  return c;
}

// { packQkv, fusedNorm, fusedSwiglu, fusedAdamw, sdpa, fp8Quant, fp8FastAccum } -> KernelOptions (g2l/kernels.h);
// the engine validates the string choices.
KernelOptions kernel_options_from_js(const Napi::Object& o) {
  KernelOptions k;
  read_bool(o, "packQkv", k.packed_qkv, "kernels");
  read_bool(o, "fusedNorm", k.fused_norm, "kernels");
  read_bool(o, "fusedSwiglu", k.fused_swiglu, "kernels");
  read_string(o, "fusedAdamw", k.fused_adamw, "kernels");
  read_string(o, "sdpa", k.sdpa, "kernels");
  read_string(o, "fp8Quant", k.fp8_quant, "kernels");
  read_bool(o, "fp8FastAccum", k.fp8_fast_accum, "kernels");
  return k;
}

Napi::Object kernel_options_to_js(Napi::Env env, const KernelOptions& k) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("packQkv", k.packed_qkv);
  o.Set("fusedNorm", k.fused_norm);
  o.Set("fusedSwiglu", k.fused_swiglu);
  o.Set("fusedAdamw", k.fused_adamw);
  o.Set("sdpa", k.sdpa);
  o.Set("fp8Quant", k.fp8_quant);
  o.Set("fp8FastAccum", k.fp8_fast_accum);
  return o;
}

std::vector<std::string> strings_from_js(const Napi::Value& v, const std::string& what) {
  if (!v.IsArray()) throw Napi::TypeError::New(v.Env(), what + " must be an array of strings");
  Napi::Array a = v.As<Napi::Array>();
  std::vector<std::string> out;
  for (uint32_t i = 0; i < a.Length(); ++i)
    out.push_back(string_from_js(a.Get(i), what + "[" + std::to_string(i) + "]"));
  return out;
}

}  // namespace g2l::addon
