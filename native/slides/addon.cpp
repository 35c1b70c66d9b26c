// N-API module of the slide reader. Converts arguments and schedules OpenSlide calls; no libtorch.
#include <napi.h>

#include "openslide_loader.h"

namespace g2l::slides {

// openslideVersion() -> string | null; openslideError() -> why it is not available, or null.
static Napi::Value OpenSlideVersion(const Napi::CallbackInfo& info) {
  std::string err;
  const OpenSlideApi* api = openslide_api(&err);
  if (api == nullptr) return info.Env().Null();
  return Napi::String::New(info.Env(), api->get_version());
}

static Napi::Value OpenSlideError(const Napi::CallbackInfo& info) {
  std::string err;
  if (openslide_api(&err) != nullptr) return info.Env().Null();
  return Napi::String::New(info.Env(), err);
}

}  // namespace g2l::slides

static Napi::Object InitSlides(Napi::Env env, Napi::Object exports) {
  exports.Set("openslideVersion", Napi::Function::New(env, g2l::slides::OpenSlideVersion, "openslideVersion"));
  exports.Set("openslideError", Napi::Function::New(env, g2l::slides::OpenSlideError, "openslideError"));
  return exports;
}

NODE_API_MODULE(g2l_slides, InitSlides)
