// Data parallelism in the addon: DistConfig from JS, and distAllReduceTiming (what one all-reduce costs in a world,
// for the GPU-host check and the scaling estimate). Converts and schedules; the engine does the work.
#include <napi.h>

#include "async.h"
#include "convert.h"
#include "dist.h"
#include "exports.h"

namespace g2l::addon {

namespace {

bool has(const Napi::Object& o, const char* key) {
  return o.Has(key) && !o.Get(key).IsUndefined() && !o.Get(key).IsNull();
}

int64_t int_of(const Napi::Object& o, const char* key, int64_t fallback) {
  if (!has(o, key)) return fallback;
  Napi::Value v = o.Get(key);
  if (!v.IsNumber()) throw Napi::TypeError::New(o.Env(), std::string("dist.") + key + " must be a number");
  double d = v.As<Napi::Number>().DoubleValue();
  if (d != static_cast<double>(static_cast<int64_t>(d))) {
    throw Napi::TypeError::New(o.Env(), std::string("dist.") + key + " must be an integer");
  }
  return static_cast<int64_t>(d);
}

std::string string_of(const Napi::Object& o, const char* key, const std::string& fallback) {
  return has(o, key) ? string_from_js(o.Get(key), std::string("dist.") + key) : fallback;
}

}  // namespace

DistConfig dist_config_from_js(const Napi::Object& o, const std::string& device) {
  DistConfig c;
  c.rank = static_cast<int>(int_of(o, "rank", c.rank));
  c.world_size = static_cast<int>(int_of(o, "worldSize", c.world_size));
  c.local_rank = static_cast<int>(int_of(o, "localRank", c.local_rank));
  c.master_addr = string_of(o, "masterAddr", c.master_addr);
  c.master_port = static_cast<int>(int_of(o, "masterPort", c.master_port));
  c.backend = string_of(o, "backend", c.backend);
  c.timeout_ms = int_of(o, "timeoutMs", c.timeout_ms);
  c.bucket_bytes = int_of(o, "bucketBytes", c.bucket_bytes);
  c.device = device;
  return c;
}

// distAllReduceTiming(dist: {...; device}, bytes, repeats) -> Promise<{ bytes, medianMs, busGbps, backend, worldSize }>
static Napi::Value DistAllReduceTimingJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsObject()) throw Napi::TypeError::New(env, "distAllReduceTiming: the first argument must be an object");
  Napi::Object o = info[0].As<Napi::Object>();
  DistConfig config = dist_config_from_js(o, string_of(o, "device", "cpu"));
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

void register_dist(Napi::Env env, Napi::Object exports) {
  exports.Set("distAllReduceTiming", Napi::Function::New(env, DistAllReduceTimingJs, "distAllReduceTiming"));
}

}  // namespace g2l::addon
