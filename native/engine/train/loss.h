// The log-sum distillation loss (engine-internal API).
//
// From Miles & Mikolajczyk, "Understanding the Role of the Projector in Knowledge Distillation" (AAAI 2024), which
// G2L adopts (docs/method.md, "Constants"):
//   p   = z_s W^T + b                                  projector output, (B,Dt)
//   f_s = BN(p),  f_t = BN(z_t)                        BatchNorm1d, no affine, eps 1e-4, batch statistics
//   loss = log( sum_{i,j} |f_s - f_t|_{ij}^alpha )     reduction "batch", alpha = 4
//   loss = mean_i log( sum_j |f_s - f_t|_{ij}^alpha )  reduction "sample"
// The teacher side's BN can be switched off (f_t = z_t).
//
// log_sum_loss() is a torch::autograd::Function from the projector output p to the scalar loss: its forward
// computes both sides' BN statistics, the alpha-power sums and the log; its backward returns dL/dp (the teacher side
// gets no gradient). On CUDA float32 inputs both run as fused kernels (cuda/loss.cu); elsewhere (CPU, float64) the
// same formulas run as libtorch ops in the input dtype. The projector Linear in front of it is ordinary autograd.
#pragma once

#include <ATen/ATen.h>

#include <string>

#include "dist/cross_rank.h"

namespace g2l {

enum class LossReduction { Batch, Sample };

struct LogSumLossOptions {
  double alpha = 4.0;  // the exponent of |f_s - f_t| (Miles & Mikolajczyk use 4)
  LossReduction reduction = LossReduction::Batch;
  double bn_eps = 1e-4;    // BatchNorm1d eps of both sides
  bool teacher_bn = true;  // normalise the teacher features too
  // Data parallelism (dist.h): when set, the BN statistics, the power sum and the batch size are summed across ranks,
  // so each rank gets the global loss and dL/dp for its own rows (the ranks' parameter gradients then add up to the
  // global gradient). Null: this process's batch is the whole batch, computed exactly as without it.
  c10::intrusive_ptr<CrossRankSum> cross_rank;
};

/** "batch" | "sample" -> LossReduction, with an error naming the value otherwise. */
LossReduction parse_loss_reduction(const std::string& name);

/**
 * projected: (B,Dt) projector output p (requires grad in training); teacher: (B,Dt) teacher features (no grad).
 * Both float32 or both float64, same device. Returns the scalar loss (0-dim, the inputs' dtype).
 */
at::Tensor log_sum_loss(const at::Tensor& projected, const at::Tensor& teacher, const LogSumLossOptions& options);

/** The whole loss from student features: projector Linear (weight (Dt,Ds), bias (Dt)) then log_sum_loss. */
at::Tensor log_sum_loss(const at::Tensor& student, const at::Tensor& teacher, const at::Tensor& weight,
                        const at::Tensor& bias, const LogSumLossOptions& options);

}  // namespace g2l
