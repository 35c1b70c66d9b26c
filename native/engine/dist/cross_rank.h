// Sums over the ranks of a data-parallel world (engine-internal).
//
// Statistics taken over "the batch" (the log-sum loss's two BatchNorms, its power sum, the batch size) must be taken
// over the global batch for N ranks with per-rank batch B to compute what one process with batch N*B computes. Code
// that takes such statistics accepts an optional CrossRankSum; null means one process, and the code runs exactly as
// it does without data parallelism. dist.cpp implements it over the c10d process group.
#pragma once

#include <ATen/ATen.h>
#include <ATen/core/ivalue.h>

#include <vector>

namespace g2l {

// A CustomClassHolder so that an autograd Function can keep it for its backward (ctx->saved_data, as an IValue
// capsule).
struct CrossRankSum : torch::CustomClassHolder {
  /**
   * Replaces each tensor by its sum over all ranks, in place. A collective: every rank calls it at the same point, in
   * the same order, with tensors of the same shapes and dtype (one dtype and device per call).
   */
  virtual void sum_(const std::vector<at::Tensor>& tensors) const = 0;
  virtual int world_size() const = 0;
};

}  // namespace g2l
