// AdamW and its schedules (see optim.h), plus the HostTensor entry point the tests hold against torch.optim.AdamW.
#include "train/optim.h"

#include <cmath>
#include <set>

#include "runtime/tensor_bridge.h"

namespace g2l {

// ---------------------------------------------------------------------------------------------------------------
// Schedules
// ---------------------------------------------------------------------------------------------------------------

static double cosine(double start, double end, int64_t k, int64_t k_max) {
  // torch.optim.lr_scheduler.CosineAnnealingLR's closed form: end + (start - end)(1 + cos(pi k / k_max)) / 2
  if (k_max <= 0) return start;
  if (k > k_max) k = k_max;
  return end + (start - end) * (1.0 + std::cos(M_PI * static_cast<double>(k) / static_cast<double>(k_max))) / 2.0;
}

ScheduleValues schedule_at(const OptimizerConfig& c, int64_t step) {
  if (step < 0) step = 0;
  ScheduleValues v;
  if (step < c.warmup_steps) {
    v.lr = c.lr * static_cast<double>(step + 1) / static_cast<double>(c.warmup_steps);
  } else {
    v.lr = cosine(c.lr, c.final_lr, step - c.warmup_steps, c.total_steps - c.warmup_steps);
  }
  v.weight_decay = cosine(c.weight_decay, c.final_weight_decay, step, c.total_steps);
  return v;
}

bool takes_weight_decay(const std::string& key, const std::vector<int64_t>& shape) {
  // 1-D tensors are biases, norm scales and LayerScale gammas in every supported layout; the rest by name (timm
  // cls_token/reg_token/pos_embed, HF embeddings.cls_token/register_tokens/position_embeddings, layer_scale).
  if (shape.size() <= 1) return false;
  static const char* kNoDecay[] = {"bias", "norm", "token",       "pos_embed", "position_embeddings",
                                   "ls1.", "ls2.", "layer_scale", "gamma",     "lambda1"};
  for (const char* pattern : kNoDecay) {
    if (key.find(pattern) != std::string::npos) return false;
  }
  return true;
}

// ---------------------------------------------------------------------------------------------------------------
// AdamW
// ---------------------------------------------------------------------------------------------------------------

AdamW::AdamW(std::vector<std::pair<std::string, at::Tensor>> params, OptimizerConfig config, const std::string& fused)
    : config_(config), fused_(fused) {
  if (fused_ != "auto" && fused_ != "on" && fused_ != "off") {
    throw Error("AdamW: fusedAdamw must be auto, on or off, got '" + fused_ + "'");
  }
  std::set<std::string> seen;
  for (auto& [key, param] : params) {
    if (!seen.insert(key).second) throw Error("AdamW: parameter key '" + key + "' appears twice");
    at::Tensor p = param;
    slots_.push_back({key, p, at::zeros_like(p, at::MemoryFormat::Contiguous),
                      at::zeros_like(p, at::MemoryFormat::Contiguous), takes_weight_decay(key, p.sizes().vec())});
  }
}

void AdamW::zero_grad() {
  for (auto& s : slots_) {
    at::Tensor& g = s.param.mutable_grad();
    if (g.defined()) g.zero_();
  }
}

bool AdamW::use_fused(const at::Tensor& any_param) const {
  // "auto": fused on CUDA (float32 parameters), foreach on the CPU, whose results the tests hold against
  // torch.optim.AdamW's default (foreach) path; "on" / "off" force one (test/distill/optim.test.ts runs both).
  if (fused_ == "on") return true;
  if (fused_ == "off") return false;
  return any_param.is_cuda();
}

at::Tensor AdamW::step(int64_t step) {
  at::NoGradGuard no_grad;
  const ScheduleValues sched = schedule_at(config_, step);
  std::vector<at::Tensor> params, grads, exp_avg, exp_avg_sq, decayed;
  for (auto& s : slots_) {
    at::Tensor& g = s.param.mutable_grad();
    if (!g.defined()) g = at::zeros_like(s.param);
    params.push_back(s.param);
    grads.push_back(g);
    exp_avg.push_back(s.exp_avg);
    exp_avg_sq.push_back(s.exp_avg_sq);
    if (s.decay) decayed.push_back(s.param);
  }
  if (params.empty()) return at::zeros({});
  // Total L2 norm, as torch.nn.utils.clip_grad_norm_ computes it (and scales by max/(norm + 1e-6) when above max).
  std::vector<at::Tensor> norms = at::_foreach_norm(grads, 2);
  at::Tensor grad_norm = at::stack(norms).norm();
  if (config_.clip_grad_norm > 0.0) {
    at::Tensor coef = (config_.clip_grad_norm / (grad_norm + 1e-6)).clamp_max(1.0);
    at::_foreach_mul_(grads, coef);
  }

  updates_ += 1;
  const double lr = sched.lr, wd = sched.weight_decay, b1 = config_.beta1, b2 = config_.beta2;
  if (use_fused(params.front())) {
    // libtorch's fused AdamW (what torch.optim.AdamW(fused=True) runs): one pass over parameter, gradient and both
    // moments per tensor instead of eight. It reads the step count from a device tensor (no host synchronisation).
    if (!step_count_.defined() || step_count_.device() != params.front().device()) {
      step_count_ = at::zeros({}, params.front().options().dtype(at::kFloat));
    }
    step_count_.fill_(static_cast<double>(updates_));
    std::vector<at::Tensor> p[2], g[2], m[2], v[2], steps[2];
    for (size_t i = 0; i < slots_.size(); ++i) {
      const int group = slots_[i].decay ? 1 : 0;
      p[group].push_back(params[i]);
      g[group].push_back(grads[i]);
      m[group].push_back(exp_avg[i]);
      v[group].push_back(exp_avg_sq[i]);
      steps[group].push_back(step_count_);
    }
    for (int group = 0; group < 2; ++group) {
      if (p[group].empty()) continue;
      at::_fused_adamw_(p[group], g[group], m[group], v[group], /*max_exp_avg_sqs=*/{}, steps[group], lr, b1, b2,
                        group == 1 ? wd : 0.0, config_.eps, /*amsgrad=*/false, /*maximize=*/false);
    }
    return grad_norm;
  }
  if (!decayed.empty() && wd != 0.0) at::_foreach_mul_(decayed, 1.0 - lr * wd);
  at::_foreach_lerp_(exp_avg, grads, 1.0 - b1);
  at::_foreach_mul_(exp_avg_sq, b2);
  at::_foreach_addcmul_(exp_avg_sq, grads, grads, 1.0 - b2);
  const double bias_correction1 = 1.0 - std::pow(b1, static_cast<double>(updates_));
  const double bias_correction2 = 1.0 - std::pow(b2, static_cast<double>(updates_));
  const double step_size = lr / bias_correction1;
  std::vector<at::Tensor> denom = at::_foreach_sqrt(exp_avg_sq);
  at::_foreach_div_(denom, std::sqrt(bias_correction2));
  at::_foreach_add_(denom, config_.eps);
  at::_foreach_addcdiv_(params, exp_avg, denom, -step_size);
  return grad_norm;
}

std::map<std::string, at::Tensor> AdamW::state_dict() const {
  std::map<std::string, at::Tensor> out;
  for (const auto& s : slots_) {
    out["exp_avg/" + s.key] = s.exp_avg;
    out["exp_avg_sq/" + s.key] = s.exp_avg_sq;
  }
  out["updates"] = at::tensor({updates_}, at::kLong);
  return out;
}

void AdamW::load_state_dict(const std::map<std::string, at::Tensor>& state) {
  at::NoGradGuard no_grad;
  auto get = [&](const std::string& key, const at::Tensor& like) {
    auto it = state.find(key);
    if (it == state.end()) throw Error("optimiser state: missing '" + key + "': the checkpoint is not of this run");
    if (it->second.sizes() != like.sizes()) {
      throw Error("optimiser state: '" + key + "' has shape " + c10::str(it->second.sizes()) + ", expected " +
                  c10::str(like.sizes()));
    }
    return it->second;
  };
  for (auto& s : slots_) {
    s.exp_avg.copy_(get("exp_avg/" + s.key, s.exp_avg));
    s.exp_avg_sq.copy_(get("exp_avg_sq/" + s.key, s.exp_avg_sq));
  }
  auto it = state.find("updates");
  if (it == state.end()) throw Error("optimiser state: missing 'updates'");
  updates_ = it->second.item<int64_t>();
}

}  // namespace g2l
