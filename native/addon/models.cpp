// Models in the addon: load / create / describe a model, embed images with it, export it, dispose it. A model
// crosses to JS as an External holding a shared_ptr to the engine's g2l::Model, type-tagged so that a foreign
// object passed back is refused; every heavy call runs on the libuv threadpool (run_async).
//
//   loadModel(spec, device, dtype)         -> Promise<External>   (spec: lib/models/spec.ts NativeModelSpec)
//   createModel(spec, device, dtype, seed) -> Promise<External>   (random weights)
//   describeModel(spec)                    -> Promise<ModelInfo>  (no weights read)
//   modelInfo(handle)                                  -> ModelInfo
//   modelEmbed(handle, {data, shape})                  -> Promise<{data: Float32Array, shape: [N,D]}>
//   modelExport(handle, folder)                        -> Promise<void>
//   modelDispose(handle)                               -> Promise<void> (frees the weights)
#include <napi.h>

#include <memory>

#include "async.h"
#include "convert.h"
#include "exports.h"
#include "g2l/models.h"

namespace g2l::addon {

namespace {

using ModelRef = std::shared_ptr<Model>;

// Random, fixed: identifies the Externals this file makes.
constexpr napi_type_tag kModelTag = {0x6a2f0d1c9b3e4f57ULL, 0x8c41a7e2d05b6f93ULL};

std::string optional_string(const Napi::CallbackInfo& info, size_t i, const std::string& what) {
  if (info.Length() <= i || info[i].IsUndefined() || info[i].IsNull()) return "";
  return string_from_js(info[i], what);
}

Napi::Value handle_to_js(Napi::Env env, ModelRef& model) {
  auto ext = Napi::External<ModelRef>::New(env, new ModelRef(model), [](Napi::Env, ModelRef* p) { delete p; });
  ext.TypeTag(&kModelTag);
  return ext;
}

ModelRef handle_from_js(const Napi::Value& v) {
  Napi::Env env = v.Env();
  if (!v.IsExternal() || !v.As<Napi::External<ModelRef>>().CheckTypeTag(&kModelTag)) {
    throw Napi::TypeError::New(env, "expected a model handle from loadModel or createModel");
  }
  return *v.As<Napi::External<ModelRef>>().Data();
}

Napi::Array floats_to_js(Napi::Env env, const std::array<float, 3>& v) {
  Napi::Array a = Napi::Array::New(env, 3);
  for (uint32_t i = 0; i < 3; ++i) a.Set(i, Napi::Number::New(env, v[i]));
  return a;
}

Napi::Object info_to_js(Napi::Env env, const ModelInfo& i) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("family", i.family);
  o.Set("layout", i.layout);
  o.Set("preset", i.preset.empty() ? env.Null() : Napi::String::New(env, i.preset));
  o.Set("folder", i.folder.empty() ? env.Null() : Napi::String::New(env, i.folder));
  o.Set("mlp", i.mlp);
  o.Set("dims", static_cast<double>(i.dims));
  o.Set("width", static_cast<double>(i.width));
  o.Set("pool", i.pool);
  o.Set("depth", static_cast<double>(i.depth));
  o.Set("numHeads", static_cast<double>(i.num_heads));
  o.Set("numRegisters", static_cast<double>(i.num_registers));
  o.Set("patchSize", static_cast<double>(i.patch_size));
  o.Set("inputSize", static_cast<double>(i.input_size));
  o.Set("parameters", static_cast<double>(i.parameters));
  o.Set("mean", floats_to_js(env, i.mean));
  o.Set("std", floats_to_js(env, i.std));
  o.Set("dtype", i.dtype.empty() ? env.Null() : Napi::String::New(env, i.dtype));
  o.Set("device", i.device.empty() ? env.Null() : Napi::String::New(env, i.device));
  return o;
}

Napi::Value LoadModelJs(const Napi::CallbackInfo& info) {
  ModelSpec spec = model_spec_from_js(info[0], "spec");
  std::string device = optional_string(info, 1, "device");
  std::string dtype = optional_string(info, 2, "dtype");
  return run_async<ModelRef>(
      info.Env(), [=] { return Model::load(spec, device.empty() ? "cpu" : device, dtype.empty() ? "fp32" : dtype); },
      handle_to_js);
}

Napi::Value CreateModelJs(const Napi::CallbackInfo& info) {
  ModelSpec spec = model_spec_from_js(info[0], "spec");
  std::string device = optional_string(info, 1, "device");
  std::string dtype = optional_string(info, 2, "dtype");
  double seed = info.Length() > 3 && info[3].IsNumber() ? info[3].As<Napi::Number>().DoubleValue() : 0;
  return run_async<ModelRef>(
      info.Env(),
      [=] {
        return Model::create_random(spec, device.empty() ? "cpu" : device, dtype.empty() ? "fp32" : dtype,
                                    static_cast<uint64_t>(seed));
      },
      handle_to_js);
}

Napi::Value DescribeModelJs(const Napi::CallbackInfo& info) {
  ModelSpec spec = model_spec_from_js(info[0], "spec");
  return run_async<ModelInfo>(
      info.Env(), [=] { return Model::describe(spec); },
      [](Napi::Env env, ModelInfo& i) -> Napi::Value { return info_to_js(env, i); });
}

Napi::Value ModelInfoJs(const Napi::CallbackInfo& info) {
  return info_to_js(info.Env(), handle_from_js(info[0])->info());
}

Napi::Value ModelEmbedJs(const Napi::CallbackInfo& info) {
  ModelRef model = handle_from_js(info[0]);
  HostTensor images = tensor_from_js(info[1], "images");
  return run_async<HostTensor>(
      info.Env(), [=] { return model->embed(images); },
      [](Napi::Env env, HostTensor& out) -> Napi::Value { return tensor_to_js(env, out); }, {info[1]});
}

Napi::Value ModelExportJs(const Napi::CallbackInfo& info) {
  ModelRef model = handle_from_js(info[0]);
  std::string folder = string_from_js(info[1], "folder");
  return run_async<bool>(
      info.Env(),
      [=] {
        model->export_to(folder);
        return true;
      },
      [](Napi::Env env, bool&) -> Napi::Value { return env.Undefined(); });
}

Napi::Value ModelDisposeJs(const Napi::CallbackInfo& info) {
  ModelRef model = handle_from_js(info[0]);
  // Off the JS thread: release waits for a forward pass in flight.
  return run_async<bool>(
      info.Env(),
      [=] {
        model->release();
        return true;
      },
      [](Napi::Env env, bool&) -> Napi::Value { return env.Undefined(); });
}

}  // namespace

void register_models(Napi::Env env, Napi::Object exports) {
  exports.Set("loadModel", Napi::Function::New(env, LoadModelJs, "loadModel"));
  exports.Set("createModel", Napi::Function::New(env, CreateModelJs, "createModel"));
  exports.Set("describeModel", Napi::Function::New(env, DescribeModelJs, "describeModel"));
  exports.Set("modelInfo", Napi::Function::New(env, ModelInfoJs, "modelInfo"));
  exports.Set("modelEmbed", Napi::Function::New(env, ModelEmbedJs, "modelEmbed"));
  exports.Set("modelExport", Napi::Function::New(env, ModelExportJs, "modelExport"));
  exports.Set("modelDispose", Napi::Function::New(env, ModelDisposeJs, "modelDispose"));
}

}  // namespace g2l::addon
