// Data parallelism in the addon: reading a DistConfig from JS (for Distiller.create's `dist` key). Converts only; the
// engine does the work (g2l/dist.h).
#pragma once

#include <napi.h>

#include "g2l/dist.h"

namespace g2l::addon {

/**
 * { rank, worldSize, localRank, masterAddr, masterPort, backend, timeoutMs, bucketBytes } -> DistConfig; missing keys
 * keep the engine's defaults, `device` is the caller's (the Distiller's own device). Throws a TypeError naming a key
 * of the wrong type.
 */
DistConfig dist_config_from_js(const Napi::Object& o, const std::string& device);

}  // namespace g2l::addon
