#include "openslide_loader.h"

#include <dlfcn.h>

#include <cstdlib>
#include <mutex>

namespace g2l::slides {

namespace {

OpenSlideApi g_api;
std::string g_error;
std::string g_library;
std::vector<std::string> g_candidates;
std::once_flag g_once;
std::mutex g_candidates_mutex;

template <typename F>
bool resolve(void* lib, const char* name, F& slot) {
  slot = reinterpret_cast<F>(dlsym(lib, name));
  if (slot == nullptr) g_error = std::string("libopenslide has no symbol ") + name;
  return slot != nullptr;
}

void load() {
  // G2L_OPENSLIDE_LIB names a library explicitly (a user's own OpenSlide build); then the candidates the package
  // found (openslide-bin's OpenSlide 4 from PyPI); then the usual sonames (Debian's libopenslide0: OpenSlide 3.4).
  std::vector<std::string> candidates;
  if (const char* override_path = std::getenv("G2L_OPENSLIDE_LIB")) candidates.emplace_back(override_path);
  {
    std::lock_guard<std::mutex> lock(g_candidates_mutex);
    candidates.insert(candidates.end(), g_candidates.begin(), g_candidates.end());
  }
  for (const char* c :
       {"libopenslide.so.1", "libopenslide.so.0", "libopenslide.so", "libopenslide.1.dylib", "libopenslide.0.dylib"}) {
    candidates.emplace_back(c);
  }
  void* lib = nullptr;
  std::string tried;
  for (const std::string& c : candidates) {
    if (c.empty()) continue;
    lib = dlopen(c.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (lib != nullptr) {
      g_library = c;
      break;
    }
    dlerror();
    tried += (tried.empty() ? "" : ", ") + c;
  }
  if (lib == nullptr) {
    g_error = "OpenSlide is not installed (none of " + tried +
              " could be loaded): install it (Debian/Ubuntu: apt-get install libopenslide0) or set G2L_OPENSLIDE_LIB";
    return;
  }
  OpenSlideApi a;
  bool ok = resolve(lib, "openslide_get_version", a.get_version) && resolve(lib, "openslide_open", a.open) &&
            resolve(lib, "openslide_close", a.close) && resolve(lib, "openslide_get_error", a.get_error) &&
            resolve(lib, "openslide_get_level_count", a.get_level_count) &&
            resolve(lib, "openslide_get_level_dimensions", a.get_level_dimensions) &&
            resolve(lib, "openslide_get_level_downsample", a.get_level_downsample) &&
            resolve(lib, "openslide_get_best_level_for_downsample", a.get_best_level_for_downsample) &&
            resolve(lib, "openslide_read_region", a.read_region) &&
            resolve(lib, "openslide_get_property_names", a.get_property_names) &&
            resolve(lib, "openslide_get_property_value", a.get_property_value) &&
            resolve(lib, "openslide_detect_vendor", a.detect_vendor) &&
            resolve(lib, "openslide_get_associated_image_names", a.get_associated_image_names) &&
            resolve(lib, "openslide_get_associated_image_dimensions", a.get_associated_image_dimensions) &&
            resolve(lib, "openslide_read_associated_image", a.read_associated_image);
  // Optional (OpenSlide >= 4.0).
  a.get_icc_profile_size =
      reinterpret_cast<decltype(a.get_icc_profile_size)>(dlsym(lib, "openslide_get_icc_profile_size"));
  a.cache_create = reinterpret_cast<decltype(a.cache_create)>(dlsym(lib, "openslide_cache_create"));
  a.set_cache = reinterpret_cast<decltype(a.set_cache)>(dlsym(lib, "openslide_set_cache"));
  if (ok)
    g_api = a;
  else
    g_library.clear();
}

}  // namespace

void set_openslide_candidates(std::vector<std::string> paths) {
  std::lock_guard<std::mutex> lock(g_candidates_mutex);
  g_candidates = std::move(paths);
}

std::string openslide_library() {
  std::string err;
  return openslide_api(&err) != nullptr ? g_library : std::string();
}

const OpenSlideApi* openslide_api(std::string* error) {
  std::call_once(g_once, load);
  if (g_api.get_version == nullptr) {
    if (error) *error = g_error;
    return nullptr;
  }
  return &g_api;
}

}  // namespace g2l::slides
