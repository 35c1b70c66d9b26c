// Distillation in the addon: the log-sum loss and the Distiller object. Converts
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

void register_distill(Napi::Env env, Napi::Object exports) {
  exports.Set("logSumLoss", Napi::Function::New(env, LogSumLossJs, "logSumLoss"));
  Napi::Object distiller = Napi::Object::New(env);
  distiller.Set("create", Napi::Function::New(env, CreateDistillerJs, "create"));
  exports.Set("Distiller", distiller);
}

}  // namespace g2l::addon
