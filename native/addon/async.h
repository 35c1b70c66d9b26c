// Runs engine calls off the JS thread: a Napi::AsyncWorker that executes `work` on the libuv threadpool and turns
// its result (or its g2l::Error) into the settlement of a Promise. Buffers borrowed from JS are held by
// references until the work is done.
#pragma once

#include <napi.h>

#include <functional>
#include <memory>
#include <utility>
#include <vector>

namespace g2l::addon {

template <typename Result>
class PromiseWorker : public Napi::AsyncWorker {
 public:
  using Work = std::function<Result()>;
  using Convert = std::function<Napi::Value(Napi::Env, Result&)>;

  PromiseWorker(Napi::Env env, Work work, Convert convert, std::vector<Napi::Value> keep_alive)
      : Napi::AsyncWorker(env, "g2l-engine"),
        deferred_(Napi::Promise::Deferred::New(env)),
        work_(std::move(work)),
        convert_(std::move(convert)) {
    for (auto& v : keep_alive) refs_.push_back(Napi::Persistent(v));
  }

  Napi::Promise Promise() { return deferred_.Promise(); }

 protected:
  void Execute() override {
    try {
      result_ = std::make_unique<Result>(work_());
    } catch (const std::exception& e) {
      SetError(e.what());
    } catch (...) {
      SetError("unknown engine error");
    }
  }
  void OnOK() override {
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    try {
      deferred_.Resolve(convert_(env, *result_));
    } catch (const Napi::Error& e) {
      deferred_.Reject(e.Value());
    }
  }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  Work work_;
  Convert convert_;
  std::unique_ptr<Result> result_;
  std::vector<Napi::Reference<Napi::Value>> refs_;
};

/** Queues `work` on the threadpool and returns the Promise of convert(result). */
template <typename Result>
Napi::Promise run_async(Napi::Env env, std::function<Result()> work,
                        std::function<Napi::Value(Napi::Env, Result&)> convert,
                        std::vector<Napi::Value> keep_alive = {}) {
  auto* worker = new PromiseWorker<Result>(env, std::move(work), std::move(convert), std::move(keep_alive));
  Napi::Promise p = worker->Promise();
  worker->Queue();
  return p;
}

}  // namespace g2l::addon
