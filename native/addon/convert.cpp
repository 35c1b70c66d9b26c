#include "convert.h"

#include <memory>

namespace g2l::addon {

static DType dtype_of(napi_typedarray_type type, const std::string& what, Napi::Env env) {
  switch (type) {
    case napi_float32_array: return DType::F32;
    case napi_float64_array: return DType::F64;
    case napi_uint8_array: return DType::U8;
    case napi_bigint64_array: return DType::I64;
    default: throw Napi::TypeError::New(env, what + ": data must be a Float32Array, Float64Array, Uint8Array or BigInt64Array");
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

Napi::Object tensor_to_js(Napi::Env env, HostTensor& t) {
  // The ArrayBuffer keeps the engine's buffer alive through a heap copy of its shared owner.
  auto* keep = new std::shared_ptr<void>(t.owner);
  Napi::ArrayBuffer buf;
  if (t.nbytes() == 0) {
    delete keep;
    buf = Napi::ArrayBuffer::New(env, 0);
  } else {
    buf = Napi::ArrayBuffer::New(env, t.data, t.nbytes(),
                                 [](Napi::Env, void*, std::shared_ptr<void>* k) { delete k; }, keep);
  }
  Napi::Value data;
  size_t n = static_cast<size_t>(t.numel());
  switch (t.dtype) {
    case DType::F32: data = Napi::Float32Array::New(env, n, buf, 0); break;
    case DType::F64: data = Napi::Float64Array::New(env, n, buf, 0); break;
    case DType::U8: data = Napi::Uint8Array::New(env, n, buf, 0); break;
    case DType::I64: data = Napi::BigInt64Array::New(env, n, buf, 0); break;
    default: throw Napi::TypeError::New(env, std::string("engine returned ") + dtype_name(t.dtype) + ", which JS cannot hold");
  }
  Napi::Array shape = Napi::Array::New(env, t.shape.size());
  for (size_t i = 0; i < t.shape.size(); ++i) shape.Set(static_cast<uint32_t>(i), Napi::Number::New(env, static_cast<double>(t.shape[i])));
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

}  // namespace g2l::addon
