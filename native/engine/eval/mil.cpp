// ABMIL (g2l/mil.h): libtorch ops and autograd, in the parameters' dtype.
#include "g2l/mil.h"

#include <torch/torch.h>

#include <cmath>
#include <limits>

#include "runtime/tensor_bridge.h"

namespace g2l {

namespace {

const char* kNames[] = {"fc.weight",          "fc.bias",          "attention_a.weight", "attention_a.bias",
                        "attention_b.weight", "attention_b.bias", "attention_c.weight", "attention_c.bias",
                        "classifier.weight",  "classifier.bias"};

struct Model {
  std::map<std::string, at::Tensor> p;
  at::ScalarType dtype = at::kFloat;
  at::Device device = at::kCPU;
};

Model to_model(const MilParams& params, const std::string& device, bool trainable) {
  Model m;
  m.device = parse_device(device);
  for (const char* name : kNames) {
    auto it = params.find(name);
    if (it == params.end()) throw Error(std::string("ABMIL: parameter ") + name + " is missing");
    at::Tensor t = view_as_aten(it->second).to(m.device, /*non_blocking=*/false, /*copy=*/true);
    if (!t.is_floating_point()) throw Error(std::string("ABMIL: parameter ") + name + " must be float32 or float64");
    m.p[name] = trainable ? t.set_requires_grad(true) : t;
  }
  m.dtype = m.p["fc.weight"].scalar_type();
  const int64_t L = m.p["fc.weight"].size(0), A = m.p["attention_a.weight"].size(0);
  auto expect = [&](const char* name, std::vector<int64_t> shape) {
    if (m.p[name].sizes().vec() != shape) {
      throw Error(std::string("ABMIL: parameter ") + name + " has shape " + c10::str(m.p[name].sizes()) +
                  ", expected " + c10::str(at::IntArrayRef(shape)));
    }
  };
  expect("fc.bias", {L});
  expect("attention_a.bias", {A});
  expect("attention_b.weight", {A, L});
  expect("attention_b.bias", {A});
  expect("attention_c.weight", {1, A});
  expect("attention_c.bias", {1});
  if (m.p["classifier.weight"].dim() != 2 || m.p["classifier.weight"].size(1) != L)
    throw Error("ABMIL: classifier.weight must be (K, L)");
  expect("classifier.bias", {m.p["classifier.weight"].size(0)});
  for (auto& [name, t] : m.p) {
    if (t.scalar_type() != m.dtype) throw Error("ABMIL: every parameter must have the same dtype");
  }
  return m;
}

/** The bags' features on the model's device and dtype, checked against the offsets. */
at::Tensor bag_features(const Model& m, const Bags& bags) {
  at::Tensor x = view_as_aten(bags.features);
  if (x.dim() != 2 || x.size(1) != m.p.at("fc.weight").size(1)) {
    throw Error("ABMIL: features must be (N, " + std::to_string(m.p.at("fc.weight").size(1)) + ")");
  }
  if (bags.offsets.size() < 2 || bags.offsets.front() != 0 || bags.offsets.back() != x.size(0)) {
    throw Error("ABMIL: bag offsets must run from 0 to the number of feature rows");
  }
  for (size_t b = 1; b < bags.offsets.size(); ++b) {
    if (bags.offsets[b] <= bags.offsets[b - 1]) throw Error("ABMIL: every bag needs at least one tile");
  }
  return x.to(m.device, m.dtype);
}

/** Logits (K) of rows [begin, end) of x. */
at::Tensor forward_bag(const Model& m, const at::Tensor& x, int64_t begin, int64_t end) {
  const auto& p = m.p;
  at::Tensor h = at::relu(at::linear(x.narrow(0, begin, end - begin), p.at("fc.weight"), p.at("fc.bias")));
  at::Tensor a = at::tanh(at::linear(h, p.at("attention_a.weight"), p.at("attention_a.bias")));
  at::Tensor g = at::sigmoid(at::linear(h, p.at("attention_b.weight"), p.at("attention_b.bias")));
  at::Tensor s = at::linear(a * g, p.at("attention_c.weight"), p.at("attention_c.bias")).squeeze(1);  // (N)
  at::Tensor alpha = at::softmax(s, 0);
  at::Tensor z = at::matmul(alpha, h);  // (L)
  return at::linear(z, p.at("classifier.weight"), p.at("classifier.bias"));
}

/** Mean cross-entropy over the bags `which` (all when empty). */
at::Tensor mean_loss(const Model& m, const at::Tensor& x, const Bags& bags, const std::vector<int64_t>& which) {
  const int64_t B = static_cast<int64_t>(bags.offsets.size()) - 1;
  const int64_t K = m.p.at("classifier.weight").size(0);
  std::vector<int64_t> all;
  const std::vector<int64_t>* list = &which;
  if (which.empty()) {
    for (int64_t b = 0; b < B; ++b) all.push_back(b);
    list = &all;
  }
  if (bags.labels.size() != static_cast<size_t>(B)) throw Error("ABMIL: one label per bag is needed to train");
  at::Tensor total = at::zeros({}, at::TensorOptions().dtype(m.dtype).device(m.device));
  for (int64_t b : *list) {
    if (b < 0 || b >= B) throw Error("ABMIL: the plan names bag " + std::to_string(b) + " of " + std::to_string(B));
    const int64_t y = bags.labels[b];
    if (y < 0 || y >= K)
      throw Error("ABMIL: label " + std::to_string(y) + " outside the " + std::to_string(K) + " classes");
    at::Tensor logits = forward_bag(m, x, bags.offsets[b], bags.offsets[b + 1]);
    total = total - at::log_softmax(logits, 0)[y];
  }
  return total / static_cast<double>(list->size());
}

MilParams to_params(const Model& m) {
  MilParams out;
  for (const auto& [name, t] : m.p) out[name] = to_host(t.detach().to(at::kCPU).contiguous());
  return out;
}

}  // namespace

MilLossResult abmil_loss(const MilParams& params, const Bags& bags, const std::string& device) {
  return with_torch_errors([&] {
    Model m = to_model(params, device, /*trainable=*/true);
    at::Tensor loss = mean_loss(m, bag_features(m, bags), bags, {});
    loss.backward();
    MilLossResult r;
    r.loss = loss.item<double>();
    for (const auto& [name, t] : m.p) r.grads[name] = to_host(t.grad().to(at::kCPU).contiguous());
    return r;
  });
}

HostTensor abmil_predict(const MilParams& params, const Bags& bags, const std::string& device) {
  return with_torch_errors([&] {
    Model m = to_model(params, device, /*trainable=*/false);
    c10::InferenceMode guard;
    at::Tensor x = bag_features(m, bags);
    std::vector<at::Tensor> rows;
    for (size_t b = 0; b + 1 < bags.offsets.size(); ++b)
      rows.push_back(at::softmax(forward_bag(m, x, bags.offsets[b], bags.offsets[b + 1]), 0));
    return to_host(at::stack(rows).to(at::kCPU).contiguous());
  });
}

MilTrainResult abmil_train(const MilParams& init, const Bags& train, const Bags& val, const MilTrainPlan& plan,
                           const std::string& device) {
  return with_torch_errors([&] {
    Model m = to_model(init, device, /*trainable=*/true);
    at::Tensor xt = bag_features(m, train);
    const bool has_val = val.offsets.size() > 1;
    at::Tensor xv = has_val ? bag_features(m, val) : at::Tensor();
    size_t total_steps = 0;
    for (const auto& e : plan.epochs) total_steps += e.size();
    if (plan.lr.size() != total_steps) throw Error("ABMIL: the plan needs one learning rate per step");
    // AdamW as torch.optim.AdamW (decoupled decay, bias-corrected moments), in the parameters' dtype.
    const double b1 = 0.9, b2 = 0.999, eps = 1e-8;
    std::map<std::string, at::Tensor> m1, m2;
    for (auto& [name, t] : m.p) {
      m1[name] = at::zeros_like(t).detach();
      m2[name] = at::zeros_like(t).detach();
    }
    MilTrainResult r;
    std::map<std::string, at::Tensor> best;
    double best_val = std::numeric_limits<double>::infinity();
    int64_t since_best = 0, step = 0;
    for (size_t e = 0; e < plan.epochs.size(); ++e) {
      double sum = 0.0;
      for (const auto& bags_of_step : plan.epochs[e]) {
        for (auto& [name, t] : m.p) t.mutable_grad() = at::Tensor();
        at::Tensor loss = mean_loss(m, xt, train, bags_of_step);
        loss.backward();
        sum += loss.item<double>();
        const double lr = plan.lr[step++];
        const double bc1 = 1.0 - std::pow(b1, static_cast<double>(step)),
                     bc2 = 1.0 - std::pow(b2, static_cast<double>(step));
        at::NoGradGuard no_grad;
        for (auto& [name, t] : m.p) {
          at::Tensor g = t.grad();
          t.mul_(1.0 - lr * plan.weight_decay);
          m1[name].mul_(b1).add_(g, 1.0 - b1);
          m2[name].mul_(b2).addcmul_(g, g, 1.0 - b2);
          at::Tensor denom = (m2[name] / bc2).sqrt_().add_(eps);
          t.addcdiv_(m1[name], denom, -lr / bc1);
        }
      }
      r.train_loss.push_back(plan.epochs[e].empty() ? 0.0 : sum / static_cast<double>(plan.epochs[e].size()));
      r.epochs_run = static_cast<int64_t>(e) + 1;
      if (!has_val) continue;
      double v;
      {
        at::NoGradGuard no_grad;
        v = mean_loss(m, xv, val, {}).item<double>();
      }
      r.val_loss.push_back(v);
      if (v < best_val) {
        best_val = v;
        r.best_epoch = static_cast<int64_t>(e);
        since_best = 0;
        for (auto& [name, t] : m.p) best[name] = t.detach().clone();
      } else if (plan.patience > 0 && ++since_best >= plan.patience) {
        break;
      }
    }
    if (has_val && !best.empty()) {
      for (auto& [name, t] : m.p) t.detach().copy_(best[name]);
    } else {
      r.best_epoch = r.epochs_run - 1;
    }
    r.params = to_params(m);
    return r;
  });
}

}  // namespace g2l
