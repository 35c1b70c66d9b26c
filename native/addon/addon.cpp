// N-API module of the g2l engine. It only converts arguments and schedules engine calls on worker threads;
// all computation lives in native/engine.
#include <napi.h>

#include "async.h"
#include "convert.h"
#include "exports.h"
#include "g2l/engine.h"

namespace g2l::addon {

static Napi::Value RuntimeInfoJs(const Napi::CallbackInfo& info) {
  return run_async<RuntimeInfo>(
      info.Env(), [] { return runtime_info(); },
      [](Napi::Env env, RuntimeInfo& r) -> Napi::Value {
        Napi::Object o = Napi::Object::New(env);
        o.Set("engineVersion", r.engine_version);
        o.Set("libtorchVersion", r.libtorch_version);
        o.Set("cudaBuilt", r.cuda_built);
        Napi::Array archs = Napi::Array::New(env, r.cuda_architectures.size());
        for (size_t i = 0; i < r.cuda_architectures.size(); ++i)
          archs.Set(static_cast<uint32_t>(i), r.cuda_architectures[i]);
        o.Set("cudaArchitectures", archs);
        o.Set("cudaAvailable", r.cuda_available);
        o.Set("cudaRuntimeVersion", r.cuda_runtime_version);
        Napi::Array devices = Napi::Array::New(env, r.devices.size());
        for (size_t i = 0; i < r.devices.size(); ++i) {
          const DeviceInfo& d = r.devices[i];
          Napi::Object dev = Napi::Object::New(env);
          dev.Set("index", d.index);
          dev.Set("name", d.name);
          dev.Set("computeCapability", std::to_string(d.major) + "." + std::to_string(d.minor));
          dev.Set("totalMemoryBytes", static_cast<double>(d.total_memory_bytes));
          devices.Set(static_cast<uint32_t>(i), dev);
        }
        o.Set("devices", devices);
        o.Set("cpuThreads", r.cpu_threads);
        o.Set("parallelInfo", r.parallel_info);
        return o;
      });
}

// normalizeImages({data: Uint8Array, shape: [N,H,W,3]}, mean[3], std[3], device) -> Promise<{data: Float32Array, shape:
// [N,3,H,W]}>
static Napi::Value NormalizeImagesJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  HostTensor images = tensor_from_js(info[0], "images");
  std::array<float, 3> mean = float3_from_js(info[1], "mean");
  std::array<float, 3> stdev = float3_from_js(info[2], "std");
  std::string device = info.Length() > 3 && !info[3].IsUndefined() ? string_from_js(info[3], "device") : "cpu";
  return run_async<HostTensor>(
      env, [=] { return normalize_images(images, mean, stdev, device); },
      [](Napi::Env e, HostTensor& out) -> Napi::Value { return tensor_to_js(e, out); }, {info[0]});
}

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("runtimeInfo", Napi::Function::New(env, RuntimeInfoJs, "runtimeInfo"));
  exports.Set("normalizeImages", Napi::Function::New(env, NormalizeImagesJs, "normalizeImages"));
  exports.Set("exitIfBusy", Napi::Function::New(env, ExitIfBusy, "exitIfBusy"));
  // Each area of the engine adds its functions here (see exports.h).
  register_models(env, exports);
  register_distill(env, exports);
  register_augment(env, exports);
  register_mil(env, exports);
  register_eval(env, exports);
  return exports;
}

}  // namespace g2l::addon

static Napi::Object InitModule(Napi::Env env, Napi::Object exports) { return g2l::addon::Init(env, exports); }

NODE_API_MODULE(g2l_engine, InitModule)
