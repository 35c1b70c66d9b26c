// ABMIL (g2l/mil.h) for JavaScript: conversions only, the work on the threadpool.
//
//   abmilTrain(init, train, val, plan, device) -> Promise<{ params, trainLoss, valLoss, bestEpoch, epochsRun }>
//   abmilPredict(params, bags, device)         -> Promise<{ data, shape }>   (B, K) probabilities
//   abmilLoss(params, bags, device)            -> Promise<{ loss, grads }>
// params: { name: { data, shape } }; bags: { features: { data, shape }, offsets: number[], labels?: number[] };
// plan: { epochs: number[][][], lr: number[], weightDecay, patience }.
#include <napi.h>

#include "async.h"
#include "convert.h"
#include "exports.h"
#include "g2l/mil.h"

namespace g2l::addon {

namespace {

std::vector<int64_t> ints_from_js(const Napi::Value& v, const std::string& what) {
  if (!v.IsArray()) throw Napi::TypeError::New(v.Env(), what + " must be an array of integers");
  Napi::Array a = v.As<Napi::Array>();
  std::vector<int64_t> out;
  out.reserve(a.Length());
  for (uint32_t i = 0; i < a.Length(); ++i) {
    Napi::Value x = a.Get(i);
    double d = x.IsNumber() ? x.As<Napi::Number>().DoubleValue() : -1.5;
    if (d != static_cast<double>(static_cast<int64_t>(d)))
      throw Napi::TypeError::New(v.Env(), what + " must hold integers");
    out.push_back(static_cast<int64_t>(d));
  }
  return out;
}

MilParams params_from_js(const Napi::Value& v, const std::string& what) {
  if (!v.IsObject()) throw Napi::TypeError::New(v.Env(), what + " must be an object of tensors");
  Napi::Object o = v.As<Napi::Object>();
  MilParams out;
  Napi::Array keys = o.GetPropertyNames();
  for (uint32_t i = 0; i < keys.Length(); ++i) {
    std::string k = keys.Get(i).As<Napi::String>().Utf8Value();
    out[k] = tensor_from_js(o.Get(k), what + "." + k);
  }
  return out;
}

Napi::Object params_to_js(Napi::Env env, MilParams& p) {
  Napi::Object o = Napi::Object::New(env);
  for (auto& [k, t] : p) o.Set(k, tensor_to_js(env, t));
  return o;
}

Bags bags_from_js(const Napi::Value& v, const std::string& what) {
  if (!v.IsObject()) throw Napi::TypeError::New(v.Env(), what + " must be { features, offsets, labels? }");
  Napi::Object o = v.As<Napi::Object>();
  Bags b;
  b.features = tensor_from_js(o.Get("features"), what + ".features");
  b.offsets = ints_from_js(o.Get("offsets"), what + ".offsets");
  if (o.Has("labels") && !o.Get("labels").IsUndefined()) b.labels = ints_from_js(o.Get("labels"), what + ".labels");
  return b;
}

MilTrainPlan plan_from_js(const Napi::Value& v) {
  Napi::Env env = v.Env();
  if (!v.IsObject()) throw Napi::TypeError::New(env, "plan must be { epochs, lr, weightDecay, patience }");
  Napi::Object o = v.As<Napi::Object>();
  MilTrainPlan plan;
  Napi::Value epochs = o.Get("epochs");
  if (!epochs.IsArray()) throw Napi::TypeError::New(env, "plan.epochs must be an array of epochs");
  Napi::Array ea = epochs.As<Napi::Array>();
  for (uint32_t e = 0; e < ea.Length(); ++e) {
    Napi::Value steps = ea.Get(e);
    if (!steps.IsArray()) throw Napi::TypeError::New(env, "plan.epochs[e] must be an array of steps");
    Napi::Array sa = steps.As<Napi::Array>();
    std::vector<std::vector<int64_t>> epoch;
    for (uint32_t s = 0; s < sa.Length(); ++s) epoch.push_back(ints_from_js(sa.Get(s), "plan.epochs[e][s]"));
    plan.epochs.push_back(std::move(epoch));
  }
  Napi::Value lr = o.Get("lr");
  if (!lr.IsArray()) throw Napi::TypeError::New(env, "plan.lr must be an array of numbers");
  Napi::Array la = lr.As<Napi::Array>();
  for (uint32_t i = 0; i < la.Length(); ++i) plan.lr.push_back(la.Get(i).As<Napi::Number>().DoubleValue());
  read_number(o, "weightDecay", plan.weight_decay, "plan");
  read_int(o, "patience", plan.patience, "plan");
  return plan;
}

std::string device_arg(const Napi::CallbackInfo& info, size_t i) {
  return info.Length() > i && !info[i].IsUndefined() ? string_from_js(info[i], "device") : "cpu";
}

Napi::Value AbmilTrain(const Napi::CallbackInfo& info) {
  MilParams init = params_from_js(info[0], "init");
  Bags train = bags_from_js(info[1], "train");
  Bags val = info[2].IsUndefined() || info[2].IsNull() ? Bags{} : bags_from_js(info[2], "val");
  MilTrainPlan plan = plan_from_js(info[3]);
  std::string device = device_arg(info, 4);
  return run_async<MilTrainResult>(
      info.Env(), [=] { return abmil_train(init, train, val, plan, device); },
      [](Napi::Env e, MilTrainResult& r) -> Napi::Value {
        Napi::Object out = Napi::Object::New(e);
        out.Set("params", params_to_js(e, r.params));
        Napi::Array tl = Napi::Array::New(e, r.train_loss.size()), vl = Napi::Array::New(e, r.val_loss.size());
        for (size_t i = 0; i < r.train_loss.size(); ++i) tl.Set(static_cast<uint32_t>(i), r.train_loss[i]);
        for (size_t i = 0; i < r.val_loss.size(); ++i) vl.Set(static_cast<uint32_t>(i), r.val_loss[i]);
        out.Set("trainLoss", tl);
        out.Set("valLoss", vl);
        out.Set("bestEpoch", static_cast<double>(r.best_epoch));
        out.Set("epochsRun", static_cast<double>(r.epochs_run));
        return out;
      },
      info[2].IsObject() ? std::vector<Napi::Value>{info[0], info[1], info[2]}
                         : std::vector<Napi::Value>{info[0], info[1]});
}

Napi::Value AbmilPredict(const Napi::CallbackInfo& info) {
  MilParams params = params_from_js(info[0], "params");
  Bags bags = bags_from_js(info[1], "bags");
  std::string device = device_arg(info, 2);
  return run_async<HostTensor>(
      info.Env(), [=] { return abmil_predict(params, bags, device); },
      [](Napi::Env e, HostTensor& t) -> Napi::Value { return tensor_to_js(e, t); }, {info[0], info[1]});
}

Napi::Value AbmilLoss(const Napi::CallbackInfo& info) {
  MilParams params = params_from_js(info[0], "params");
  Bags bags = bags_from_js(info[1], "bags");
  std::string device = device_arg(info, 2);
  return run_async<MilLossResult>(
      info.Env(), [=] { return abmil_loss(params, bags, device); },
      [](Napi::Env e, MilLossResult& r) -> Napi::Value {
        Napi::Object out = Napi::Object::New(e);
        out.Set("loss", r.loss);
        out.Set("grads", params_to_js(e, r.grads));
        return out;
      },
      {info[0], info[1]});
}

}  // namespace

void register_mil(Napi::Env env, Napi::Object exports) {
  exports.Set("abmilTrain", Napi::Function::New(env, AbmilTrain, "abmilTrain"));
  exports.Set("abmilPredict", Napi::Function::New(env, AbmilPredict, "abmilPredict"));
  exports.Set("abmilLoss", Napi::Function::New(env, AbmilLoss, "abmilLoss"));
}

}  // namespace g2l::addon
