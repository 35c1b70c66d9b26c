// g2l engine: teacher and student models behind an opaque handle (no torch headers), for the N-API addon and
// C++ callers. One Model is a loaded ViT on one device in one dtype; embed() turns images into embeddings. A model is
// described by a ModelSpec, which lib/models/spec.ts resolves from a folder's config.json and the presets.
//
// Usage:
//   auto enc = g2l::Model::load(spec /* of /models/h-optimus-0 */, "cuda:0", "fp16");
//   g2l::HostTensor tiles = g2l::HostTensor::borrow(g2l::DType::U8, {n, 224, 224, 3}, pixels);
//   g2l::HostTensor z = enc->embed(tiles);  // float32 (n, 1536)
//   enc->release();                         // frees the weights now rather than at the last reference
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "g2l/engine.h"

namespace g2l {

/** What a model is, as reported to users (Encoder.info). */
struct ModelInfo {
  std::string family;  // "vit_giant_patch14_reg4_dinov2", "dinov2_with_registers", ...
  std::string layout;  // "timm" or "hf"
  std::string preset;  // "" when none applied
  std::string folder;
  std::string mlp;    // "gelu", "swiglu_packed", "swiglu_hf"
  int64_t dims = 0;   // embedding width (2 * width for cls+mean pooling)
  int64_t width = 0;  // the transformer's token width D
  std::string pool;   // "cls", "mean", "cls+mean"
  int64_t depth = 0;
  int64_t num_heads = 0;
  int64_t num_registers = 0;
  int64_t patch_size = 0;
  int64_t input_size = 0;  // px: uint8 images are resized to this
  int64_t parameters = 0;
  std::array<float, 3> mean{};
  std::array<float, 3> std{};
  std::string dtype;   // "fp32", "fp16", "bf16" (empty for describe())
  std::string device;  // "cpu", "cuda:0" (empty for describe())
};

/**
 * Training-only regularisation of a model, in the names of its own library (zero = off): the rates of its config.json,
 * replaced for the student by the run's studentDrop (resolved in lib/models/spec.ts). The Distiller applies them to
 * the student inside a training step only (never to the teacher); every other forward is exact.
 *   timm:          x = pos_drop(tokens); block i: x += drop_path_i(ls1(proj_drop(proj(attn_drop(softmax) v))));
 *                  x += drop_path_i(ls2(proj_drop(fc2(proj_drop(act(fc1)))))); features = head_drop(norm(x)[:,0])
 *                  with drop_path_i = linspace(0, drop_path, depth)[i] (timm calculate_drop_path_rates)
 *   transformers:  x = hidden_drop(embeddings incl. registers); layer: x += drop_path(ls1(hidden_drop(dense(
 *                  attn_drop(softmax) v)))); x += drop_path(ls2(mlp)); drop_path the same rate in every layer
 * Drop path keeps a sample's branch with probability 1 - rate and scales it by 1 / (1 - rate) (at rate 1: zero);
 * dropout keeps each element likewise.
 */
struct Regularization {
  double drop_path = 0;    // timm drop_path_rate (the last block's; linear from 0), HF drop_path_rate (every layer)
  double attn_drop = 0;    // timm attn_drop_rate, HF attention_probs_dropout_prob: the attention probabilities
  double proj_drop = 0;    // timm proj_drop_rate: after attn.proj, after the MLP activation (and gate), after fc2
  double pos_drop = 0;     // timm pos_drop_rate: all tokens after the position embedding
  double head_drop = 0;    // timm drop_rate: the pooled features (the class token after the final norm)
  double hidden_drop = 0;  // HF hidden_dropout_prob: the embeddings (after the registers), the attention output
  bool any() const {
    return drop_path > 0 || attn_drop > 0 || proj_drop > 0 || pos_drop > 0 || head_drop > 0 || hidden_drop > 0;
  }
};

/**
 * A model, fully resolved: architecture, weight layout, preprocessing and pooling. The one model registry (timm
 * architectures, transformers configs, presets, pooling) is lib/models/spec.ts: it reads the folder's config.json
 * and hands the engine this plain description, which the engine checks for consistency (check_spec) and builds.
 */
struct ModelSpec {
  std::string family;        // e.g. "vit_giant_patch14_reg4_dinov2", "dinov2_with_registers"
  std::string layout;        // "timm" or "hf": the key names and config.json format of the folder
  std::string preset;        // the preset applied ("" when none), e.g. "uni2-h"
  std::string folder;        // where the weights are ("" for an architecture alone: random weights)
  int64_t img_size = 224;    // the size the position embeddings were trained at (their grid * patch)
  int64_t input_size = 224;  // the size images are resized to before embedding (preprocessing)
  int64_t patch_size = 14;
  int64_t embed_dim = 768;
  int64_t depth = 12;
  int64_t num_heads = 12;
  int64_t num_registers = 0;
  int64_t mlp_hidden = 3072;  // hidden width of the MLP (SwiGLU: width of each half)
  std::string mlp = "gelu";   // "gelu", "swiglu_packed" (timm fc1 -> silu(x1)*x2), "swiglu_hf" (weights_in/out)
  double init_values = 0.0;   // LayerScale initial value (random models), when layer_scale
  bool layer_scale = false;
  bool no_embed_class = false;  // timm: pos_embed covers the patches only
  bool qkv_fused = true;        // timm fused qkv; HF separate query/key/value
  bool qkv_bias = true;
  double norm_eps = 1e-6;
  bool pos_antialias = true;  // resample position embeddings with antialiased bicubic (timm, HF with registers)
  bool mask_token = false;    // HF: embeddings.mask_token is in the checkpoint (unused at inference)
  int64_t num_classes = 0;    // timm: a classifier head in the checkpoint (kept, unused: embeddings are pre-logits)
  // Pooling of the final tokens into the embedding: "cls" the class token, "mean" the mean of the patch tokens (class
  // and register tokens excluded), "cls+mean" both concatenated (2*D, Virchow2 / TRIDENT).
  std::string pool = "cls";
  // timm use_fc_norm (global_pool 'avg' with fc_norm unset, or fc_norm true): the final norm is Identity and
  // fc_norm normalises the pooled vector instead (timm forward_head: pool, fc_norm, head_drop). Keys fc_norm.*.
  bool fc_norm = false;
  std::array<float, 3> mean{0.485f, 0.456f, 0.406f};
  std::array<float, 3> std{0.229f, 0.224f, 0.225f};
  Regularization drop;            // training-only dropout / drop path (see Regularization)
  std::string config_json;        // config.json as export writes it (the folder's, with what reloading needs)
  std::string preprocessor_json;  // preprocessor_config.json as export writes it (transformers layout; "" for timm)

  /** Width of the embedding: D, or 2*D for cls+mean. */
  int64_t out_dim() const { return pool == "cls+mean" ? 2 * embed_dim : embed_dim; }
  /** Tokens before the patches: class token and registers. */
  int64_t prefix_tokens() const { return 1 + num_registers; }
  /** Rows of the stored position embedding. */
  int64_t pos_tokens() const;
  /** One line for messages: "timm vit_giant_patch14_reg4_dinov2 (dim 1536, depth 40, heads 24, 4 registers)". */
  std::string describe() const;
};

/** Throws g2l::Error naming the first inconsistency of a spec (names, sizes, rates), before anything is built. */
void check_spec(const ModelSpec& spec);

class Model {
 public:
  /** Loads the weights of spec.folder (safetensors or pytorch_model.bin, strict about keys and shapes); dtype "fp32" |
   *  "fp16" | "bf16". */
  static std::shared_ptr<Model> load(const ModelSpec& spec, const std::string& device, const std::string& dtype);
  /** The architecture of a spec with random weights (benchmarks, demos): no weights are read. */
  static std::shared_ptr<Model> create_random(const ModelSpec& spec, const std::string& device,
                                              const std::string& dtype, uint64_t seed);
  /** What a spec is, without reading or allocating weights (parameters counted from shapes). */
  static ModelInfo describe(const ModelSpec& spec);

  ~Model();

  const ModelInfo& info() const { return info_; }

  /**
   * images: uint8 (N,H,W,3) RGB, resized to info().input_size if needed (bicubic, antialiased), scaled to [0,1]
   * and normalised with the model's mean/std; or float32 (N,3,H,W) already normalised, used as given (sizes other
   * than the model's interpolate its position embeddings). Returns float32 (N,D) on the host.
   */
  HostTensor embed(const HostTensor& images) const;

  /** Writes the model in its folder's layout (config.json + model.safetensors) to `folder`, atomically. */
  void export_to(const std::string& folder) const;

  /** Frees the weights now; later calls fail with a clear error. */
  void release();

  struct Impl;  // defined in the engine: only the static constructors above can build one
  Model(std::unique_ptr<Impl> impl, ModelInfo info);

 private:
  // The test entry g2l/testing.h embed_train runs the student's training-mode forward on the model.
  friend HostTensor embed_train(const Model&, const HostTensor&, uint64_t, const Regularization&);
  std::unique_ptr<Impl> impl_;
  ModelInfo info_;
  mutable std::mutex mutex_;  // one forward at a time per model; release waits for it
};

}  // namespace g2l
