// The Vision Transformer of the timm and transformers DINOv2 families (engine-internal).
//
// The module tree mirrors the checkpoint layout of the spec (timm: blocks.N.attn.qkv, HF:
// encoder.layer.N.attention.attention.query...), so named_parameters() are the checkpoint keys and loading,
// strict checks, weight-decay grouping and export need no mapping. The forward pass holds the same tensors in
// plain structs and is written once for both layouts: the layouts differ only in where the registers sit relative
// to the position embedding, how the position embedding is resampled, and how q/k/v and the SwiGLU are stored.
#pragma once

#include <torch/torch.h>

#include <atomic>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "kernels/fused.h"
#include "g2l/kernels.h"
#include "models/model.h"
#include "kernels/quant.h"

namespace g2l {

/** How prepare_frozen() readies a frozen model (the Distiller's teacher) for inference-only forwards. */
struct FrozenOptions {
  /** Fold LayerScale into the projection before it: x + linear(o, W, b) * g == x + linear(o, W*g[:,None], b*g). */
  bool fold_layer_scale = true;
  /** FP8 (E4M3) copies of the Linear weights whose dimensions fit (quant.h); forward uses them while fp8 is on. */
  bool fp8 = false;
  /** With fp8: which kinds of Linear layers get FP8 weights, and how their products run (quant.h Fp8Options). */
  Fp8LayerSet fp8_layers;
  Fp8Options fp8_options;
};

/** What prepare_frozen() did, for info and messages. */
struct FrozenReport {
  int64_t layer_scales = 0;         // LayerScale vectors in the model
  int64_t layer_scales_folded = 0;  // of them folded (fp16 keeps a LayerScale whose folded weight would underflow)
  int64_t linear_layers = 0;        // Linear layers of the blocks (qkv or q/k/v, proj, fc1, fc2)
  int64_t fp8_layers = 0;           // of them with FP8 weights
  int64_t fp8_bytes = 0;            // memory of the FP8 copies
};

class VisionTransformerImpl : public torch::nn::Module {
 public:
  /** Allocates every tensor uninitialised with `options` (device and dtype; the meta device for shapes only). */
  VisionTransformerImpl(const ModelSpec& spec, at::TensorOptions options);

  /** images (B,3,H,W) normalised, any H,W >= patch -> (B,spec.out_dim()): the tokens pooled as spec.pool says
   *  (class token, mean of the patch tokens, or both concatenated), after the final norm (or fc_norm after pooling). */
  at::Tensor forward(const at::Tensor& images);

  /** images (B,3,H,W) -> (B,T,D) all tokens after the final norm (none with fc_norm: timm forward_features):
   *  class, registers, then patches row-major. */
  at::Tensor forward_tokens(const at::Tensor& images);

  const ModelSpec& spec() const { return spec_; }

  /** Checkpoint key -> tensor: the parameters and the unused checkpoint buffers (mask token, classifier head). */
  std::map<std::string, at::Tensor> named_weights() const;
  /** The same, in the checkpoint's natural order (embeddings, blocks 0..N-1, final norm): for messages. */
  const std::vector<std::pair<std::string, at::Tensor>>& ordered_weights() const { return weights_; }

  /**
   * Readies a frozen model for inference-only forwards, in place: LayerScale folded into proj / fc2 (in float32,
   * cast back to the weight dtype; the residual adds run in place), FP8 weight copies when asked. The checkpoint
   * tensors then no longer describe the model's own layout: export_model refuses a prepared model. Once only.
   */
  FrozenReport prepare_frozen(const FrozenOptions& options);
  bool prepared_frozen() const { return frozen_; }
  /** With FP8 copies: whether forward uses them (default on after prepare) or the model's own weights. */
  void set_fp8_enabled(bool on) { fp8_on_ = on && fp8_ready_; }
  bool fp8_enabled() const { return fp8_on_; }

  /** Fills every tensor the way timm initialises a ViT (trunc-normal 0.02 weights, zero biases, LayerScale at
   *  init_values), from a seeded CPU generator, so random models are the same on every device. */
  void init_random(uint64_t seed);

  /**
   * Training randomness: while a DropScope lives, forwards apply spec().drop (model.h Regularization: dropout and
   * drop path as timm / transformers apply them in training) with masks drawn from a generator seeded by `seed` on
   * the model's device, one draw after the other, so the masks are a function of the seed and the calls made.
   * Without one every forward is deterministic (evaluation, the teacher, export checks). Refused on a frozen model.
   */
  class DropScope {
   public:
    DropScope(VisionTransformerImpl& model, uint64_t seed);
    ~DropScope();
    DropScope(const DropScope&) = delete;
    DropScope& operator=(const DropScope&) = delete;

   private:
    VisionTransformerImpl& model_;
  };
  /** Replaces the training-only rates (embed_train, g2l/testing.h). */
  void set_regularization(const Regularization& drop) { spec_.drop = drop; }

  /**
   * Which implementations this model's forwards use (g2l/kernels.h; validated, Error on an unknown choice). A model
   * starts with the defaults of KernelOptions (what the Encoder runs); the Distiller sets its run's.
   */
  void set_kernels(const KernelOptions& kernels);
  const KernelOptions& kernels() const { return kernels_; }

  /** The SDPA backend of the last attention (attention.h: "flash_attention", "cudnn_attention", ...; "" before). */
  std::string attention_backend() const;

 private:
  struct Block {
    at::Tensor norm1_w, norm1_b;
    at::Tensor qkv_w, qkv_b;                  // fused (3D,D), timm
    at::Tensor q_w, q_b, k_w, k_b, v_w, v_b;  // separate (D,D), HF
    at::Tensor proj_w, proj_b;
    at::Tensor ls1, ls2;  // (D) LayerScale, when present
    at::Tensor norm2_w, norm2_b;
    at::Tensor fc1_w, fc1_b, fc2_w, fc2_b;  // MLP in (hidden or 2*hidden, D), out (D, hidden)
    // prepare_frozen(): the LayerScale vectors forward still applies (undefined once folded) and the FP8 copies.
    at::Tensor ls1_live, ls2_live;
    Fp8Linear qkv8, q8, k8, v8, proj8, fc18, fc28;
  };

  /** Registers the tensor `key` (dotted checkpoint path) in a nested module tree; returns the live tensor. */
  at::Tensor add(const std::string& key, std::vector<int64_t> shape, bool trainable = true);
  /** (1,P,D) position embedding for a (gh,gw) grid of an (h,w) image, resampled as the reference library does. */
  at::Tensor position_embedding(int64_t gh, int64_t gw, int64_t h, int64_t w) const;
  /** at::linear, or the FP8 copy while FP8 is on and the layer has one. */
  // x: a LayerNorm's result, or (frozen FP8 teacher, fused.h residual_layer_norm_) its FP8 rows.
  at::Tensor linear(const NormOutput& x, const at::Tensor& w, const at::Tensor& bias, const Fp8Linear& fp8) const;
  at::Tensor linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias, const Fp8Linear& fp8) const;
  at::Tensor attention(const Block& b, const NormOutput& x) const;
  at::Tensor mlp(const Block& b, const NormOutput& x) const;
  /** Inside a DropScope: x with each element kept with probability 1 - p and scaled by 1 / (1 - p) (zero at p 1). */
  at::Tensor dropout(const at::Tensor& x, double p) const;
  /** Inside a DropScope: x (B,...) with each sample kept with probability 1 - p, scaled by 1 / (1 - p) (timm). */
  at::Tensor drop_path(const at::Tensor& x, double p) const;
  /** Block i's drop-path rate: timm linspace(0, rate, depth)[i] (float32 as torch computes it); HF the rate. */
  double drop_path_rate(size_t i) const;
  /** Whether the products reading the block's norm1 / norm2 result all run in FP8 now (they may take FP8 rows). */
  bool fp8_reads_norm1(const Block& b) const;
  bool fp8_reads_norm2(const Block& b) const;

  ModelSpec spec_;
  at::TensorOptions options_;
  std::map<std::string, std::shared_ptr<torch::nn::Module>> tree_;  // dotted prefix -> submodule
  std::vector<std::pair<std::string, at::Tensor>> weights_;         // checkpoint order of registration
  at::Tensor patch_w_, patch_b_, cls_, reg_, pos_, norm_w_, norm_b_;
  std::vector<Block> blocks_;
  KernelOptions kernels_;   // set_kernels()
  bool frozen_ = false;     // prepare_frozen() ran: LayerScale folded, residual adds in place
  bool fp8_ready_ = false;  // FP8 copies exist
  bool fp8_on_ = false;     // forward uses them
  mutable std::atomic<int> attention_ran_{-1};
  std::optional<at::Generator> drop_gen_;  // set by a DropScope: training randomness on the model's device  //
                                           // at::SDPBackend of the last attention, -1 before the first
};

TORCH_MODULE(VisionTransformer);

}  // namespace g2l
