// g2l engine: distillation (the log-sum loss, the optimiser and the Distiller) on HostTensors, no torch headers.
//
// Usage:
//   g2l::LossOptions opts;                                         // alpha 4, reduction "batch", BN eps 1e-4
//   g2l::LossResult r = g2l::log_sum_loss_with_grads(zs, zt, W, b, opts, "cpu");
//   // r.loss, r.grad_student (B,Ds), r.grad_weight (Dt,Ds), r.grad_bias (Dt), in the inputs' dtype
//
//   g2l::DistillerConfig cfg;  cfg.teacher = "/models/h-optimus-0";  cfg.student = "/models/hibou-l";
//   cfg.total_steps = 10000;
//   auto d = g2l::Distiller::create(cfg);
//   g2l::StepResult s = d->step(tiles_u8_b256x256x3);             // loss, lr, wd, grad norm
//   d->save("run/checkpoints/step-100");  d->export_student("run/student");
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "g2l/augment.h"
#include "g2l/engine.h"

namespace g2l {

// ---------------------------------------------------------------------------------------------------------------
// The log-sum loss
// ---------------------------------------------------------------------------------------------------------------

struct LossOptions {
  double alpha = 4.0;
  std::string reduction = "batch";  // "batch": log of the total sum; "sample": mean over samples of log row sums
  double bn_eps = 1e-4;
  bool teacher_bn = true;
};

struct LossResult {
  double loss = 0.0;
  HostTensor grad_student;  // (B,Ds)
  HostTensor grad_weight;   // (Dt,Ds)
  HostTensor grad_bias;     // (Dt)
};

/**
 * Loss and gradients of log-sum(BN(zs W^T + b), BN(zt)) for zs (B,Ds), zt (B,Dt), W (Dt,Ds), b (Dt), all float32
 * or all float64 (computed in that dtype), on `device`.
 */
LossResult log_sum_loss_with_grads(const HostTensor& zs, const HostTensor& zt, const HostTensor& weight,
                                   const HostTensor& bias, const LossOptions& options, const std::string& device);

// ---------------------------------------------------------------------------------------------------------------
// The optimiser: AdamW with cosine schedules of learning rate and weight decay
// ---------------------------------------------------------------------------------------------------------------

struct OptimizerConfig {
  double lr = 1e-4;               // peak learning rate (after warm-up)
  double final_lr = 0.0;          // at the last planned step
  double weight_decay = 0.05;
  double final_weight_decay = 0.0;
  int64_t warmup_steps = 0;       // linear warm-up of the learning rate: lr (s+1)/warmup_steps at step s
  int64_t total_steps = 1;        // the planned steps: the cosines (torch's CosineAnnealingLR, T_max = the steps
                                  // after warm-up) run from their start values to the final ones
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double clip_grad_norm = 0.0;    // 0: no clipping; else the total L2 norm is clipped to this value
};

/** The values of the schedules at a step (0-based). */
struct ScheduleValues {
  double lr = 0.0;
  double weight_decay = 0.0;
};
ScheduleValues schedule_at(const OptimizerConfig& config, int64_t step);

/** Whether a checkpoint key takes weight decay: not biases, norms, LayerScale, tokens or position embeddings. */
bool takes_weight_decay(const std::string& key, const std::vector<int64_t>& shape);

struct OptimizerTrace {
  std::vector<std::vector<HostTensor>> params;  // after each step, in the order given
  std::vector<ScheduleValues> schedule;         // used at each step
  std::vector<double> grad_norm;                // before clipping
};

/**
 * Runs the engine's AdamW on float32 parameters named by checkpoint keys, with grads[step][i] as the gradient of
 * parameter i at each step: the reference the tests hold against torch.optim.AdamW.
 */
OptimizerTrace run_optimizer(const std::vector<std::string>& names, const std::vector<HostTensor>& params,
                             const std::vector<std::vector<HostTensor>>& grads, const OptimizerConfig& config);

}  // namespace g2l
