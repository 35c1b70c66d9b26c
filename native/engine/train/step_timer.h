// Per-phase timing of the distill step, for benchmarks (G2L_STEP_TIMING=1; off by default, and then free).
//
// On CUDA the phases are timed with CUDA events recorded on the current stream, read once at the end of the step
// (one extra synchronisation, only when timing is on); on the CPU with a steady clock. One line per step goes to
// stderr: "g2l-step-timing step=N device=cuda augment=.. teacher=.. ... total=.. (ms)". benchmarks/gpu.mjs reads it.
#pragma once

#include <ATen/ATen.h>
#ifdef G2L_WITH_CUDA
#include <ATen/cuda/CUDAEvent.h>
#endif

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "runtime/instrument.h"

namespace g2l {

class StepTimer {
 public:
  explicit StepTimer(const at::Device& device) : cuda_(device.is_cuda()) {
    static const bool enabled = instrument_flag("G2L_STEP_TIMING");
    on_ = enabled;
    if (on_) mark("start");
  }

  /** Ends the phase that began at the previous mark; `name` names the phase that ends here. */
  void mark(const char* name) {
    if (!on_) return;
    names_.emplace_back(name);
#ifdef G2L_WITH_CUDA
    if (cuda_) {
      events_.push_back(std::make_unique<at::cuda::CUDAEvent>(cudaEventDefault));
      events_.back()->record();
      return;
    }
#endif
    clocks_.push_back(std::chrono::steady_clock::now());
  }

  /** Prints the step's phases (waits for the device once). */
  void report(int64_t step) {
    if (!on_ || names_.size() < 2) return;
    std::string line = "g2l-step-timing step=" + std::to_string(step) + " device=" + (cuda_ ? "cuda" : "cpu");
    double total = 0;
    for (size_t i = 1; i < names_.size(); ++i) {
      const double ms = elapsed_ms(i - 1, i);
      total += ms;
      char buf[64];
      std::snprintf(buf, sizeof buf, " %s=%.3f", names_[i].c_str(), ms);
      line += buf;
    }
    char buf[64];
    std::snprintf(buf, sizeof buf, " total=%.3f\n", total);
    line += buf;
    std::fputs(line.c_str(), stderr);
    std::fflush(stderr);
  }

 private:
  double elapsed_ms(size_t a, size_t b) {
#ifdef G2L_WITH_CUDA
    if (cuda_) {
      events_[b]->synchronize();
      return events_[a]->elapsed_time(*events_[b]);
    }
#endif
    return std::chrono::duration<double, std::milli>(clocks_[b] - clocks_[a]).count();
  }

  bool cuda_;
  bool on_ = false;
  std::vector<std::string> names_;
  std::vector<std::chrono::steady_clock::time_point> clocks_;
#ifdef G2L_WITH_CUDA
  std::vector<std::unique_ptr<at::cuda::CUDAEvent>> events_;
#endif
};

}  // namespace g2l
