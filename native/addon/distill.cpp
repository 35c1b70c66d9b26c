// Distillation in the addon: the log-sum loss, the optimiser reference run, and the Distiller object. Converts
// arguments and schedules the engine calls on worker threads; nothing is computed here.
#include <napi.h>

#include <cmath>
#include <memory>
#include <mutex>

#include "async.h"
#include "convert.h"
#include "dist.h"
#include "exports.h"
#include "g2l/distill.h"

namespace g2l::addon {

// ---------------------------------------------------------------------------------------------------------------
// Option readers: a missing or undefined key keeps the engine's default; a wrong type is a TypeError naming it.
// ---------------------------------------------------------------------------------------------------------------

static Napi::Object object_arg(const Napi::Value& v, const std::string& what) {
  if (v.IsUndefined()) return Napi::Object::New(v.Env());
  if (!v.IsObject()) throw Napi::TypeError::New(v.Env(), what + " must be an object");
  return v.As<Napi::Object>();
}

static LossOptions loss_options_from_js(const Napi::Object& o) {
  LossOptions opts;
  read_number(o, "alpha", opts.alpha, "loss");
  read_string(o, "reduction", opts.reduction, "loss");
  read_number(o, "bnEps", opts.bn_eps, "loss");
  read_bool(o, "teacherBn", opts.teacher_bn, "loss");
  read_string(o, "sync", opts.sync, "loss");
  return opts;
}

static OptimizerConfig optimizer_config_from_js(const Napi::Object& o) {
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
static KernelOptions kernel_options_from_js(const Napi::Object& o) {
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

static Napi::Object kernel_options_to_js(Napi::Env env, const KernelOptions& k) {
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

static std::vector<std::string> strings_from_js(const Napi::Value& v, const std::string& what) {
  if (!v.IsArray()) throw Napi::TypeError::New(v.Env(), what + " must be an array of strings");
  Napi::Array a = v.As<Napi::Array>();
  std::vector<std::string> out;
  for (uint32_t i = 0; i < a.Length(); ++i)
    out.push_back(string_from_js(a.Get(i), what + "[" + std::to_string(i) + "]"));
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// logSumLoss(zs, zt, W, b, options, device) -> Promise<{ loss, grads: { zs, W, b } }>
// ---------------------------------------------------------------------------------------------------------------

static Napi::Value LogSumLossJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  HostTensor zs = tensor_from_js(info[0], "zs");
  HostTensor zt = tensor_from_js(info[1], "zt");
  HostTensor w = tensor_from_js(info[2], "W");
  HostTensor b = tensor_from_js(info[3], "b");
  LossOptions opts = loss_options_from_js(object_arg(info[4], "options"));
  std::string device = info.Length() > 5 && !info[5].IsUndefined() ? string_from_js(info[5], "device") : "cpu";
  return run_async<LossResult>(
      env, [=] { return log_sum_loss_with_grads(zs, zt, w, b, opts, device); },
      [](Napi::Env e, LossResult& r) -> Napi::Value {
        Napi::Object grads = Napi::Object::New(e);
        grads.Set("zs", tensor_to_js(e, r.grad_student));
        grads.Set("W", tensor_to_js(e, r.grad_weight));
        grads.Set("b", tensor_to_js(e, r.grad_bias));
        Napi::Object out = Napi::Object::New(e);
        out.Set("loss", r.loss);
        out.Set("grads", grads);
        return out;
      },
      {info[0], info[1], info[2], info[3]});
}

// ---------------------------------------------------------------------------------------------------------------
// runOptimizer(names, params, gradsPerStep, config) -> Promise<{ params: Tensor[][], lr[], weightDecay[], gradNorm[] }>
// config: OptimizerConfig's keys plus fusedAdamw ("auto" | "on" | "off", KernelOptions::fused_adamw).
// ---------------------------------------------------------------------------------------------------------------

static Napi::Value RunOptimizerJs(const Napi::CallbackInfo& info) {
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
// Distiller.create(config) -> Promise<{ step, features, save, load, exportStudent, info }>
// ---------------------------------------------------------------------------------------------------------------

static DistillerConfig distiller_config_from_js(const Napi::Object& o) {
  DistillerConfig c;
  c.teacher = model_spec_from_js(o.Get("teacher"), "config.teacher");
  c.student = model_spec_from_js(o.Get("student"), "config.student");
  read_string(o, "device", c.device, "config");
  int64_t seed = 0;
  read_int(o, "seed", seed, "config");
  if (seed < 0) throw Napi::RangeError::New(o.Env(), "config.seed must be a non-negative integer");
  c.seed = static_cast<uint64_t>(seed);
  read_string(o, "teacherDtype", c.teacher_dtype, "config");
  read_bool(o, "autocast", c.autocast, "config");
  read_bool(o, "teacherFp8", c.teacher_fp8, "config");
  if (has_field(o, "teacherFp8Layers"))
    c.teacher_fp8_layers = strings_from_js(o.Get("teacherFp8Layers"), "config.teacherFp8Layers");
  read_bool(o, "teacherFp8Emulate", c.teacher_fp8_emulate, "config");  // a test hook (g2l/distill.h)
  if (has_field(o, "kernels")) c.kernels = kernel_options_from_js(object_arg(o.Get("kernels"), "config.kernels"));
  read_int(o, "accumulationSteps", c.accumulation_steps, "config");

  if (has_field(o, "loss")) c.loss = loss_options_from_js(object_arg(o.Get("loss"), "config.loss"));
  if (has_field(o, "optimizer"))
    c.optimizer = optimizer_config_from_js(object_arg(o.Get("optimizer"), "config.optimizer"));
  if (has_field(o, "augment"))
    c.augment = augment_config_from_js(object_arg(o.Get("augment"), "config.augment"), "augment");
  return c;
}

namespace {

// One engine Distiller shared by the closures of its JS object; calls are serialised (a step and a save never
// overlap even when JS does not wait between them).
struct DistillerHandle {
  std::unique_ptr<Distiller> engine;
  std::mutex busy;
};
using Handle = std::shared_ptr<DistillerHandle>;

Napi::Value float_array(Napi::Env env, const std::vector<float>& v) {
  Napi::Array a = Napi::Array::New(env, v.size());
  for (uint32_t i = 0; i < v.size(); ++i) a.Set(i, v[i]);
  return a;
}

Napi::Object info_to_js(Napi::Env env, const DistillerInfo& i, int64_t step) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("studentDim", static_cast<double>(i.student_dim));
  o.Set("teacherDim", static_cast<double>(i.teacher_dim));
  o.Set("studentParams", static_cast<double>(i.student_params));
  o.Set("teacherParams", static_cast<double>(i.teacher_params));
  o.Set("device", i.device);
  o.Set("teacherModel", i.teacher_model);
  o.Set("studentModel", i.student_model);
  Napi::Object drop = Napi::Object::New(env);
  for (const auto& [key, v] : i.student_drop) {
    // engine names -> run config names (studentDrop)
    const std::string name = key == "drop_path"     ? "dropPath"
                             : key == "attn_drop"   ? "attnDrop"
                             : key == "proj_drop"   ? "projDrop"
                             : key == "pos_drop"    ? "posDrop"
                             : key == "head_drop"   ? "headDrop"
                             : key == "hidden_drop" ? "hiddenDrop"
                                                    : key;
    drop.Set(name, v);
  }
  o.Set("studentDrop", drop);
  o.Set("teacherMean", float_array(env, i.teacher_mean));
  o.Set("teacherStd", float_array(env, i.teacher_std));
  o.Set("studentMean", float_array(env, i.student_mean));
  o.Set("studentStd", float_array(env, i.student_std));
  o.Set("teacherLayerScales", static_cast<double>(i.teacher_layer_scales));
  o.Set("teacherLayerScalesFolded", static_cast<double>(i.teacher_layer_scales_folded));
  o.Set("teacherFp8", i.teacher_fp8);
  o.Set("teacherFp8Layers", static_cast<double>(i.teacher_fp8_layers));
  o.Set("teacherLinearLayers", static_cast<double>(i.teacher_linear_layers));
  o.Set("teacherFp8Emulated", i.teacher_fp8_emulated);
  // FP8 on: null until the first teacher batch ran the acceptance check, then its smallest cosine. FP8 off: absent.
  if (i.teacher_fp8) {
    if (std::isnan(i.teacher_fp8_min_cosine)) {
      o.Set("teacherFp8MinCosine", env.Null());
    } else {
      o.Set("teacherFp8MinCosine", i.teacher_fp8_min_cosine);
    }
  }
  o.Set("fusedSwiglu", i.fused_swiglu);
  o.Set("fusedNorm", i.fused_norm);
  o.Set("packedQkv", i.packed_qkv);
  o.Set("sdpa", i.sdpa);
  // The SDPA backend of each model's last attention; null before its first forward.
  const auto backend = [&](const std::string& b) -> Napi::Value {
    return b.empty() ? env.Null() : Napi::String::New(env, b);
  };
  o.Set("teacherAttention", backend(i.teacher_attention));
  o.Set("studentAttention", backend(i.student_attention));
  o.Set("step", static_cast<double>(step));
  return o;
}

Napi::Value resolve_undefined(Napi::Env env, int&) { return env.Undefined(); }

Napi::Object distiller_to_js(Napi::Env env, Handle h) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("step", Napi::Function::New(env, [h](const Napi::CallbackInfo& info) -> Napi::Value {
          HostTensor tiles = tensor_from_js(info[0], "tiles");
          bool stop = false;
          if (info.Length() > 1 && !info[1].IsUndefined()) {
            Napi::Object o = object_arg(info[1], "options");
            if (o.Has("stop")) stop = o.Get("stop").ToBoolean().Value();
          }
          return run_async<StepResult>(
              info.Env(),
              [h, tiles, stop] {
                std::lock_guard<std::mutex> lock(h->busy);
                return h->engine->step(tiles, stop);
              },
              [](Napi::Env e, StepResult& r) -> Napi::Value {
                Napi::Object out = Napi::Object::New(e);
                out.Set("step", static_cast<double>(r.step));
                out.Set("loss", r.loss);
                out.Set("lr", r.lr);
                out.Set("weightDecay", r.weight_decay);
                out.Set("gradNorm", r.grad_norm);
                out.Set("deviceMemoryBytes", static_cast<double>(r.device_memory_bytes));
                out.Set("stop", r.stop);
                return out;
              },
              {info[0]});
        }));
  o.Set("features", Napi::Function::New(env, [h](const Napi::CallbackInfo& info) -> Napi::Value {
          HostTensor tiles = tensor_from_js(info[0], "tiles");
          std::string which = string_from_js(info[1], "which");
          if (which != "student" && which != "teacher") {
            throw Napi::TypeError::New(info.Env(), "features: which must be 'student' or 'teacher'");
          }
          const bool teacher = which == "teacher";
          return run_async<HostTensor>(
              info.Env(),
              [h, tiles, teacher] {
                std::lock_guard<std::mutex> lock(h->busy);
                return h->engine->features(tiles, teacher);
              },
              [](Napi::Env e, HostTensor& t) -> Napi::Value { return tensor_to_js(e, t); }, {info[0]});
        }));
  auto folder_op = [h](const char* name, void (Distiller::*op)(const std::string&)) {
    return [h, name, op](const Napi::CallbackInfo& info) -> Napi::Value {
      std::string folder = string_from_js(info[0], std::string(name) + ": folder");
      return run_async<int>(
          info.Env(),
          [h, folder, op] {
            std::lock_guard<std::mutex> lock(h->busy);
            ((*h->engine).*op)(folder);
            return 0;
          },
          resolve_undefined);
    };
  };
  o.Set("save", Napi::Function::New(env, folder_op("save", &Distiller::save)));
  o.Set("load", Napi::Function::New(env, folder_op("load", &Distiller::load)));
  o.Set("exportStudent", Napi::Function::New(env, folder_op("exportStudent", &Distiller::export_student)));
  o.Set("info", Napi::Function::New(env, [h](const Napi::CallbackInfo& info) -> Napi::Value {
          std::lock_guard<std::mutex> lock(h->busy);
          return info_to_js(info.Env(), h->engine->info(), h->engine->steps_taken());
        }));
  return o;
}

}  // namespace

static Napi::Value CreateDistillerJs(const Napi::CallbackInfo& info) {
  DistillerConfig config = distiller_config_from_js(object_arg(info[0], "config"));
  // Data parallelism (issue 7): `dist` joins the process group on the worker thread (the rendezvous blocks).
  std::shared_ptr<DistConfig> dist;
  Napi::Object o = object_arg(info[0], "config");
  if (has_field(o, "dist"))
    dist = std::make_shared<DistConfig>(dist_config_from_js(object_arg(o.Get("dist"), "config.dist"), config.device));
  return run_async<Handle>(
      info.Env(),
      [config, dist]() mutable {
        if (dist) config.dist = init_distributed(*dist);  // a world of one too: the real path, for checks
        auto h = std::make_shared<DistillerHandle>();
        h->engine = Distiller::create(config);
        return h;
      },
      [](Napi::Env e, Handle& h) -> Napi::Value { return distiller_to_js(e, h); });
}

// ---------------------------------------------------------------------------------------------------------------
// FP8 numerics entries (g2l/distill.h; tests and the GPU check of issue 8):
//   fp8QuantizeRows(x, { device, mode }) -> Promise<{ codes: uint8 (M,K), scales: (M), dequantized: (M,K) }>
//   fp8Linear(x, weight, bias, { device, emulate, fastAccum }) -> Promise<Tensor (M,N)>
//   fusedNormCheck({ device, rows, d, dtype, seed }) -> Promise<{ [name]: number }> (g2l/distill.h fused_norm_check)
// ---------------------------------------------------------------------------------------------------------------

static Napi::Value Fp8QuantizeRowsJs(const Napi::CallbackInfo& info) {
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

static Napi::Value FusedNormCheckJs(const Napi::CallbackInfo& info) {
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

static Napi::Value Fp8LinearJs(const Napi::CallbackInfo& info) {
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

void register_distill(Napi::Env env, Napi::Object exports) {
  exports.Set("methodDefaults", Napi::Function::New(env, MethodDefaultsJs, "methodDefaults"));
  exports.Set("fp8QuantizeRows", Napi::Function::New(env, Fp8QuantizeRowsJs, "fp8QuantizeRows"));
  exports.Set("fp8Linear", Napi::Function::New(env, Fp8LinearJs, "fp8Linear"));
  exports.Set("fusedNormCheck", Napi::Function::New(env, FusedNormCheckJs, "fusedNormCheck"));
  exports.Set("logSumLoss", Napi::Function::New(env, LogSumLossJs, "logSumLoss"));
  exports.Set("runOptimizer", Napi::Function::New(env, RunOptimizerJs, "runOptimizer"));
  Napi::Object distiller = Napi::Object::New(env);
  distiller.Set("create", Napi::Function::New(env, CreateDistillerJs, "create"));
  exports.Set("Distiller", distiller);
}

}  // namespace g2l::addon
