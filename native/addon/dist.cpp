// Data parallelism in the addon: DistConfig from JS (Distiller.create's `dist` key). Converts only; the engine does
// the work.
#include <napi.h>

#include "convert.h"
#include "dist.h"

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

}  // namespace g2l::addon
