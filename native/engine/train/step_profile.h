// Kernel-level profile of one distill step, for benchmarks (G2L_PROFILE; off by default, and then free).
//
//   G2L_PROFILE=<prefix>     profile one step with the libtorch (Kineto) profiler and write
//                              <prefix>.trace.json   the full trace (chrome://tracing, Perfetto, TensorBoard)
//                              <prefix>.kernels.tsv  one row per (device, name): calls, total ms, mean us, share of
//                                                    the device's total; sorted by total time. On CUDA the "cuda"
//                                                    rows are kernels and copies (exclusive device time, they add up
//                                                    to the step's busy time); "cpu" rows are ops and runtime calls,
//                                                    whose times include the ops they call.
//   G2L_PROFILE_STEP=<n>     which step of the process (0-based count of step() calls; default 2, after warm-up)
//
// Files are written to a temporary name and renamed. benchmarks/gpu.mjs profiles its engine variants this way.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <memory>
#include <string>

namespace g2l {

class StepProfiler {
 public:
  /** Starts the profiler if G2L_PROFILE is set and `call` (this process's step count) is G2L_PROFILE_STEP. */
  StepProfiler(const at::Device& device, int64_t call);
  ~StepProfiler();
  StepProfiler(const StepProfiler&) = delete;
  StepProfiler& operator=(const StepProfiler&) = delete;

  /** Stops the profiler (after the device finished the step) and writes the files. Throws g2l::Error on I/O. */
  void finish();

 private:
  bool on_ = false;
  bool cuda_ = false;
  std::string prefix_;
};

}  // namespace g2l
