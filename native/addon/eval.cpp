// Evaluation (g2l/eval.h) for JavaScript: conversions only, the work on the threadpool.
//
//   evalCosineTopK(query, base, { k, queryGroup?, baseGroup?, device?, queryBlock?, baseBlock? })
//       -> Promise<{ idx: { data: BigInt64Array, shape }, sim: { data: Float64Array, shape } }>
//   evalFitLogistic(X, y, nClasses, { C, gtol?, maxIter?, device? })
//       -> Promise<{ W, b, iterations, converged, gradMax, loss }>
//   evalLinearCka(x, y, device) -> Promise<{ linear, debiased }>
//   evalRbfCka(x, y, device)    -> Promise<number>
// Tensors are { data, shape }; pass the same object as query and base to search a set against itself. Groups and
// labels are Float64Array or BigInt64Array of integers.
#include <napi.h>

#include "async.h"
#include "convert.h"
#include "exports.h"
#include "g2l/eval.h"

namespace g2l::addon {

namespace {

Napi::Object options_arg(const Napi::CallbackInfo& info, size_t i, const char* what) {
  if (info.Length() <= i || !info[i].IsObject())
    throw Napi::TypeError::New(info.Env(), std::string(what) + " must be an options object");
  return info[i].As<Napi::Object>();
}

Napi::Value CosineTopK(const Napi::CallbackInfo& info) {
  HostTensor query = tensor_from_js(info[0], "query");
  HostTensor base = tensor_from_js(info[1], "base");
  Napi::Object o = options_arg(info, 2, "options");
  CosineTopKOptions opts;
  read_int(o, "k", opts.k, "options");
  read_string(o, "device", opts.device, "options");
  read_int(o, "queryBlock", opts.query_block, "options");
  read_int(o, "baseBlock", opts.base_block, "options");
  std::vector<Napi::Value> keep{info[0], info[1]};
  if (has_field(o, "queryGroup")) {
    opts.query_group = tensor_from_js(o.Get("queryGroup"), "options.queryGroup");
    keep.push_back(o.Get("queryGroup"));
  }
  if (has_field(o, "baseGroup")) {
    opts.base_group = tensor_from_js(o.Get("baseGroup"), "options.baseGroup");
    keep.push_back(o.Get("baseGroup"));
  }
  return run_async<CosineTopKResult>(
      info.Env(), [=] { return cosine_topk(query, base, opts); },
      [](Napi::Env e, CosineTopKResult& r) -> Napi::Value {
        Napi::Object out = Napi::Object::New(e);
        out.Set("idx", tensor_to_js(e, r.idx));
        out.Set("sim", tensor_to_js(e, r.sim));
        return out;
      },
      keep);
}

Napi::Value FitLogistic(const Napi::CallbackInfo& info) {
  HostTensor X = tensor_from_js(info[0], "X");
  HostTensor y = tensor_from_js(info[1], "y");
  const int64_t classes = int_arg(info, 2, "nClasses");
  Napi::Object o = options_arg(info, 3, "options");
  LogisticOptions opts;
  read_number(o, "C", opts.C, "options");
  read_number(o, "gtol", opts.gtol, "options");
  read_int(o, "maxIter", opts.max_iter, "options");
  read_string(o, "device", opts.device, "options");
  return run_async<LogisticResult>(
      info.Env(), [=] { return fit_logistic(X, y, classes, opts); },
      [](Napi::Env e, LogisticResult& r) -> Napi::Value {
        Napi::Object out = Napi::Object::New(e);
        out.Set("W", tensor_to_js(e, r.W));
        out.Set("b", tensor_to_js(e, r.b));
        out.Set("iterations", static_cast<double>(r.iterations));
        out.Set("converged", r.converged);
        out.Set("gradMax", r.grad_max);
        out.Set("loss", r.loss);
        return out;
      },
      {info[0], info[1]});
}

Napi::Value LinearCkaJs(const Napi::CallbackInfo& info) {
  HostTensor x = tensor_from_js(info[0], "x"), y = tensor_from_js(info[1], "y");
  const std::string device = device_at(info, 2);
  return run_async<LinearCka>(
      info.Env(), [=] { return linear_cka(x, y, device); },
      [](Napi::Env e, LinearCka& r) -> Napi::Value {
        Napi::Object out = Napi::Object::New(e);
        out.Set("linear", r.linear);
        out.Set("debiased", r.debiased);
        return out;
      },
      {info[0], info[1]});
}

Napi::Value RbfCkaJs(const Napi::CallbackInfo& info) {
  HostTensor x = tensor_from_js(info[0], "x"), y = tensor_from_js(info[1], "y");
  const std::string device = device_at(info, 2);
  return run_async<double>(
      info.Env(), [=] { return rbf_cka(x, y, device); },
      [](Napi::Env e, double& r) -> Napi::Value { return Napi::Number::New(e, r); }, {info[0], info[1]});
}

}  // namespace

void register_eval(Napi::Env env, Napi::Object exports) {
  exports.Set("evalCosineTopK", Napi::Function::New(env, CosineTopK, "evalCosineTopK"));
  exports.Set("evalFitLogistic", Napi::Function::New(env, FitLogistic, "evalFitLogistic"));
  exports.Set("evalLinearCka", Napi::Function::New(env, LinearCkaJs, "evalLinearCka"));
  exports.Set("evalRbfCka", Napi::Function::New(env, RbfCkaJs, "evalRbfCka"));
}

}  // namespace g2l::addon
