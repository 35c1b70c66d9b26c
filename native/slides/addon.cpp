// N-API module of the slide reader. Converts arguments and runs every OpenSlide call on the libuv threadpool
// (open, region and associated-image reads); the JS thread only wraps results. No libtorch.
//
// A slide handle is a JS External owning a shared_ptr<Slide>: reads in flight hold their own reference, so
// closeSlide() (or garbage collection) never frees an openslide_t that a worker is still reading. OpenSlide
// handles are thread-safe, so reads of one slide may run in parallel.
#include <napi.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <thread>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "../addon/async.h"
#include "openslide_loader.h"

namespace g2l::slides {

using g2l::addon::run_on_pool;

namespace {

struct Slide {
  const OpenSlideApi* api = nullptr;
  void* osr = nullptr;
  std::string path;
  std::atomic<bool> closed{false};
  ~Slide() {
    if (osr != nullptr) api->close(osr);
  }
};
using SlidePtr = std::shared_ptr<Slide>;

struct SlideInfo {
  SlidePtr slide;
  std::string vendor;
  std::vector<std::pair<int64_t, int64_t>> level_dimensions;
  std::vector<double> level_downsamples;
  std::vector<std::pair<std::string, std::string>> properties;
  std::vector<std::pair<std::string, std::pair<int64_t, int64_t>>> associated;
  int64_t icc_profile_size = -1;  // -1: unknown (OpenSlide < 4.0)
};

struct Pixels {
  std::vector<uint8_t> rgb;
  int64_t width = 0, height = 0;
};

const OpenSlideApi* require_api() {
  std::string err;
  const OpenSlideApi* api = openslide_api(&err);
  if (api == nullptr) throw std::runtime_error(err);
  return api;
}

/** OpenSlide's error for this handle, prefixed by what was being done, or nothing. */
void check_error(const Slide& s, const std::string& what) {
  const char* e = s.api->get_error(s.osr);
  if (e != nullptr) throw std::runtime_error(what + " " + s.path + ": " + e);
}

/** Premultiplied ARGB -> RGB composited on white (transparent areas outside the scanned region become white). */
void argb_to_rgb(const std::vector<uint32_t>& argb, std::vector<uint8_t>& rgb) {
  rgb.resize(argb.size() * 3);
  for (size_t i = 0; i < argb.size(); ++i) {
    uint32_t p = argb[i];
    uint32_t a = p >> 24, r = (p >> 16) & 0xff, g = (p >> 8) & 0xff, b = p & 0xff;
    uint32_t white = 255 - a;  // premultiplied over white: c + (255 - a)
    rgb[3 * i] = static_cast<uint8_t>(r + white);
    rgb[3 * i + 1] = static_cast<uint8_t>(g + white);
    rgb[3 * i + 2] = static_cast<uint8_t>(b + white);
  }
}

// Decoded tiles are cached in one cache of this size shared by every open slide (OpenSlide >= 4.0), instead of
// OpenSlide's default of a cache of 32 MiB for each slide: with a tile reader keeping dozens or hundreds of slides
// open, per-slide caches grow to 32 MiB x slides (measured: ~256 KiB more resident for each distinct tile read from a
// slide while it stays open). With OpenSlide 3.4, which has no shared cache, each slide keeps its own.
constexpr size_t kSharedCacheBytes = size_t(32) << 20;

/** The process's shared tile cache, or null (OpenSlide 3.4). Created once, never released (lives as long as the
 * process). */
void* shared_cache(const OpenSlideApi* api) {
  static void* cache = (api->cache_create && api->set_cache) ? api->cache_create(kSharedCacheBytes) : nullptr;
  return cache;
}

SlidePtr slide_from_js(const Napi::Value& v) {
  if (!v.IsExternal()) throw Napi::TypeError::New(v.Env(), "expected a slide handle from openSlide()");
  SlidePtr s = *v.As<Napi::External<SlidePtr>>().Data();
  if (!s || s->closed) throw Napi::Error::New(v.Env(), "the slide is closed: open it again to read it");
  return s;
}

int64_t int_arg(const Napi::CallbackInfo& info, size_t i, const char* what) {
  Napi::Value v = info[i];
  double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : 0.5;
  if (d != static_cast<double>(static_cast<int64_t>(d)))
    throw Napi::TypeError::New(info.Env(), std::string(what) + " must be an integer");
  return static_cast<int64_t>(d);
}

int64_t int_arg_value(const Napi::Value& v, const char* what) {
  double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : 0.5;
  if (d != static_cast<double>(static_cast<int64_t>(d)))
    throw Napi::TypeError::New(v.Env(), std::string(what) + " must hold integers");
  return static_cast<int64_t>(d);
}

Napi::Value pixels_to_js(Napi::Env env, Pixels& px) {
  auto* keep = new std::vector<uint8_t>(std::move(px.rgb));
  Napi::Object o = Napi::Object::New(env);
  Napi::ArrayBuffer buf = keep->empty() ? Napi::ArrayBuffer::New(env, 0)
                                        : Napi::ArrayBuffer::New(
                                              env, keep->data(), keep->size(),
                                              [](Napi::Env, void*, std::vector<uint8_t>* k) { delete k; }, keep);
  if (keep->empty()) delete keep;
  o.Set("data", Napi::Uint8Array::New(env, buf.ByteLength(), buf, 0));
  o.Set("width", static_cast<double>(px.width));
  o.Set("height", static_cast<double>(px.height));
  return o;
}

}  // namespace

// openslideVersion() -> string | null; openslideError() -> why it is not available, or null.
static Napi::Value OpenSlideVersion(const Napi::CallbackInfo& info) {
  std::string err;
  const OpenSlideApi* api = openslide_api(&err);
  if (api == nullptr) return info.Env().Null();
  return Napi::String::New(info.Env(), api->get_version());
}

// useOpenSlideLibraries(paths: string[]): libraries to try before the system's; effective before OpenSlide's first use.
static Napi::Value UseOpenSlideLibraries(const Napi::CallbackInfo& info) {
  if (!info[0].IsArray()) throw Napi::TypeError::New(info.Env(), "paths must be an array of strings");
  Napi::Array a = info[0].As<Napi::Array>();
  std::vector<std::string> paths;
  for (uint32_t i = 0; i < a.Length(); ++i) {
    Napi::Value v = a.Get(i);
    if (!v.IsString()) throw Napi::TypeError::New(info.Env(), "paths must be an array of strings");
    paths.push_back(v.As<Napi::String>().Utf8Value());
  }
  set_openslide_candidates(std::move(paths));
  return info.Env().Undefined();
}

// openslideLibrary() -> the library file loaded (as given to dlopen), or null.
static Napi::Value OpenSlideLibrary(const Napi::CallbackInfo& info) {
  std::string lib = openslide_library();
  if (lib.empty()) return info.Env().Null();
  return Napi::String::New(info.Env(), lib);
}

static Napi::Value OpenSlideError(const Napi::CallbackInfo& info) {
  std::string err;
  if (openslide_api(&err) != nullptr) return info.Env().Null();
  return Napi::String::New(info.Env(), err);
}

// detectVendor(path) -> Promise<string | null>: the format OpenSlide would open the file as, without opening it.
static Napi::Value DetectVendor(const Napi::CallbackInfo& info) {
  if (!info[0].IsString()) throw Napi::TypeError::New(info.Env(), "path must be a string");
  std::string path = info[0].As<Napi::String>().Utf8Value();
  return run_on_pool<std::string>(
      info.Env(),
      [path] {
        const char* v = require_api()->detect_vendor(path.c_str());
        return std::string(v ? v : "");
      },
      [](Napi::Env env, std::string& v) -> Napi::Value { return v.empty() ? env.Null() : Napi::String::New(env, v); });
}

// openSlide(path, { properties = true }) -> Promise<{ handle, vendor, levelDimensions, levelDownsamples, properties,
// associatedImages, iccProfileSize }>; rejects with OpenSlide's own message when the file is not a slide it can read.
// properties: false (the tile reader, which only reads regions): no properties, associated images or ICC profile size
// (empty, empty, null), which saves their conversion to JS objects on every open of a slide.
static Napi::Value OpenSlide(const Napi::CallbackInfo& info) {
  if (!info[0].IsString()) throw Napi::TypeError::New(info.Env(), "path must be a string");
  std::string path = info[0].As<Napi::String>().Utf8Value();
  bool with_properties = true;
  if (info.Length() > 1 && info[1].IsObject()) {
    Napi::Value p = info[1].As<Napi::Object>().Get("properties");
    if (!p.IsUndefined()) with_properties = p.ToBoolean();
  }
  return run_on_pool<SlideInfo>(
      info.Env(),
      [path, with_properties] {
        const OpenSlideApi* api = require_api();
        SlideInfo r;
        r.slide = std::make_shared<Slide>();
        r.slide->api = api;
        r.slide->path = path;
        r.slide->osr = api->open(path.c_str());
        if (r.slide->osr == nullptr) {
          // Only now ask which format OpenSlide took the file for (it reads the file's header again).
          const char* vendor = api->detect_vendor(path.c_str());
          throw std::runtime_error("OpenSlide cannot open " + path +
                                   ": not a format it reads, or a damaged or truncated file" +
                                   (vendor ? std::string(" (detected vendor ") + vendor + ")" : std::string()));
        }
        check_error(*r.slide, "OpenSlide cannot open");
        if (void* cache = shared_cache(api)) api->set_cache(r.slide->osr, cache);
        // openslide.vendor: what openslide_detect_vendor() says, without reading the file again.
        const char* vendor = api->get_property_value(r.slide->osr, "openslide.vendor");
        r.vendor = vendor ? vendor : "";
        int32_t levels = api->get_level_count(r.slide->osr);
        check_error(*r.slide, "OpenSlide cannot read the levels of");
        for (int32_t l = 0; l < levels; ++l) {
          int64_t w = -1, h = -1;
          api->get_level_dimensions(r.slide->osr, l, &w, &h);
          r.level_dimensions.emplace_back(w, h);
          r.level_downsamples.push_back(api->get_level_downsample(r.slide->osr, l));
        }
        if (with_properties) {
          for (const char* const* n = api->get_property_names(r.slide->osr); n && *n; ++n) {
            const char* v = api->get_property_value(r.slide->osr, *n);
            r.properties.emplace_back(*n, v ? v : "");
          }
          for (const char* const* n = api->get_associated_image_names(r.slide->osr); n && *n; ++n) {
            int64_t w = -1, h = -1;
            api->get_associated_image_dimensions(r.slide->osr, *n, &w, &h);
            r.associated.push_back({*n, {w, h}});
          }
          if (api->get_icc_profile_size) r.icc_profile_size = api->get_icc_profile_size(r.slide->osr);
        }
        check_error(*r.slide, "OpenSlide cannot read");
        return r;
      },
      [](Napi::Env env, SlideInfo& r) -> Napi::Value {
        Napi::Object o = Napi::Object::New(env);
        o.Set("handle",
              Napi::External<SlidePtr>::New(env, new SlidePtr(r.slide), [](Napi::Env, SlidePtr* p) { delete p; }));
        o.Set("vendor", r.vendor.empty() ? env.Null() : Napi::String::New(env, r.vendor));
        Napi::Array dims = Napi::Array::New(env, r.level_dimensions.size());
        Napi::Array ds = Napi::Array::New(env, r.level_downsamples.size());
        for (uint32_t i = 0; i < r.level_dimensions.size(); ++i) {
          Napi::Array d = Napi::Array::New(env, 2);
          d.Set(0u, static_cast<double>(r.level_dimensions[i].first));
          d.Set(1u, static_cast<double>(r.level_dimensions[i].second));
          dims.Set(i, d);
          ds.Set(i, r.level_downsamples[i]);
        }
        o.Set("levelDimensions", dims);
        o.Set("levelDownsamples", ds);
        Napi::Object props = Napi::Object::New(env);
        for (auto& [k, v] : r.properties) props.Set(k, v);
        o.Set("properties", props);
        Napi::Object assoc = Napi::Object::New(env);
        for (auto& [k, wh] : r.associated) {
          Napi::Array d = Napi::Array::New(env, 2);
          d.Set(0u, static_cast<double>(wh.first));
          d.Set(1u, static_cast<double>(wh.second));
          assoc.Set(k, d);
        }
        o.Set("associatedImages", assoc);
        o.Set("iccProfileSize",
              r.icc_profile_size < 0 ? env.Null() : Napi::Number::New(env, static_cast<double>(r.icc_profile_size)));
        return o;
      });
}

// A w x h ARGB read by `read` (OpenSlide's premultiplied ARGB), checked for the slide's sticky error, as RGB pixels.
template <typename Read>
static Pixels read_pixels(const Slide& s, int64_t w, int64_t h, const char* failure, Read read) {
  std::vector<uint32_t> argb(static_cast<size_t>(w * h));
  read(argb.data());
  check_error(s, failure);
  Pixels px;
  px.width = w;
  px.height = h;
  argb_to_rgb(argb, px.rgb);
  return px;
}

// readRegion(handle, x, y, level, width, height) -> Promise<{ data: Uint8Array RGB, width, height }>.
// x, y are level-0 coordinates (OpenSlide's convention); width, height are in pixels of `level`.
static Napi::Value ReadRegion(const Napi::CallbackInfo& info) {
  SlidePtr s = slide_from_js(info[0]);
  int64_t x = int_arg(info, 1, "x"), y = int_arg(info, 2, "y"), level = int_arg(info, 3, "level");
  int64_t w = int_arg(info, 4, "width"), h = int_arg(info, 5, "height");
  if (w <= 0 || h <= 0 || w * h > (int64_t(1) << 28)) {
    throw Napi::RangeError::New(info.Env(), "readRegion: width and height must be positive with at most 2^28 pixels");
  }
  return run_on_pool<Pixels>(
      info.Env(),
      [s, x, y, level, w, h] {
        return read_pixels(*s, w, h, "OpenSlide cannot read a region of", [&](uint32_t* argb) {
          s->api->read_region(s->osr, argb, x, y, static_cast<int32_t>(level), w, h);
        });
      },
      pixels_to_js);
}

// readAssociatedImage(handle, name) -> Promise<{ data: Uint8Array RGB, width, height }>
static Napi::Value ReadAssociatedImage(const Napi::CallbackInfo& info) {
  SlidePtr s = slide_from_js(info[0]);
  if (!info[1].IsString()) throw Napi::TypeError::New(info.Env(), "name must be a string");
  std::string name = info[1].As<Napi::String>().Utf8Value();
  return run_on_pool<Pixels>(
      info.Env(),
      [s, name] {
        int64_t w = -1, h = -1;
        s->api->get_associated_image_dimensions(s->osr, name.c_str(), &w, &h);
        if (w < 0 || h < 0) throw std::runtime_error("slide " + s->path + " has no associated image '" + name + "'");
        return read_pixels(*s, w, h, "OpenSlide cannot read an associated image of",
                           [&](uint32_t* argb) { s->api->read_associated_image(s->osr, name.c_str(), argb); });
      },
      pixels_to_js);
}

// readTilesInto(handles[], xs[], ys[], levels[], size, out: Uint8Array(n*size*size*3), threads)
//   -> Promise<(string | null)[]>: n square regions read straight into one packed (n,size,size,3) buffer by
// `threads` threads of its own (not the libuv pool), one error message (or null) per tile. The batch loader's
// fast path: no per-tile round trip through JS and no copy after the read.
static Napi::Value ReadTilesInto(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto array = [&](size_t i, const char* what) {
    if (!info[i].IsArray()) throw Napi::TypeError::New(env, std::string(what) + " must be an array");
    return info[i].As<Napi::Array>();
  };
  Napi::Array handles = array(0, "handles"), xs = array(1, "xs"), ys = array(2, "ys"), levels = array(3, "levels");
  const uint32_t n = handles.Length();
  if (xs.Length() != n || ys.Length() != n || levels.Length() != n) {
    throw Napi::RangeError::New(env, "readTilesInto: handles, xs, ys and levels must have the same length");
  }
  int64_t size = int_arg(info, 4, "size");
  if (size <= 0 || size > 8192) throw Napi::RangeError::New(env, "readTilesInto: size must be in 1..8192");
  if (!info[5].IsTypedArray() || info[5].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
    throw Napi::TypeError::New(env, "readTilesInto: out must be a Uint8Array");
  }
  Napi::Uint8Array out = info[5].As<Napi::Uint8Array>();
  const size_t tile_bytes = static_cast<size_t>(size * size * 3);
  if (out.ByteLength() != tile_bytes * n) {
    throw Napi::RangeError::New(env, "readTilesInto: out must hold exactly n*size*size*3 bytes");
  }
  int64_t threads = info.Length() > 6 && info[6].IsNumber() ? int_arg(info, 6, "threads") : 0;
  if (threads <= 0) threads = std::max(1u, std::thread::hardware_concurrency());
  threads = std::min<int64_t>(threads, std::max<uint32_t>(1, n));
  struct Job {
    SlidePtr slide;
    int64_t x, y, level;
  };
  std::vector<Job> jobs(n);
  for (uint32_t i = 0; i < n; ++i) {
    jobs[i] = {slide_from_js(handles.Get(i)), int_arg_value(xs.Get(i), "xs"), int_arg_value(ys.Get(i), "ys"),
               int_arg_value(levels.Get(i), "levels")};
  }
  uint8_t* dst = out.Data();
  return run_on_pool<std::vector<std::string>>(
      env,
      [jobs = std::move(jobs), dst, size, tile_bytes, threads]() {
        std::vector<std::string> errors(jobs.size());
        std::atomic<size_t> next{0};
        auto work = [&] {
          std::vector<uint32_t> argb(static_cast<size_t>(size * size));
          std::vector<uint8_t> rgb;
          for (size_t i = next++; i < jobs.size(); i = next++) {
            const Job& j = jobs[i];
            try {
              j.slide->api->read_region(j.slide->osr, argb.data(), j.x, j.y, static_cast<int32_t>(j.level), size, size);
              check_error(*j.slide, "OpenSlide cannot read a region of");
              argb_to_rgb(argb, rgb);
              std::memcpy(dst + i * tile_bytes, rgb.data(), tile_bytes);
            } catch (const std::exception& e) {
              errors[i] = e.what();
            }
          }
        };
        std::vector<std::thread> pool;
        for (int64_t t = 1; t < threads; ++t) pool.emplace_back(work);
        work();
        for (auto& t : pool) t.join();
        return errors;
      },
      [](Napi::Env e, std::vector<std::string>& errors) -> Napi::Value {
        Napi::Array a = Napi::Array::New(e, errors.size());
        for (uint32_t i = 0; i < errors.size(); ++i)
          a.Set(i, errors[i].empty() ? e.Null() : Napi::String::New(e, errors[i]));
        return a;
      },
      {info[5], info[0]});
}

// closeSlide(handle): later reads reject; the file closes once reads in flight finish.
static Napi::Value CloseSlide(const Napi::CallbackInfo& info) {
  if (!info[0].IsExternal()) throw Napi::TypeError::New(info.Env(), "expected a slide handle from openSlide()");
  SlidePtr* p = info[0].As<Napi::External<SlidePtr>>().Data();
  if (*p) (*p)->closed = true;
  p->reset();
  return info.Env().Undefined();
}

}  // namespace g2l::slides

static Napi::Object InitSlides(Napi::Env env, Napi::Object exports) {
  using namespace g2l::slides;
  exports.Set("exitIfBusy", Napi::Function::New(env, g2l::addon::ExitIfBusy, "exitIfBusy"));
  exports.Set("openslideVersion", Napi::Function::New(env, OpenSlideVersion, "openslideVersion"));
  exports.Set("openslideError", Napi::Function::New(env, OpenSlideError, "openslideError"));
  exports.Set("openslideLibrary", Napi::Function::New(env, OpenSlideLibrary, "openslideLibrary"));
  exports.Set("useOpenSlideLibraries", Napi::Function::New(env, UseOpenSlideLibraries, "useOpenSlideLibraries"));
  exports.Set("detectVendor", Napi::Function::New(env, DetectVendor, "detectVendor"));
  exports.Set("openSlide", Napi::Function::New(env, OpenSlide, "openSlide"));
  exports.Set("readRegion", Napi::Function::New(env, ReadRegion, "readRegion"));
  exports.Set("readAssociatedImage", Napi::Function::New(env, ReadAssociatedImage, "readAssociatedImage"));
  exports.Set("readTilesInto", Napi::Function::New(env, ReadTilesInto, "readTilesInto"));
  exports.Set("closeSlide", Napi::Function::New(env, CloseSlide, "closeSlide"));
  return exports;
}

NODE_API_MODULE(g2l_slides, InitSlides)
