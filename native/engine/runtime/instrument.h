// The engine's instrumentation variables: the only G2L_* environment it reads. None changes a result; every choice
// that does is a field of the run's configuration (g2l/distill.h DistillerConfig, g2l/kernels.h KernelOptions).
// docs/gpu.md lists them:
//   G2L_STEP_TIMING=1          one line of phase times per step on stderr (step_timer.h)
//   G2L_PROFILE=<prefix>       a kernel-level profile of one step (step_profile.h), G2L_PROFILE_STEP=<n> which one
//   G2L_DIST_TRACE=1           one line per step on stderr about the gradient all-reduce's overlap (dist.h)
// A flag is on for "1", "true" or "on" and off for anything else (unset, "", "0", "false", ...).
#pragma once

#include <cstdlib>
#include <string>

namespace g2l {

/** The variable's value, "" when unset. */
inline std::string instrument_value(const char* name) {
  const char* v = std::getenv(name);
  return v == nullptr ? std::string() : std::string(v);
}

/** Whether the flag variable is on ("1", "true" or "on"). */
inline bool instrument_flag(const char* name) {
  const std::string v = instrument_value(name);
  return v == "1" || v == "true" || v == "on";
}

}  // namespace g2l
