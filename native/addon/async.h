// Runs addon calls off the JS thread and settles a Promise with their result (or their g2l::Error).
//
//   run_async    the engine's calls (libtorch): all of them, in the order they were made, on one long-lived thread
//                of the process (the engine thread). libtorch's CPU parallelism is OpenMP, and OpenMP keeps one
//                team of worker threads for each thread that calls into it: work spread over libuv's threadpool
//                (4 threads) created up to four teams of intra-op threads, each waiting (spinning, by default) after
//                its call while the next call ran on another team, and each call landing on a thread whose caches,
//                allocator arena and OpenMP pool were cold. One thread gives one team, reused warm, as a Python
//                process has (benchmarks/run.mjs measures both). Calls that came concurrently run one after the
//                other: each already uses every intra-op thread.
//   run_on_pool  independent work that does not use libtorch (the slide addon's reads and decodes): on libuv's
//                threadpool, several at once.
//
// Buffers borrowed from JS are held by references until the work is done.
//
//   exit_if_busy  the process's exit while a call's work runs. process.exit() ends in exit(), which runs the static
//                destructors of libtorch, libgomp and the slide libraries while the engine thread (or a pool thread)
//                is inside them: a second Ctrl-C during a step died by SIGSEGV (4 of 15 tries with two intra-op
//                threads) instead of exiting 130. lib/util/exit.ts calls it from the process's 'exit' event: with
//                work in flight the process ends there with _Exit (no destructors; the OS frees what they would),
//                otherwise the exit goes on as usual.
#pragma once

#include <napi.h>

#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace g2l::addon {

/** Calls of this addon whose work has not finished (queued or running). */
inline std::atomic<int>& calls_in_flight() {
  static std::atomic<int> n{0};
  return n;
}

/** Holds calls_in_flight() up from construction (on the JS thread) until done() (after the work). */
class InFlight {
 public:
  InFlight() { calls_in_flight().fetch_add(1); }
  ~InFlight() { done(); }
  void done() {
    if (!done_) calls_in_flight().fetch_sub(1);
    done_ = true;
  }

 private:
  bool done_ = false;
};

/** exitIfBusy(code): ends the process now with `code` when work of this addon is in flight; otherwise returns. */
inline Napi::Value ExitIfBusy(const Napi::CallbackInfo& info) {
  if (calls_in_flight().load() > 0) {
    std::fflush(nullptr);
    std::_Exit(info[0].IsNumber() ? info[0].As<Napi::Number>().Int32Value() : 1);
  }
  return info.Env().Undefined();
}

// ---------------------------------------------------------------------------------------------------------------
// libuv's threadpool
// ---------------------------------------------------------------------------------------------------------------

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
    in_flight_.done();
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
  InFlight in_flight_;
};

/** Queues `work` on libuv's threadpool and returns the Promise of convert(result). */
template <typename Result>
Napi::Promise run_on_pool(Napi::Env env, std::function<Result()> work,
                          std::function<Napi::Value(Napi::Env, Result&)> convert,
                          std::vector<Napi::Value> keep_alive = {}) {
  auto* worker = new PromiseWorker<Result>(env, std::move(work), std::move(convert), std::move(keep_alive));
  Napi::Promise p = worker->Promise();
  worker->Queue();
  return p;
}

// ---------------------------------------------------------------------------------------------------------------
// The engine thread
// ---------------------------------------------------------------------------------------------------------------

/** One thread for the process, started on first use, running jobs in order. Never stopped: it waits for work. */
class EngineThread {
 public:
  static EngineThread& get() {
    // Leaked on purpose: a static's destructor at exit would have to join a thread that may be mid-call.
    static EngineThread* thread = new EngineThread();
    return *thread;
  }

  void post(std::function<void()> job) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      jobs_.push_back(std::move(job));
    }
    ready_.notify_one();
  }

 private:
  EngineThread() : thread_([this] { loop(); }) { thread_.detach(); }

  void loop() {
    for (;;) {
      std::function<void()> job;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        ready_.wait(lock, [this] { return !jobs_.empty(); });
        job = std::move(jobs_.front());
        jobs_.pop_front();
      }
      job();  // never throws: EngineCall::run catches
    }
  }

  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<std::function<void()>> jobs_;
  std::thread thread_;
};

/**
 * One call on the engine thread: created on the JS thread with its Promise; run() on the engine thread; settled back
 * on the JS thread through a thread-safe function (which also keeps the event loop alive while the call is pending,
 * as a queued AsyncWorker does).
 */
template <typename Result>
class EngineCall {
 public:
  using Work = std::function<Result()>;
  using Convert = std::function<Napi::Value(Napi::Env, Result&)>;

  static Napi::Promise start(Napi::Env env, Work work, Convert convert, std::vector<Napi::Value> keep_alive) {
    auto* call = new EngineCall(env, std::move(work), std::move(convert), std::move(keep_alive));
    Napi::Promise p = call->deferred_.Promise();
    napi_status s = napi_create_threadsafe_function(env, nullptr, nullptr, Napi::String::New(env, "g2l-engine"), 0, 1,
                                                    nullptr, nullptr, call, &EngineCall::settle, &call->tsfn_);
    if (s != napi_ok) {
      delete call;
      throw Napi::Error::New(env);  // napi's last error: what failed
    }
    EngineThread::get().post([call] { call->run(); });
    return p;
  }

 private:
  EngineCall(Napi::Env env, Work work, Convert convert, std::vector<Napi::Value> keep_alive)
      : deferred_(Napi::Promise::Deferred::New(env)), work_(std::move(work)), convert_(std::move(convert)) {
    for (auto& v : keep_alive) refs_.push_back(Napi::Persistent(v));
  }

  /** Engine thread: the work, then the hand-back to the JS thread. */
  void run() {
    try {
      result_ = std::make_unique<Result>(work_());
    } catch (const std::exception& e) {
      error_ = e.what();
    } catch (...) {
      error_ = "unknown engine error";
    }
    work_ = nullptr;  // the captures (model handles, buffers' views) are released here, in call order
    in_flight_.done();
    napi_threadsafe_function tsfn = tsfn_;
    if (napi_call_threadsafe_function(tsfn, this, napi_tsfn_blocking) != napi_ok) {
      // The environment is closing: nothing can be settled; its references go with it.
      for (auto& r : refs_) r.SuppressDestruct();
      delete this;
    }
    napi_release_threadsafe_function(tsfn, napi_tsfn_release);
  }

  /** JS thread (env null when the environment is being torn down). */
  static void settle(napi_env raw_env, napi_value /*js_callback*/, void* /*context*/, void* data) {
    auto* call = static_cast<EngineCall*>(data);
    if (raw_env == nullptr) {
      for (auto& r : call->refs_) r.SuppressDestruct();
      delete call;
      return;
    }
    Napi::Env env(raw_env);
    Napi::HandleScope scope(env);
    if (call->result_) {
      try {
        call->deferred_.Resolve(call->convert_(env, *call->result_));
      } catch (const Napi::Error& e) {
        call->deferred_.Reject(e.Value());
      }
    } else {
      call->deferred_.Reject(Napi::Error::New(env, call->error_).Value());
    }
    delete call;
  }

  Napi::Promise::Deferred deferred_;
  Work work_;
  Convert convert_;
  std::vector<Napi::Reference<Napi::Value>> refs_;
  std::unique_ptr<Result> result_;
  std::string error_;
  napi_threadsafe_function tsfn_ = nullptr;
  InFlight in_flight_;
};

/** Queues `work` on the engine thread and returns the Promise of convert(result). */
template <typename Result>
Napi::Promise run_async(Napi::Env env, std::function<Result()> work,
                        std::function<Napi::Value(Napi::Env, Result&)> convert,
                        std::vector<Napi::Value> keep_alive = {}) {
  return EngineCall<Result>::start(env, std::move(work), std::move(convert), std::move(keep_alive));
}

}  // namespace g2l::addon
