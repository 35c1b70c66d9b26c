// g2l_engine_testing.node: the engine's test and measurement entries (g2l/testing.h) for the tests and benchmarks,
// apart from the production addon (addon.cpp), which exports none of them. Loaded by test/helpers/engine-testing.ts
// and benchmarks/lib/common.mjs (loadEngineTesting) from beside the production addon; built with G2L_TESTING (on in a
// repository set-up, off in an installed package). Converts and schedules like the other addon files.
//
//   methodDefaults()                                       the engine's own defaults (test/distill/defaults.test.ts)
//   embedTrain(spec, images, seed, drop)                   a training-mode forward of the model `spec` loads (fp32)
//   runOptimizer(names, params, gradsPerStep, config)      the engine's AdamW on given gradients
//   fp8QuantizeRows(x, opts), fp8Linear(x, w, b, opts)     the teacher's FP8 products
//   fusedNormCheck(opts)                                   fused norm kernels against the ops they replace
//   evalMatmulRate(m, n, k, device, reps)                  one large f32 product's rate (benchmarks/eval.mjs)
//   distAllReduceTiming(dist, bytes, repeats)              one all-reduce's cost in a world (test/parallel)
#include <napi.h>

#include <memory>

#include "async.h"
#include "convert.h"
#include "dist.h"
#include "g2l/testing.h"

namespace g2l::addon {

namespace {

// The engine's own defaults (g2l/distill.h, g2l/augment.h), for C++ callers. lib/ passes every value resolved from
// lib/defaults.ts; test/distill/defaults.test.ts holds these equal to it. Plain struct reads: no work to schedule.
Napi::Value MethodDefaultsJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const OptimizerConfig opt;
  const LossOptions loss;
  const AugmentConfig aug;
  Napi::Object o = Napi::Object::New(env);
  Napi::Object jo = Napi::Object::New(env);
  jo.Set("lr", opt.lr);
  jo.Set("finalLr", opt.final_lr);
  jo.Set("weightDecay", opt.weight_decay);
  jo.Set("finalWeightDecay", opt.final_weight_decay);
  jo.Set("warmupSteps", static_cast<double>(opt.warmup_steps));
  jo.Set("beta1", opt.beta1);
  jo.Set("beta2", opt.beta2);
  jo.Set("eps", opt.eps);
  jo.Set("clipGradNorm", opt.clip_grad_norm);
  o.Set("optimizer", jo);
  Napi::Object jl = Napi::Object::New(env);
  jl.Set("alpha", loss.alpha);
  jl.Set("reduction", loss.reduction);
  jl.Set("bnEps", loss.bn_eps);
  jl.Set("teacherBn", loss.teacher_bn);
  jl.Set("sync", loss.sync);
  o.Set("loss", jl);
  Napi::Object ja = Napi::Object::New(env);
  ja.Set("enabled", aug.enabled);
  ja.Set("crop", static_cast<double>(aug.crop));
  ja.Set("pHflip", aug.p_hflip);
  ja.Set("pVflip", aug.p_vflip);
  ja.Set("pJitter", aug.p_jitter);
  ja.Set("brightness", aug.brightness);
  ja.Set("contrast", aug.contrast);
  ja.Set("saturation", aug.saturation);
  ja.Set("hue", aug.hue);
  ja.Set("pBlur", aug.p_blur);
  ja.Set("blurKernel", static_cast<double>(aug.blur_kernel));
  ja.Set("blurSigmaMin", aug.blur_sigma_min);
  ja.Set("blurSigmaMax", aug.blur_sigma_max);
  o.Set("augment", ja);
  const DistillerConfig dc;
  o.Set("kernels", kernel_options_to_js(env, dc.kernels));
  Napi::Array layers = Napi::Array::New(env, dc.teacher_fp8_layers.size());
  for (uint32_t i = 0; i < dc.teacher_fp8_layers.size(); ++i) layers.Set(i, dc.teacher_fp8_layers[i]);
  o.Set("teacherFp8Layers", layers);
  return o;
}

// embedTrain(spec, images float32 (N,3,H,W), seed, drop { dropPath, attnDrop, ... }) -> (N,D): the model of `spec`
// loaded on the CPU in float32, one training-mode forward at the rates given (resolved in lib/models/spec.ts).
Napi::Value EmbedTrainJs(const Napi::CallbackInfo& info) {
  ModelSpec spec = model_spec_from_js(info[0], "spec");
  HostTensor images = tensor_from_js(info[1], "images");
  const double seed = info.Length() > 2 && info[2].IsNumber() ? info[2].As<Napi::Number>().DoubleValue() : 0;
  if (!(seed >= 0)) throw Napi::RangeError::New(info.Env(), "embedTrain: seed must be a non-negative number");
  if (info.Length() <= 3 || !info[3].IsObject()) {
    throw Napi::TypeError::New(info.Env(), "embedTrain: drop must be the resolved rates { dropPath, attnDrop, ... }");
  }
  const Regularization drop = regularization_from_js(info[3].As<Napi::Object>(), "drop");
  return run_async<HostTensor>(
      info.Env(),
      [=] {
        std::shared_ptr<Model> model = Model::load(spec, "cpu", "fp32");
        return embed_train(*model, images, static_cast<uint64_t>(seed), drop);
      },
      [](Napi::Env env, HostTensor& out) -> Napi::Value { return tensor_to_js(env, out); }, {info[1]});
}

// ---------------------------------------------------------------------------------------------------------------
// runOptimizer(names, params, gradsPerStep, config) -> Promise<{ params: Tensor[][], lr[], weightDecay[], gradNorm[] }>
// config: OptimizerConfig's keys plus fusedAdamw ("auto" | "on" | "off", KernelOptions::fused_adamw).
// ---------------------------------------------------------------------------------------------------------------

Napi::Value RunOptimizerJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsArray() || !info[1].IsArray() || !info[2].IsArray()) {
    throw Napi::TypeError::New(env,
                               "runOptimizer(names, params, gradsPerStep, config): the first three must be arrays");
  }
  Napi::Array names_js = info[0].As<Napi::Array>(), params_js = info[1].As<Napi::Array>();
  Napi::Array grads_js = info[2].As<Napi::Array>();
  std::vector<std::string> names;
  std::vector<HostTensor> params;
  for (uint32_t i = 0; i < names_js.Length(); ++i) names.push_back(string_from_js(names_js.Get(i), "names[i]"));
  for (uint32_t i = 0; i < params_js.Length(); ++i) params.push_back(tensor_from_js(params_js.Get(i), "params[i]"));
  std::vector<std::vector<HostTensor>> grads;
  for (uint32_t s = 0; s < grads_js.Length(); ++s) {
    Napi::Value row = grads_js.Get(s);
    if (!row.IsArray()) throw Napi::TypeError::New(env, "gradsPerStep[s] must be an array of tensors");
    std::vector<HostTensor> g;
    for (uint32_t i = 0; i < row.As<Napi::Array>().Length(); ++i) {
      g.push_back(tensor_from_js(row.As<Napi::Array>().Get(i), "gradsPerStep[s][i]"));
    }
    grads.push_back(std::move(g));
  }
  Napi::Object config_js = object_arg(info[3], "config");
  OptimizerConfig config = optimizer_config_from_js(config_js);
  std::string fused_adamw = "auto";
  read_string(config_js, "fusedAdamw", fused_adamw, "config");
  return run_async<OptimizerTrace>(
      env, [=] { return run_optimizer(names, params, grads, config, fused_adamw); },
      [](Napi::Env e, OptimizerTrace& t) -> Napi::Value {
        Napi::Array steps = Napi::Array::New(e, t.params.size());
        Napi::Array lr = Napi::Array::New(e, t.params.size());
        Napi::Array wd = Napi::Array::New(e, t.params.size());
        Napi::Array norm = Napi::Array::New(e, t.params.size());
        for (uint32_t s = 0; s < t.params.size(); ++s) {
          Napi::Array ps = Napi::Array::New(e, t.params[s].size());
          for (uint32_t i = 0; i < t.params[s].size(); ++i) ps.Set(i, tensor_to_js(e, t.params[s][i]));
          steps.Set(s, ps);
          lr.Set(s, t.schedule[s].lr);
          wd.Set(s, t.schedule[s].weight_decay);
          norm.Set(s, t.grad_norm[s]);
        }
        Napi::Object out = Napi::Object::New(e);
        out.Set("params", steps);
        out.Set("lr", lr);
        out.Set("weightDecay", wd);
        out.Set("gradNorm", norm);
        return out;
      },
      {info[1], info[2]});
}

// ---------------------------------------------------------------------------------------------------------------
// FP8 numerics and the fused norm kernels (g2l/testing.h):
//   fp8QuantizeRows(x, { device, mode }) -> Promise<{ codes: uint8 (M,K), scales: (M), dequantized: (M,K) }>
//   fp8Linear(x, weight, bias, { device, emulate, fastAccum }) -> Promise<Tensor (M,N)>
//   fusedNormCheck({ device, rows, d, dtype, seed }) -> Promise<{ [name]: number }>
// ---------------------------------------------------------------------------------------------------------------

Napi::Value Fp8QuantizeRowsJs(const Napi::CallbackInfo& info) {
  HostTensor x = tensor_from_js(info[0], "x");
  Napi::Object o = object_arg(info[1], "options");
  std::string device = "cpu", mode = "auto";
  read_string(o, "device", device, "options");
  read_string(o, "mode", mode, "options");
  return run_async<Fp8QuantResult>(
      info.Env(), [=] { return fp8_quantize_rows(x, device, mode); },
      [](Napi::Env e, Fp8QuantResult& r) -> Napi::Value {
        Napi::Object out = Napi::Object::New(e);
        out.Set("codes", tensor_to_js(e, r.codes));
        out.Set("scales", tensor_to_js(e, r.scales));
        out.Set("dequantized", tensor_to_js(e, r.dequantized));
        return out;
      },
      {info[0]});
}

Napi::Value FusedNormCheckJs(const Napi::CallbackInfo& info) {
  Napi::Object o = object_arg(info[0], "options");
  std::string device = "cpu", dtype = "bfloat16";
  read_string(o, "device", device, "options");
  read_string(o, "dtype", dtype, "options");
  int64_t rows = 257, d = 64, seed = 0;
  read_int(o, "rows", rows, "options");
  read_int(o, "d", d, "options");
  read_int(o, "seed", seed, "options");
  using Pairs = std::vector<std::pair<std::string, double>>;
  return run_async<Pairs>(
      info.Env(), [=] { return fused_norm_check(device, rows, d, dtype, static_cast<uint64_t>(seed)); },
      [](Napi::Env e, Pairs& r) -> Napi::Value {
        Napi::Object out = Napi::Object::New(e);
        for (const auto& [name, value] : r) out.Set(name, value);
        return out;
      });
}

Napi::Value Fp8LinearJs(const Napi::CallbackInfo& info) {
  HostTensor x = tensor_from_js(info[0], "x");
  HostTensor w = tensor_from_js(info[1], "weight");
  HostTensor b = tensor_from_js(info[2], "bias");
  Napi::Object o = object_arg(info[3], "options");
  std::string device = "cpu";
  bool emulate = false, fast_accum = false;
  read_string(o, "device", device, "options");
  read_bool(o, "emulate", emulate, "options");
  read_bool(o, "fastAccum", fast_accum, "options");
  return run_async<HostTensor>(
      info.Env(), [=] { return fp8_linear(x, w, b, device, emulate, fast_accum); },
      [](Napi::Env e, HostTensor& t) -> Napi::Value { return tensor_to_js(e, t); }, {info[0], info[1], info[2]});
}

// evalMatmulRate(m, n, k, device, reps) -> Promise<number>: multiply-adds per second (g2l/testing.h matmul_rate)
Napi::Value MatmulRate(const Napi::CallbackInfo& info) {
  const int64_t m = int_arg(info, 0, "m"), n = int_arg(info, 1, "n"), k = int_arg(info, 2, "k");
  const std::string device = device_at(info, 3);
  const int64_t reps = info.Length() > 4 && !info[4].IsUndefined() ? int_arg(info, 4, "reps") : 3;
  return run_async<double>(
      info.Env(), [=] { return matmul_rate(m, n, k, device, reps); },
      [](Napi::Env e, double& r) -> Napi::Value { return Napi::Number::New(e, r); });
}

// distAllReduceTiming(dist: {...; device}, bytes, repeats) -> Promise<{ bytes, medianMs, busGbps, backend, worldSize }>
Napi::Value DistAllReduceTimingJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsObject()) throw Napi::TypeError::New(env, "distAllReduceTiming: the first argument must be an object");
  Napi::Object o = info[0].As<Napi::Object>();
  std::string device = "cpu";
  read_string(o, "device", device, "dist");
  DistConfig config = dist_config_from_js(o, device);
  const int64_t bytes = info[1].IsNumber() ? info[1].As<Napi::Number>().Int64Value() : 0;
  const int repeats = info[2].IsNumber() ? info[2].As<Napi::Number>().Int32Value() : 0;
  struct Out {
    AllReduceTiming timing;
    DistInfo info;
  };
  return run_async<Out>(
      env,
      [config, bytes, repeats] {
        std::shared_ptr<DistContext> ctx = init_distributed(config);
        Out out;
        out.timing = time_all_reduce(*ctx, bytes, repeats);
        out.info = dist_info(*ctx);
        return out;
      },
      [](Napi::Env e, Out& out) -> Napi::Value {
        Napi::Object r = Napi::Object::New(e);
        r.Set("bytes", static_cast<double>(out.timing.bytes));
        r.Set("medianMs", out.timing.median_ms);
        r.Set("busGbps", out.timing.bus_gbps);
        r.Set("backend", out.info.backend);
        r.Set("worldSize", out.info.world_size);
        r.Set("device", out.info.device);
        return r;
      });
}

}  // namespace

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("methodDefaults", Napi::Function::New(env, MethodDefaultsJs, "methodDefaults"));
  exports.Set("embedTrain", Napi::Function::New(env, EmbedTrainJs, "embedTrain"));
  exports.Set("runOptimizer", Napi::Function::New(env, RunOptimizerJs, "runOptimizer"));
  exports.Set("fp8QuantizeRows", Napi::Function::New(env, Fp8QuantizeRowsJs, "fp8QuantizeRows"));
  exports.Set("fp8Linear", Napi::Function::New(env, Fp8LinearJs, "fp8Linear"));
  exports.Set("fusedNormCheck", Napi::Function::New(env, FusedNormCheckJs, "fusedNormCheck"));
  exports.Set("evalMatmulRate", Napi::Function::New(env, MatmulRate, "evalMatmulRate"));
  exports.Set("distAllReduceTiming", Napi::Function::New(env, DistAllReduceTimingJs, "distAllReduceTiming"));
  return exports;
}

}  // namespace g2l::addon

static Napi::Object InitModule(Napi::Env env, Napi::Object exports) { return g2l::addon::Init(env, exports); }

NODE_API_MODULE(g2l_engine_testing, InitModule)
