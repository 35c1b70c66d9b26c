// AdamW with cosine schedules of learning rate and weight decay (engine-internal API).
//
// G2L (docs/method.md, "Constants"): AdamW, lr 1e-4, weight decay 0.05, both annealed by a cosine to 0 over the
// planned steps; student and projector train. The update is torch.optim.AdamW's (decoupled decay
// p <- p (1 - lr wd), bias-corrected moments), written with libtorch's multi-tensor (_foreach) ops so that a step is
// a handful of launches on CUDA and never reads a value back to the host. Parameters whose checkpoint keys name
// biases, norms, LayerScale, tokens or position embeddings take no weight decay (takes_weight_decay).
#pragma once

#include <ATen/ATen.h>

#include <map>
#include <string>
#include <vector>

#include "g2l/distill.h"

namespace g2l {

class AdamW {
 public:
  /**
   * params: (checkpoint key, leaf tensor with requires_grad) pairs; keys must be unique. fused (KernelOptions::
   * fused_adamw): "auto" libtorch's fused AdamW kernel on CUDA, the foreach path on the CPU; "on" / "off" force it.
   */
  AdamW(std::vector<std::pair<std::string, at::Tensor>> params, OptimizerConfig config,
        const std::string& fused = "auto");

  /**
   * One update from the gradients in each parameter's .grad() at 0-based schedule step `step` (missing grads count
   * as zero). Clips when configured. Returns the total gradient L2 norm before clipping, as a 0-dim device tensor.
   */
  at::Tensor step(int64_t step);

  void zero_grad();

  /** Moments and update count, keyed "exp_avg/<key>", "exp_avg_sq/<key>", "updates". */
  std::map<std::string, at::Tensor> state_dict() const;
  void load_state_dict(const std::map<std::string, at::Tensor>& state);

  const OptimizerConfig& config() const { return config_; }
  void set_config(const OptimizerConfig& config) { config_ = config; }
  int64_t updates() const { return updates_; }

 private:
  struct Slot {
    std::string key;
    at::Tensor param, exp_avg, exp_avg_sq;
    bool decay;
  };
  bool use_fused(const at::Tensor& any_param) const;

  std::vector<Slot> slots_;
  at::Tensor step_count_;  // the fused kernel's step count (one float on the parameters' device)
  OptimizerConfig config_;
  std::string fused_;
  int64_t updates_ = 0;  // bias corrections use updates_ + 1, as torch's per-parameter `step`
};

}  // namespace g2l
