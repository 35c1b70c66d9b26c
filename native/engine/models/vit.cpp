// ViT forward pass for the timm and transformers DINOv2 families; see vit.h.
//
// Reference code, followed line for line where numbers depend on it:
//   timm 1.0 models/vision_transformer.py  VisionTransformer._pos_embed, Block, Attention; layers/mlp.py GluMlp;
//                                         layers/pos_embed.py resample_abs_pos_embed (bicubic, antialias=True)
//   transformers 5 models/dinov2*/modeling_dinov2*.py  Embeddings.interpolate_pos_encoding (Dinov2: bicubic;
//                                         WithRegisters: bicubic, antialias=True), Dinov2Layer, Dinov2SwiGLUFFN
#include "models/vit.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/detail/CUDAHooksInterface.h>

#include <cmath>

#include <sstream>
#include <tuple>

#include "models/attention.h"
#include "kernels/fused.h"
#include "g2l/engine.h"

namespace g2l {

namespace {

std::vector<std::string> split_key(const std::string& key) {
  std::vector<std::string> parts;
  std::stringstream in(key);
  std::string item;
  while (std::getline(in, item, '.')) parts.push_back(item);
  return parts;
}

at::Tensor layer_norm(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, double eps) {
  return at::layer_norm(x, {x.size(-1)}, w, b, eps);
}

/** (1,D,h,w) float32 -> (1,D,nh,nw) bicubic, align_corners=False, as F.interpolate(size=...) computes it. */
at::Tensor resize_bicubic(const at::Tensor& grid, int64_t nh, int64_t nw, bool antialias) {
  if (antialias) return at::_upsample_bicubic2d_aa(grid, {nh, nw}, /*align_corners=*/false, c10::nullopt, c10::nullopt);
  return at::upsample_bicubic2d(grid, {nh, nw}, /*align_corners=*/false, c10::nullopt, c10::nullopt);
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------------
// Construction: one tensor per checkpoint key, in the layout of the spec
// ---------------------------------------------------------------------------------------------------------------
at::Tensor VisionTransformerImpl::add(const std::string& key, std::vector<int64_t> shape, bool trainable) {
  std::vector<std::string> parts = split_key(key);
  torch::nn::Module* parent = this;
  std::string prefix;
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    prefix += (prefix.empty() ? "" : ".") + parts[i];
    auto it = tree_.find(prefix);
    if (it == tree_.end()) {
      auto child = std::make_shared<torch::nn::Module>(parts[i]);
      parent->register_module(parts[i], child);
      it = tree_.emplace(prefix, child).first;
    }
    parent = it->second.get();
  }
  at::Tensor t = at::empty(shape, options_);
  at::Tensor live = trainable ? parent->register_parameter(parts.back(), t) : parent->register_buffer(parts.back(), t);
  weights_.emplace_back(key, live);
  return live;
}

VisionTransformerImpl::VisionTransformerImpl(const ModelSpec& spec, at::TensorOptions options)
    : spec_(spec), options_(options) {
  const int64_t d = spec.embed_dim;
  const int64_t p = spec.patch_size;
  const int64_t r = spec.num_registers;
  const int64_t hidden = spec.mlp_hidden;
  const int64_t mlp_in = spec.mlp == "gelu" ? hidden : 2 * hidden;
  const bool hf = spec.layout == "hf";
  if (d % spec.num_heads != 0) throw Error("ViT: dim " + std::to_string(d) + " is not divisible by heads");

  if (!hf) {
    cls_ = add("cls_token", {1, 1, d});
    if (r > 0) reg_ = add("reg_token", {1, r, d});
    pos_ = add("pos_embed", {1, spec.pos_tokens(), d});
    patch_w_ = add("patch_embed.proj.weight", {d, 3, p, p});
    patch_b_ = add("patch_embed.proj.bias", {d});
  } else {
    cls_ = add("embeddings.cls_token", {1, 1, d});
    if (spec.mask_token) add("embeddings.mask_token", {1, d}, /*trainable=*/false);
    if (r > 0) reg_ = add("embeddings.register_tokens", {1, r, d});
    pos_ = add("embeddings.position_embeddings", {1, spec.pos_tokens(), d});
    patch_w_ = add("embeddings.patch_embeddings.projection.weight", {d, 3, p, p});
    patch_b_ = add("embeddings.patch_embeddings.projection.bias", {d});
  }
  for (int64_t i = 0; i < spec.depth; ++i) {
    Block b;
    const std::string n = std::to_string(i);
    if (!hf) {
      const std::string s = "blocks." + n + ".";
      b.norm1_w = add(s + "norm1.weight", {d});
      b.norm1_b = add(s + "norm1.bias", {d});
      b.qkv_w = add(s + "attn.qkv.weight", {3 * d, d});
      if (spec.qkv_bias) b.qkv_b = add(s + "attn.qkv.bias", {3 * d});
      b.proj_w = add(s + "attn.proj.weight", {d, d});
      b.proj_b = add(s + "attn.proj.bias", {d});
      if (spec.layer_scale) b.ls1 = add(s + "ls1.gamma", {d});
      b.norm2_w = add(s + "norm2.weight", {d});
      b.norm2_b = add(s + "norm2.bias", {d});
      b.fc1_w = add(s + "mlp.fc1.weight", {mlp_in, d});
      b.fc1_b = add(s + "mlp.fc1.bias", {mlp_in});
      b.fc2_w = add(s + "mlp.fc2.weight", {d, hidden});
      b.fc2_b = add(s + "mlp.fc2.bias", {d});
      if (spec.layer_scale) b.ls2 = add(s + "ls2.gamma", {d});
    } else {
      const std::string s = "encoder.layer." + n + ".";
      b.norm1_w = add(s + "norm1.weight", {d});
      b.norm1_b = add(s + "norm1.bias", {d});
      b.q_w = add(s + "attention.attention.query.weight", {d, d});
      if (spec.qkv_bias) b.q_b = add(s + "attention.attention.query.bias", {d});
      b.k_w = add(s + "attention.attention.key.weight", {d, d});
      if (spec.qkv_bias) b.k_b = add(s + "attention.attention.key.bias", {d});
      b.v_w = add(s + "attention.attention.value.weight", {d, d});
      if (spec.qkv_bias) b.v_b = add(s + "attention.attention.value.bias", {d});
      b.proj_w = add(s + "attention.output.dense.weight", {d, d});
      b.proj_b = add(s + "attention.output.dense.bias", {d});
      b.ls1 = add(s + "layer_scale1.lambda1", {d});
      b.norm2_w = add(s + "norm2.weight", {d});
      b.norm2_b = add(s + "norm2.bias", {d});
      const bool swiglu = spec.mlp == "swiglu_hf";
      b.fc1_w = add(s + (swiglu ? "mlp.weights_in.weight" : "mlp.fc1.weight"), {mlp_in, d});
      b.fc1_b = add(s + (swiglu ? "mlp.weights_in.bias" : "mlp.fc1.bias"), {mlp_in});
      b.fc2_w = add(s + (swiglu ? "mlp.weights_out.weight" : "mlp.fc2.weight"), {d, hidden});
      b.fc2_b = add(s + (swiglu ? "mlp.weights_out.bias" : "mlp.fc2.bias"), {d});
      b.ls2 = add(s + "layer_scale2.lambda1", {d});
    }
    b.ls1_live = b.ls1;
    b.ls2_live = b.ls2;
    blocks_.push_back(std::move(b));
  }
  // timm with use_fc_norm: norm is Identity and fc_norm (registered after it) normalises the pooled vector.
  const std::string final_norm = hf ? "layernorm" : spec.fc_norm ? "fc_norm" : "norm";
  norm_w_ = add(final_norm + ".weight", {d});
  norm_b_ = add(final_norm + ".bias", {d});
  if (!hf && spec.num_classes > 0) {
    add("head.weight", {spec.num_classes, d}, /*trainable=*/false);
    add("head.bias", {spec.num_classes}, /*trainable=*/false);
  }
}

std::map<std::string, at::Tensor> VisionTransformerImpl::named_weights() const {
  return std::map<std::string, at::Tensor>(weights_.begin(), weights_.end());
}

void VisionTransformerImpl::init_random(uint64_t seed) {
  at::NoGradGuard no_grad;
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  for (auto& [key, t] : weights_) {
    at::Tensor cpu = at::empty(t.sizes(), at::TensorOptions().dtype(at::kFloat));
    const bool is_norm = key.find("norm") != std::string::npos;
    const std::string leaf = key.substr(key.rfind('.') + 1);
    if (leaf == "gamma" || leaf == "lambda1") {
      cpu.fill_(spec_.init_values > 0 ? spec_.init_values : 1.0);
    } else if (is_norm && leaf == "weight") {
      cpu.fill_(1.0);
    } else if (leaf == "bias" || key.find("mask_token") != std::string::npos) {
      cpu.zero_();
    } else if (key.find("cls_token") != std::string::npos || key.find("reg") != std::string::npos) {
      cpu.normal_(0.0, 1e-6, gen);  // timm: cls and register tokens start near zero
    } else {
      cpu.normal_(0.0, 0.02, gen);  // timm trunc_normal_(std=.02); the +-2 cut never matters at this std
    }
    t.copy_(cpu);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Frozen inference (the Distiller's teacher)
// ---------------------------------------------------------------------------------------------------------------
namespace {

// float16 keeps a LayerScale whose folded weight rows would sink towards the subnormal range (2^-14 = 6.1e-5):
// below this row RMS a good share of the folded elements would lose bits that the unfolded product keeps.
constexpr double kHalfFoldMinRowRms = 1.0 / 1024;

/** w (N,K), bias (N) <- w * g[:,None], bias * g, computed in float32; false (nothing changed) when fp16 would lose it.
 */
bool fold_scale(at::Tensor& w, at::Tensor& bias, const at::Tensor& g) {
  at::Tensor gf = g.to(at::kFloat);
  at::Tensor wf = w.to(at::kFloat) * gf.unsqueeze(1);
  if (w.scalar_type() == at::kHalf && wf.pow(2).mean(1).sqrt().min().item<double>() < kHalfFoldMinRowRms) return false;
  w.copy_(wf);
  if (bias.defined()) bias.copy_(bias.to(at::kFloat) * gf);
  return true;
}

}  // namespace

FrozenReport VisionTransformerImpl::prepare_frozen(const FrozenOptions& options) {
  if (frozen_) throw Error("ViT: prepare_frozen() was already called on this model");
  at::NoGradGuard no_grad;
  FrozenReport report;
  for (Block& b : blocks_) {
    for (auto [g, live, w, bias] :
         {std::tie(b.ls1, b.ls1_live, b.proj_w, b.proj_b), std::tie(b.ls2, b.ls2_live, b.fc2_w, b.fc2_b)}) {
      if (!g.defined()) continue;
      report.layer_scales += 1;
      if (options.fold_layer_scale && fold_scale(w, bias, g)) {
        live = at::Tensor();
        report.layer_scales_folded += 1;
      }
    }
    auto fp8 = [&](Fp8Linear& dst, const at::Tensor& w, const at::Tensor& bias, bool kind_on) {
      if (!w.defined()) return;
      report.linear_layers += 1;
      if (!options.fp8 || !kind_on || !Fp8Linear::fits(w)) return;
      dst = Fp8Linear::from_weight(w, bias, options.fp8_options);
      report.fp8_layers += 1;
      report.fp8_bytes += dst.bytes();
    };
    const Fp8LayerSet& kinds = options.fp8_layers;
    fp8(b.qkv8, b.qkv_w, b.qkv_b, kinds.qkv);
    fp8(b.q8, b.q_w, b.q_b, kinds.qkv);
    fp8(b.k8, b.k_w, b.k_b, kinds.qkv);
    fp8(b.v8, b.v_w, b.v_b, kinds.qkv);
    fp8(b.proj8, b.proj_w, b.proj_b, kinds.proj);
    fp8(b.fc18, b.fc1_w, b.fc1_b, kinds.fc1);
    fp8(b.fc28, b.fc2_w, b.fc2_b, kinds.fc2);
  }
  frozen_ = true;
  fp8_ready_ = report.fp8_layers > 0;
  fp8_on_ = fp8_ready_;
  return report;
}

// ---------------------------------------------------------------------------------------------------------------
// Training randomness (dropout, drop path)
// ---------------------------------------------------------------------------------------------------------------
VisionTransformerImpl::DropScope::DropScope(VisionTransformerImpl& model, uint64_t seed) : model_(model) {
  if (model.frozen_) throw Error("ViT: a frozen model (the teacher) takes no dropout or drop path");
  const at::Device device = model.patch_w_.device();
  at::Generator gen;
  if (device.is_cuda()) {
    gen = at::detail::getCUDAHooks().getNewGenerator(device.index());
    gen.set_current_seed(seed);
  } else {
    gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  }
  model.drop_gen_ = gen;
}

VisionTransformerImpl::DropScope::~DropScope() { model_.drop_gen_.reset(); }

at::Tensor VisionTransformerImpl::dropout(const at::Tensor& x, double p) const {
  if (!drop_gen_ || p <= 0) return x;
  // nn.Dropout / F.dropout: input * bernoulli(1 - p) / (1 - p); all zeros at p = 1.
  const double keep = 1.0 - p;
  at::Tensor mask = at::empty(x.sizes(), x.options()).bernoulli_(keep, *drop_gen_);
  if (keep > 0) mask.div_(keep);
  return x * mask;
}

at::Tensor VisionTransformerImpl::drop_path(const at::Tensor& x, double p) const {
  if (!drop_gen_ || p <= 0) return x;
  // timm layers/drop.py drop_path: a (B,1,...,1) mask bernoulli(keep) divided by keep (scale_by_keep), not at keep 0.
  const double keep = 1.0 - p;
  std::vector<int64_t> shape(x.dim(), 1);
  shape[0] = x.size(0);
  at::Tensor mask = at::empty(shape, x.options()).bernoulli_(keep, *drop_gen_);
  if (keep > 0) mask.div_(keep);
  return x * mask;
}

double VisionTransformerImpl::drop_path_rate(size_t i) const {
  if (spec_.layout == "hf") return spec_.drop.drop_path;  // Dinov2Layer: one DropPath(config.drop_path_rate) each
  if (spec_.drop.drop_path <= 0) return 0.0;
  // timm calculate_drop_path_rates: [x.item() for x in torch.linspace(0, rate, depth)] (float32 values).
  return at::linspace(0.0, spec_.drop.drop_path, spec_.depth,
                      at::TensorOptions().dtype(at::kFloat))[static_cast<int64_t>(i)]
      .item<double>();
}

// ---------------------------------------------------------------------------------------------------------------
// Forward
// ---------------------------------------------------------------------------------------------------------------
at::Tensor VisionTransformerImpl::linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias,
                                         const Fp8Linear& fp8) const {
  if (fp8_on_ && fp8.defined()) return fp8.forward(x);
  return at::linear(x, w, bias);
}

at::Tensor VisionTransformerImpl::linear(const NormOutput& x, const at::Tensor& w, const at::Tensor& bias,
                                         const Fp8Linear& fp8) const {
  if (x.h.defined()) return linear(x.h, w, bias, fp8);
  // FP8 rows only: the caller asked for them because every product reading them is FP8 (fp8_reads_norm1/2).
  TORCH_CHECK(fp8_on_ && fp8.defined(), "ViT: FP8 rows reached a product without FP8 weights");
  return fp8.forward_rows(x.q, x.sizes, at::kBFloat16);
}

bool VisionTransformerImpl::fp8_reads_norm1(const Block& b) const {
  if (!fp8_on_) return false;
  return spec_.qkv_fused ? b.qkv8.defined() : (b.q8.defined() && b.k8.defined() && b.v8.defined());
}

bool VisionTransformerImpl::fp8_reads_norm2(const Block& b) const { return fp8_on_ && b.fc18.defined(); }

at::Tensor VisionTransformerImpl::position_embedding(int64_t gh, int64_t gw, int64_t h, int64_t w) const {
  const int64_t d = spec_.embed_dim;
  // Rows of pos_ before the patch grid: timm with class position covers class and registers; HF the class only.
  const int64_t prefix = spec_.layout == "hf" ? 1 : (spec_.no_embed_class ? 0 : spec_.prefix_tokens());
  const int64_t positions = pos_.size(1) - prefix;
  const int64_t old = spec_.img_size / spec_.patch_size;
  bool same;
  if (spec_.layout == "hf") {
    same = gh * gw == positions && h == w;  // transformers' test, pixels included
  } else {
    same = gh == old && gw == old;  // timm compares grids
  }
  if (same) return pos_;
  const int64_t side = spec_.layout == "hf" ? static_cast<int64_t>(std::sqrt(static_cast<double>(positions))) : old;
  at::Tensor grid = pos_.narrow(1, prefix, positions).to(at::kFloat).reshape({1, side, side, d}).permute({0, 3, 1, 2});
  at::Tensor resized = resize_bicubic(grid, gh, gw, spec_.pos_antialias);
  resized = resized.permute({0, 2, 3, 1}).reshape({1, gh * gw, d}).to(pos_.scalar_type());
  if (prefix == 0) return resized;
  return at::cat({pos_.narrow(1, 0, prefix), resized}, 1);
}

void VisionTransformerImpl::set_kernels(const KernelOptions& kernels) {
  validate_kernel_options(kernels);
  kernels_ = kernels;
}

std::string VisionTransformerImpl::attention_backend() const {
  return sdpa_backend_name(attention_ran_.load(std::memory_order_relaxed));
}

at::Tensor VisionTransformerImpl::attention(const Block& b, const NormOutput& x) const {
  const int64_t bsz = x.sizes.at(0), t = x.sizes.at(1), d = x.sizes.at(2);
  const int64_t heads = spec_.num_heads, hd = d / heads;
  at::Tensor q, k, v;
  at::Tensor packed;  // (B,T,3D): q, k and v from one product
  if (spec_.qkv_fused) {
    packed = linear(x, b.qkv_w, b.qkv_b, b.qkv8);
  } else if (x.h.defined() && !fp8_on_ && b.q_b.defined() && at::GradMode::is_enabled() && b.q_w.requires_grad() &&
             kernels_.packed_qkv) {
    // Training with separate q/k/v weights: one product of the concatenated weights (fused.h, kernels_.packed_qkv).
    packed = at::linear(x.h, at::cat({b.q_w, b.k_w, b.v_w}), at::cat({b.q_b, b.k_b, b.v_b}));
  }
  if (packed.defined()) {
    // (B,T,3D) -> (3,B,heads,T,hd), as timm's Attention reshapes it.
    at::Tensor qkv = packed.reshape({bsz, t, 3, heads, hd}).permute({2, 0, 3, 1, 4});
    q = qkv[0];
    k = qkv[1];
    v = qkv[2];
  } else {
    q = linear(x, b.q_w, b.q_b, b.q8).view({bsz, t, heads, hd}).transpose(1, 2);
    k = linear(x, b.k_w, b.k_b, b.k8).view({bsz, t, heads, hd}).transpose(1, 2);
    v = linear(x, b.v_w, b.v_b, b.v8).view({bsz, t, heads, hd}).transpose(1, 2);
  }
  at::Tensor o;
  if (drop_gen_ && spec_.drop.attn_drop > 0) {
    // Attention-probability dropout (training): the explicit product, as timm's unfused path and transformers'
    // eager_attention_forward compute it, with the mask from the scope's generator (SDPA's dropout would draw from
    // the global generator).
    at::Tensor s = at::matmul(q * (1.0 / std::sqrt(static_cast<double>(hd))), k.transpose(-2, -1)).softmax(-1);
    o = at::matmul(dropout(s, spec_.drop.attn_drop), v);
  } else {
    o = attend(q, k, v, kernels_.sdpa, &attention_ran_);  // (B,heads,T,hd), scale hd^-0.5
  }
  o = o.transpose(1, 2).reshape({bsz, t, d});
  // timm Attention.proj_drop (proj_drop_rate); transformers Dinov2SelfOutput.dropout (hidden_dropout_prob).
  return dropout(linear(o, b.proj_w, b.proj_b, b.proj8),
                 spec_.layout == "hf" ? spec_.drop.hidden_drop : spec_.drop.proj_drop);
}

at::Tensor VisionTransformerImpl::mlp(const Block& b, const NormOutput& x) const {
  at::Tensor hdn = linear(x, b.fc1_w, b.fc1_b, b.fc18);
  if (spec_.mlp == "gelu") {
    hdn = at::gelu(hdn);  // exact erf GELU: nn.GELU() in timm, ACT2FN["gelu"] in transformers
  } else {
    // Both SwiGLU layouts: silu(first half) * second half (timm GluMlp gate_last=False; HF Dinov2SwiGLUFFN); one
    // fused kernel each way on CUDA (fused.h), today's two ops elsewhere.
    hdn = swiglu(hdn, kernels_.fused_swiglu);
  }
  if (spec_.layout == "hf") return linear(hdn, b.fc2_w, b.fc2_b, b.fc28);  // Dinov2MLP / SwiGLUFFN: no dropout
  // timm Mlp / GluMlp: drop1 after the activation (and gate), drop2 after fc2, both proj_drop_rate.
  hdn = dropout(hdn, spec_.drop.proj_drop);
  return dropout(linear(hdn, b.fc2_w, b.fc2_b, b.fc28), spec_.drop.proj_drop);
}

at::Tensor VisionTransformerImpl::forward_tokens(const at::Tensor& images) {
  TORCH_CHECK(images.dim() == 4 && images.size(1) == 3, "ViT: expected images (B,3,H,W), got ", images.sizes());
  TORCH_CHECK(images.size(2) >= spec_.patch_size && images.size(3) >= spec_.patch_size, "ViT: images of ",
              images.size(2), "x", images.size(3), " px are smaller than one ", spec_.patch_size, " px patch");
  const int64_t bsz = images.size(0), h = images.size(2), w = images.size(3);
  at::Tensor x =
      at::conv2d(images.to(patch_w_.scalar_type()), patch_w_, patch_b_, {spec_.patch_size, spec_.patch_size});
  const int64_t gh = x.size(2), gw = x.size(3);
  x = x.flatten(2).transpose(1, 2);  // (B,N,D)
  at::Tensor pos = position_embedding(gh, gw, h, w);
  at::Tensor cls = cls_.expand({bsz, -1, -1});
  if (spec_.layout == "hf") {
    // Dinov2(WithRegisters)Embeddings: [cls, patches] + pos, then registers inserted after the class token.
    x = at::cat({cls, x}, 1) + pos;
    if (reg_.defined()) x = at::cat({x.narrow(1, 0, 1), reg_.expand({bsz, -1, -1}), x.narrow(1, 1, x.size(1) - 1)}, 1);
  } else {
    std::vector<at::Tensor> parts{cls};
    if (reg_.defined()) parts.push_back(reg_.expand({bsz, -1, -1}));
    if (spec_.no_embed_class) {
      parts.push_back(x + pos);  // position covers the patches only: add, then prepend class and registers
      x = at::cat(parts, 1);
    } else {
      parts.push_back(x);
      x = at::cat(parts, 1) + pos;
    }
  }
  // timm VisionTransformer.pos_drop (pos_drop_rate) at the end of _pos_embed; transformers' embeddings dropout
  // (hidden_dropout_prob), after the registers are inserted. Identity outside a DropScope.
  x = dropout(x, spec_.layout == "hf" ? spec_.drop.hidden_drop : spec_.drop.pos_drop);
  const double eps = spec_.norm_eps;
  const bool fused = kernels_.fused_norm;
  if (frozen_) {
    // Inference only: x is this call's own tensor (made by cat or +), so the residual adds may write into it. Each
    // residual add and the LayerNorm after it are one call (fused.h residual_layer_norm_: one kernel with
    // kernels_.fused_norm on CUDA, which may hand FP8 rows straight to FP8 products); the last one is the final norm.
    // An unfolded LayerScale (prepare_frozen keeps those whose folded float16 rows would be subnormal) goes in the same
    // pass: x += a * gamma with the product in float32 and one rounding, not a * gamma rounded into float16's
    // subnormal range first.
    if (blocks_.empty()) return spec_.fc_norm ? x : layer_norm(x, norm_w_, norm_b_, eps);
    NormOutput h{layer_norm(x, blocks_[0].norm1_w, blocks_[0].norm1_b, eps), {}, x.sizes().vec()};
    for (size_t i = 0; i < blocks_.size(); ++i) {
      const Block& b = blocks_[i];
      at::Tensor a = attention(b, h);
      h = residual_layer_norm_(x, a, b.ls1_live, b.norm2_w, b.norm2_b, eps, fp8_reads_norm2(b), fused);
      at::Tensor m = mlp(b, h);
      const bool last = i + 1 == blocks_.size();
      if (last && spec_.fc_norm) return b.ls2_live.defined() ? layer_scale_add(x, m, b.ls2_live, fused) : x + m;
      h = last ? residual_layer_norm_(x, m, b.ls2_live, norm_w_, norm_b_, eps, /*want_fp8=*/false, fused)
               : residual_layer_norm_(x, m, b.ls2_live, blocks_[i + 1].norm1_w, blocks_[i + 1].norm1_b, eps,
                                      fp8_reads_norm1(blocks_[i + 1]), fused);
    }
    return h.h;
  }
  // The trained path: block_layer_norm / layer_scale_add (fused.h) are at::layer_norm and x + a * gamma in one
  // pass (addcmul), or with kernels_.fused_norm on CUDA under autocast one kernel each way for each.
  // Drop path (training, in a DropScope): x + drop_path(ls(branch)) with a per-sample mask, one draw per branch;
  // the mask multiplies the branch before LayerScale (a per-sample scalar commutes with it).
  for (size_t i = 0; i < blocks_.size(); ++i) {
    const Block& b = blocks_[i];
    const double dp = drop_path_rate(i);
    at::Tensor a = attention(b, NormOutput{block_layer_norm(x, b.norm1_w, b.norm1_b, eps, fused), {}, x.sizes().vec()});
    a = drop_path(a, dp);
    x = b.ls1_live.defined() ? layer_scale_add(x, a, b.ls1_live, fused) : x + a;
    at::Tensor m = mlp(b, NormOutput{block_layer_norm(x, b.norm2_w, b.norm2_b, eps, fused), {}, x.sizes().vec()});
    m = drop_path(m, dp);
    x = b.ls2_live.defined() ? layer_scale_add(x, m, b.ls2_live, fused) : x + m;
  }
  return spec_.fc_norm ? x : layer_norm(x, norm_w_, norm_b_, eps);
}

at::Tensor VisionTransformerImpl::forward(const at::Tensor& images) {
  // timm forward_head: pool (global_pool_nlc: the class token, or the mean of the tokens after the class token and
  // the registers), fc_norm (with use_fc_norm), head_drop (drop_rate); transformers has no head: pooler_output is
  // the class token of last_hidden_state, and the mean / cls+mean poolings (TRIDENT, eva, Virchow2's card) read
  // the same normalised tokens.
  at::Tensor t = forward_tokens(images);
  const int64_t p = spec_.prefix_tokens();
  at::Tensor z;
  if (spec_.pool == "cls") {
    z = t.select(1, 0);
  } else {
    at::Tensor mean = t.narrow(1, p, t.size(1) - p).mean(1);
    z = spec_.pool == "mean" ? mean : at::cat({t.select(1, 0), mean}, 1);
  }
  if (spec_.fc_norm) z = layer_norm(z, norm_w_, norm_b_, spec_.norm_eps);
  return spec_.layout == "hf" ? z : dropout(z, spec_.drop.head_drop);
}

}  // namespace g2l
