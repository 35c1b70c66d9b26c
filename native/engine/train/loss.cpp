// The log-sum distillation loss as a torch::autograd::Function (math in loss.h): fused kernels on CUDA float32,
// the same formulas as libtorch ops on the CPU and for float64.
#ifdef G2L_WITH_CUDA
#include <c10/cuda/CUDAStream.h>

#include "kernels/cuda/kernels.h"
#endif

#include <torch/torch.h>

#include "g2l/distill.h"
#include "train/loss.h"
#include "runtime/tensor_bridge.h"

namespace g2l {

LossReduction parse_loss_reduction(const std::string& name) {
  if (name == "batch") return LossReduction::Batch;
  if (name == "sample") return LossReduction::Sample;
  throw Error("loss reduction must be \"batch\" or \"sample\", got \"" + name + "\"");
}

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// BatchNorm1d statistics in training mode: per-column mean and 1/sqrt(biased variance + eps); (B,D) -> (D), (D).
std::pair<at::Tensor, at::Tensor> column_stats(const at::Tensor& x, double eps) {
  at::Tensor mean = x.mean(0);
  at::Tensor var = (x - mean).square().mean(0);
  return {mean, (var + eps).rsqrt()};
}

// |x|^alpha and its derivative alpha |x|^(alpha-1) sign(x), exact for the common even powers.
at::Tensor abs_pow(const at::Tensor& x, double alpha) {
  if (alpha == 4.0) return x.square().square();
  if (alpha == 2.0) return x.square();
  return x.abs().pow(alpha);
}
at::Tensor abs_pow_grad(const at::Tensor& x, double alpha) {
  if (alpha == 4.0) return x.pow(3) * 4.0;
  if (alpha == 2.0) return x * 2.0;
  return x.abs().pow(alpha - 1.0) * x.sign() * alpha;
}

// ---------------------------------------------------------------------------------------------------------------
// Data parallelism (cross_rank.h): the same formulas over the global batch of all ranks. Each rank holds its rows;
// column sums, then centred squares, then the power sum are summed across ranks (three small collectives forward,
// one backward), so N ranks with batch B compute what one process with batch N*B computes.
// ---------------------------------------------------------------------------------------------------------------

struct GlobalForward {
  at::Tensor mean_p, rstd_p, mean_t, rstd_t, row_sum, count, total, loss;
};

// p, t: (B,D) this rank's rows -> global statistics (D), this rank's row sums (B), the global count and sum ((1)),
// the global loss ().
GlobalForward global_forward(const at::Tensor& p, const at::Tensor& t, double alpha, bool sample, double eps,
                             bool teacher_bn, const CrossRankSum& cross) {
  GlobalForward g;
  const int64_t d = p.size(1);
  g.count = at::full({1}, static_cast<double>(p.size(0)), p.options());
  at::Tensor sum_p = p.sum(0);
  at::Tensor sum_t = teacher_bn ? t.sum(0) : at::zeros({d}, t.options());
  cross.sum_({sum_p, sum_t, g.count});
  g.mean_p = sum_p / g.count;
  at::Tensor sq_p = (p - g.mean_p).square().sum(0);
  if (teacher_bn) {
    g.mean_t = sum_t / g.count;
    at::Tensor sq_t = (t - g.mean_t).square().sum(0);
    cross.sum_({sq_p, sq_t});
    g.rstd_t = (sq_t / g.count + eps).rsqrt();
  } else {
    cross.sum_({sq_p});
    g.mean_t = at::zeros({d}, t.options());
    g.rstd_t = at::ones({d}, t.options());
  }
  g.rstd_p = (sq_p / g.count + eps).rsqrt();
  at::Tensor diff = (p - g.mean_p) * g.rstd_p - (t - g.mean_t) * g.rstd_t;  // (B,D) f_s - f_t
  g.row_sum = abs_pow(diff, alpha).sum(1);                                  // (B)
  g.total = (sample ? g.row_sum.log().sum() : g.row_sum.sum()).reshape({1});
  cross.sum_({g.total});
  g.loss = sample ? (g.total / g.count).reshape({}) : g.total.log().reshape({});
  return g;
}

// dL/dp for this rank's rows of the global loss; grad_loss is the same on every rank.
at::Tensor global_backward(const at::Tensor& p, const at::Tensor& t, double alpha, bool sample,
                           const at::Tensor& mean_p, const at::Tensor& rstd_p, const at::Tensor& mean_t,
                           const at::Tensor& rstd_t, const at::Tensor& row_sum, const at::Tensor& count,
                           const at::Tensor& total, const at::Tensor& grad_loss, const CrossRankSum& cross) {
  at::Tensor f = (p - mean_p) * rstd_p;
  at::Tensor diff = f - (t - mean_t) * rstd_t;
  at::Tensor w = sample ? (row_sum * count).reciprocal().unsqueeze(1) : total.reciprocal();
  at::Tensor g = abs_pow_grad(diff, alpha) * w;  // dL/df_s
  at::Tensor sum_g = g.sum(0), sum_gf = (g * f).sum(0);
  cross.sum_({sum_g, sum_gf});
  return (g - sum_g / count - f * (sum_gf / count)) * rstd_p * grad_loss;
}

class LogSumLossFunction : public torch::autograd::Function<LogSumLossFunction> {
 public:
  // projected, teacher: (B,D) -> () ; saves both inputs, both sides' statistics and the per-row power sums.
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& projected, const at::Tensor& teacher, double alpha,
                            int64_t reduction, double eps, bool teacher_bn,
                            const c10::intrusive_ptr<CrossRankSum>& cross_rank) {
    at::Tensor p = projected.contiguous();
    at::Tensor t = teacher.contiguous();
    const int64_t b = p.size(0), d = p.size(1);
    at::Tensor mean_p, rstd_p, mean_t, rstd_t, row_sum, loss;
    const bool sample = reduction == static_cast<int64_t>(LossReduction::Sample);
    if (cross_rank) {
      GlobalForward g = global_forward(p, t, alpha, sample, eps, teacher_bn, *cross_rank);
      ctx->save_for_backward({p, t, g.mean_p, g.rstd_p, g.mean_t, g.rstd_t, g.row_sum, g.count, g.total});
      ctx->saved_data["alpha"] = alpha;
      ctx->saved_data["sample"] = sample;
      ctx->saved_data["cross_rank"] =
          c10::IValue::make_capsule(c10::static_intrusive_pointer_cast<torch::CustomClassHolder>(cross_rank));
      return g.loss;
    }
#ifdef G2L_WITH_CUDA
    if (p.is_cuda() && p.scalar_type() == at::kFloat) {
      auto opts = p.options();
      mean_p = at::empty({d}, opts);
      rstd_p = at::empty({d}, opts);
      mean_t = at::empty({d}, opts);
      rstd_t = at::empty({d}, opts);
      row_sum = at::empty({b}, opts);
      loss = at::empty({}, opts);
      cuda::log_sum_loss_forward(p.data_ptr<float>(), t.data_ptr<float>(), b, d, static_cast<float>(alpha),
                                 static_cast<float>(eps), teacher_bn ? 1 : 0, sample ? 1 : 0, mean_p.data_ptr<float>(),
                                 rstd_p.data_ptr<float>(), mean_t.data_ptr<float>(), rstd_t.data_ptr<float>(),
                                 row_sum.data_ptr<float>(), loss.data_ptr<float>(),
                                 c10::cuda::getCurrentCUDAStream().stream());
    } else
#endif
    {
      std::tie(mean_p, rstd_p) = column_stats(p, eps);
      if (teacher_bn) {
        std::tie(mean_t, rstd_t) = column_stats(t, eps);
      } else {
        mean_t = at::zeros({d}, t.options());
        rstd_t = at::ones({d}, t.options());
      }
      at::Tensor diff = (p - mean_p) * rstd_p - (t - mean_t) * rstd_t;  // (B,D) f_s - f_t
      row_sum = abs_pow(diff, alpha).sum(1);                            // (B)
      loss = sample ? row_sum.log().mean() : row_sum.sum().log();
    }
    ctx->save_for_backward({p, t, mean_p, rstd_p, mean_t, rstd_t, row_sum});
    ctx->saved_data["alpha"] = alpha;
    ctx->saved_data["sample"] = sample;
    return loss;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    auto saved = ctx->get_saved_variables();
    const at::Tensor &p = saved[0], &t = saved[1], &mean_p = saved[2], &rstd_p = saved[3], &mean_t = saved[4],
                     &rstd_t = saved[5], &row_sum = saved[6];
    const double alpha = ctx->saved_data["alpha"].toDouble();
    const bool sample = ctx->saved_data["sample"].toBool();
    at::Tensor grad_loss = grad_outputs[0].to(p.scalar_type()).contiguous();
    const int64_t b = p.size(0), d = p.size(1);
    at::Tensor grad_p;
    if (ctx->saved_data.count("cross_rank") != 0) {
      auto cross = c10::static_intrusive_pointer_cast<CrossRankSum>(ctx->saved_data["cross_rank"].toCapsule());
      grad_p = global_backward(p, t, alpha, sample, mean_p, rstd_p, mean_t, rstd_t, row_sum, saved[7], saved[8],
                               grad_loss, *cross);
      return {grad_p, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
    }
#ifdef G2L_WITH_CUDA
    if (p.is_cuda() && p.scalar_type() == at::kFloat) {
      grad_p = at::empty_like(p);
      cuda::log_sum_loss_backward(p.data_ptr<float>(), t.data_ptr<float>(), b, d, static_cast<float>(alpha),
                                  sample ? 1 : 0, mean_p.data_ptr<float>(), rstd_p.data_ptr<float>(),
                                  mean_t.data_ptr<float>(), rstd_t.data_ptr<float>(), row_sum.data_ptr<float>(),
                                  grad_loss.data_ptr<float>(), grad_p.data_ptr<float>(),
                                  c10::cuda::getCurrentCUDAStream().stream());
    } else
#endif
    {
      (void)d;
      at::Tensor f = (p - mean_p) * rstd_p;  // f_s
      at::Tensor diff = f - (t - mean_t) * rstd_t;
      // w_i = dL/dS_i: 1/S (batch), 1/(B S_i) (sample)
      at::Tensor w = sample ? (row_sum * static_cast<double>(b)).reciprocal().unsqueeze(1) : row_sum.sum().reciprocal();
      at::Tensor g = abs_pow_grad(diff, alpha) * w;  // dL/df_s
      // BatchNorm backward with batch statistics: rstd (g - mean_i g - f mean_i(g f)).
      grad_p = (g - g.mean(0) - f * (g * f).mean(0)) * rstd_p * grad_loss;
    }
    return {grad_p, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

void check_pair(const at::Tensor& projected, const at::Tensor& teacher) {
  if (projected.dim() != 2 || teacher.dim() != 2 || projected.sizes() != teacher.sizes()) {
    throw Error("log_sum_loss: projector output and teacher features must both be (B,D), got " +
                c10::str(projected.sizes()) + " and " + c10::str(teacher.sizes()));
  }
  if (projected.size(0) < 2) {
    throw Error("log_sum_loss: batch statistics need at least 2 samples, got a batch of " +
                std::to_string(projected.size(0)));
  }
  if (projected.scalar_type() != teacher.scalar_type() ||
      (projected.scalar_type() != at::kFloat && projected.scalar_type() != at::kDouble)) {
    throw Error(std::string("log_sum_loss: expected float32 or float64 inputs of one dtype, got ") +
                c10::toString(projected.scalar_type()) + " and " + c10::toString(teacher.scalar_type()));
  }
  if (projected.device() != teacher.device()) throw Error("log_sum_loss: inputs are on different devices");
}

}  // namespace

at::Tensor log_sum_loss(const at::Tensor& projected, const at::Tensor& teacher, const LogSumLossOptions& options) {
  check_pair(projected, teacher);
  if (!(options.alpha >= 1.0)) throw Error("log_sum_loss: alpha must be >= 1, got " + std::to_string(options.alpha));
  if (!(options.bn_eps >= 0.0)) throw Error("log_sum_loss: bnEps must be >= 0");
  return LogSumLossFunction::apply(projected, teacher.detach(), options.alpha, static_cast<int64_t>(options.reduction),
                                   options.bn_eps, options.teacher_bn, options.cross_rank);
}

at::Tensor log_sum_loss(const at::Tensor& student, const at::Tensor& teacher, const at::Tensor& weight,
                        const at::Tensor& bias, const LogSumLossOptions& options) {
  if (student.dim() != 2 || weight.dim() != 2 || weight.size(1) != student.size(1) || bias.dim() != 1 ||
      bias.size(0) != weight.size(0)) {
    throw Error("log_sum_loss: expected zs (B,Ds), W (Dt,Ds), b (Dt), got zs " + c10::str(student.sizes()) + ", W " +
                c10::str(weight.sizes()) + ", b " + c10::str(bias.sizes()));
  }
  return log_sum_loss(at::linear(student, weight, bias), teacher, options);
}

LossResult log_sum_loss_with_grads(const HostTensor& zs, const HostTensor& zt, const HostTensor& weight,
                                   const HostTensor& bias, const LossOptions& options, const std::string& device) {
  return with_torch_errors([&] {
    at::Device dev = parse_device(device);
    auto load = [&](const HostTensor& h) {
      at::Tensor t = view_as_aten(h);
      if (t.scalar_type() != at::kFloat && t.scalar_type() != at::kDouble) {
        throw Error(std::string("logSumLoss: tensors must be float32 or float64, got ") + dtype_name(h.dtype));
      }
      return t.to(dev, /*non_blocking=*/false, /*copy=*/true);
    };
    if (zs.dtype != zt.dtype || zs.dtype != weight.dtype || zs.dtype != bias.dtype) {
      throw Error("logSumLoss: zs, zt, W and b must share one dtype (all float32 or all float64)");
    }
    at::Tensor s = load(zs).requires_grad_(true);
    at::Tensor w = load(weight).requires_grad_(true);
    at::Tensor b = load(bias).requires_grad_(true);
    at::Tensor t = load(zt);
    LogSumLossOptions o;
    o.alpha = options.alpha;
    o.reduction = parse_loss_reduction(options.reduction);
    o.bn_eps = options.bn_eps;
    o.teacher_bn = options.teacher_bn;
    at::Tensor loss = log_sum_loss(s, t, w, b, o);
    loss.backward();
    LossResult r;
    r.loss = loss.item<double>();
    r.grad_student = to_host(s.grad());
    r.grad_weight = to_host(w.grad());
    r.grad_bias = to_host(b.grad());
    return r;
  });
}

}  // namespace g2l
