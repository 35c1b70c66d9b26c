// OpenSlide loaded at run time (dlopen): the C API's functions as pointers, resolved once. Nothing here needs
// OpenSlide's headers; the signatures are those of openslide.h (OpenSlide 3.4 and 4.x).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace g2l::slides {

struct OpenSlideApi {
  using openslide_t = void;
  const char* (*get_version)() = nullptr;
  openslide_t* (*open)(const char*) = nullptr;
  void (*close)(openslide_t*) = nullptr;
  const char* (*get_error)(openslide_t*) = nullptr;
  int32_t (*get_level_count)(openslide_t*) = nullptr;
  void (*get_level_dimensions)(openslide_t*, int32_t, int64_t*, int64_t*) = nullptr;
  double (*get_level_downsample)(openslide_t*, int32_t) = nullptr;
  int32_t (*get_best_level_for_downsample)(openslide_t*, double) = nullptr;
  void (*read_region)(openslide_t*, uint32_t*, int64_t, int64_t, int32_t, int64_t, int64_t) = nullptr;
  const char* const* (*get_property_names)(openslide_t*) = nullptr;
  const char* (*get_property_value)(openslide_t*, const char*) = nullptr;
  const char* (*detect_vendor)(const char*) = nullptr;
  // Associated images (label, macro, thumbnail): in every OpenSlide this addon supports.
  const char* const* (*get_associated_image_names)(openslide_t*) = nullptr;
  void (*get_associated_image_dimensions)(openslide_t*, const char*, int64_t*, int64_t*) = nullptr;
  void (*read_associated_image)(openslide_t*, const char*, uint32_t*) = nullptr;
  // OpenSlide 4.0 and later only (null on 3.4): the slide's ICC colour profile.
  int64_t (*get_icc_profile_size)(openslide_t*) = nullptr;
  // OpenSlide 4.0 and later only (null on 3.4): a tile cache shared by several slides.
  using openslide_cache_t = void;
  openslide_cache_t* (*cache_create)(size_t capacity) = nullptr;
  void (*set_cache)(openslide_t*, openslide_cache_t*) = nullptr;
};

/**
 * Libraries to try before the system's (e.g. PyPI openslide-bin's libopenslide.so.1, OpenSlide 4): takes effect only
 * before the first openslide_api() call. Order of the search: G2L_OPENSLIDE_LIB, these, then the usual sonames.
 */
void set_openslide_candidates(std::vector<std::string> paths);

/** The loaded API, or null with `error` set to why (library missing, symbol missing). Thread-safe, loads once. */
const OpenSlideApi* openslide_api(std::string* error);

/** The library openslide_api() loaded (as named to dlopen), or "" when none. */
std::string openslide_library();

}  // namespace g2l::slides
