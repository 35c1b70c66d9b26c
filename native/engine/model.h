// Vision Transformer models of the timm and Hugging Face DINOv2 families (engine-internal API).
//
// One implementation covers H-optimus-0 (timm vit_giant_patch14_reg4_dinov2), UNI2-h, Hibou-L/B (transformers
// Dinov2WithRegisters) and the other supported names; see docs/architecture.md "Model formats".
//
// A folder resolves to a ModelSpec (model_spec.cpp: config.json, preprocessor_config.json, the timm registry
// defaults and the presets); the module (vit.h) is built from the spec with parameters named exactly as the
// folder's checkpoint keys, so named_weights, strict loading and export need no key mapping.
//
// Usage:
//   g2l::LoadedModel teacher = g2l::load_model("/models/h-optimus-0", "", at::Device("cuda:0"), at::kHalf);
//   at::Tensor z = teacher.forward(images);  // (B,3,224,224) normalised -> (B,1536)
//   g2l::LoadedModel student = g2l::load_model("/models/hibou-l", "hibou-l", at::kCPU, at::kFloat);
//   g2l::export_model(student, "/runs/r1/student");  // same layout and config.json as the input folder
#pragma once

#include <torch/torch.h>

#include <array>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "g2l/models.h"

namespace g2l {

/**
 * Training-only regularisation of a model, in the names of its own library (zero = off). Read from the folder's
 * config.json; the Distiller applies it to the student (overridable by DistillerConfig::student_drop), never to
 * the teacher, and only inside a training step (VisionTransformerImpl::DropScope); every other forward is exact.
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
  double patch_drop = 0;   // timm patch_drop_rate (PatchDropout drops tokens): not supported when non-zero
  bool any() const {
    return drop_path > 0 || attn_drop > 0 || proj_drop > 0 || pos_drop > 0 || head_drop > 0 || hidden_drop > 0 ||
           patch_drop > 0;
  }
};

/** What a model folder resolves to: architecture, weight layout and preprocessing. */
struct ModelSpec {
  std::string family;   // e.g. "vit_giant_patch14_reg4_dinov2", "dinov2_with_registers"
  std::string layout;   // "timm" or "hf": the key names and config.json format of the folder
  std::string preset;   // the preset applied ("" when none), e.g. "uni2-h"
  std::string folder;   // where the weights are ("" for a preset without a folder, or a random model)
  int64_t img_size = 224;           // the size the position embeddings were trained at (their grid * patch)
  int64_t input_size = 224;         // the size images are resized to before embedding (preprocessing)
  int64_t patch_size = 14;
  int64_t embed_dim = 768;
  int64_t depth = 12;
  int64_t num_heads = 12;
  int64_t num_registers = 0;
  int64_t mlp_hidden = 3072;        // hidden width of the MLP (SwiGLU: width of each half)
  std::string mlp = "gelu";         // "gelu", "swiglu_packed" (timm fc1 -> silu(x1)*x2), "swiglu_hf" (weights_in/out)
  double init_values = 0.0;         // LayerScale initial value (create_model), when layer_scale
  bool layer_scale = false;
  bool no_embed_class = false;      // timm: pos_embed covers the patches only
  bool qkv_fused = true;            // timm fused qkv; HF separate query/key/value
  bool qkv_bias = true;
  double norm_eps = 1e-6;
  bool pos_antialias = true;        // resample position embeddings with antialiased bicubic (timm, HF with registers)
  bool mask_token = false;          // HF: embeddings.mask_token is in the checkpoint (unused at inference)
  int64_t num_classes = 0;          // timm: a classifier head in the checkpoint (kept, unused: embeddings are pre-logits)
  // Pooling of the final tokens into the embedding (model.h pool_names): "cls" the class token, "mean" the mean of
  // the patch tokens (class and register tokens excluded), "cls+mean" both concatenated (2*D, Virchow2 / TRIDENT).
  std::string pool = "cls";
  // timm use_fc_norm (global_pool 'avg' with fc_norm unset, or fc_norm true): the final norm is Identity and
  // fc_norm normalises the pooled vector instead (timm forward_head: pool, fc_norm, head_drop). Keys fc_norm.*.
  bool fc_norm = false;
  std::array<float, 3> mean{0.485f, 0.456f, 0.406f};
  std::array<float, 3> std{0.229f, 0.224f, 0.225f};
  Regularization drop;              // training-only dropout / drop path from config.json (see Regularization)
  std::string config_json;          // the folder's config.json as read (exported unchanged); synthesised when empty
  std::string preprocessor_json;    // HF preprocessor_config.json as read, when present

  /** Width of the embedding: D, or 2*D for cls+mean. */
  int64_t out_dim() const { return pool == "cls+mean" ? 2 * embed_dim : embed_dim; }
  /** Tokens before the patches: class token and registers. */
  int64_t prefix_tokens() const { return 1 + num_registers; }
  /** Rows of the stored position embedding. */
  int64_t pos_tokens() const;
  /** One line for messages: "timm vit_giant_patch14_reg4_dinov2 (dim 1536, depth 40, heads 24, 4 registers)". */
  std::string describe() const;
};

/**
 * The student's training-only rates: its config.json's (spec.drop), replaced by the run's overrides (g2l/models.h
 * StudentDrop); a rate its library does not have, or a non-zero patch drop, is refused (g2l::Error) rather than
 * ignored.
 */
Regularization student_regularization(const ModelSpec& spec, const StudentDrop& overrides);

/** The presets known to the engine: h-optimus-0, hibou-l, hibou-b, uni2-h. */
std::vector<std::string> preset_names();

/**
 * Resolves a folder and/or a preset to a spec without reading weights. With a folder: config.json (timm hub
 * layout {architecture, model_args, pretrained_cfg} or transformers {model_type, ...}) over the registry defaults
 * of the architecture, preprocessor_config.json for mean/std when present; the preset (given, or auto-detected
 * from an incomplete config such as UNI2-h's) fills what config.json does not say. Throws g2l::Error with the
 * folder and what to do when neither says enough.
 */
ModelSpec resolve_model_spec(const std::string& folder, const std::string& preset, const std::string& pool = "");

/** The pooling names a spec or an override may take: cls, mean, cls+mean. */
const std::vector<std::string>& pool_names();

/** config.json in the spec's layout, for a model that has none (a random model): what timm / transformers need. */
std::string synthesize_config_json(const ModelSpec& spec);
/** transformers preprocessor_config.json with the spec's input size, mean and std. */
std::string synthesize_preprocessor_json(const ModelSpec& spec);
/** The folder's config.json as read, with g2l_pool added when the model's pooling is not the one the config says
 *  (an override or a preset's): what export writes, so that the exported folder reloads with the same pooling. */
std::string recorded_config_json(const ModelSpec& spec);

/** The network: (B,3,H,W) normalised images -> (B,embed_dim) class token after the final norm. */
class VisionTransformerImpl;

struct LoadedModel {
  ModelSpec spec;
  std::shared_ptr<torch::nn::Module> module;            // a VisionTransformerImpl
  std::function<at::Tensor(const at::Tensor&)> forward;  // (B,3,H,W) -> (B,D)
  /**
   * Checkpoint key -> tensor, in the folder's own layout (used by export and by weight-decay grouping). The
   * trainable ones are module->parameters() (same tensors); checkpoint entries that the forward pass does not use
   * (HF embeddings.mask_token, a timm classifier head) are module buffers, kept so that export writes them back.
   */
  std::map<std::string, at::Tensor> named_weights;
  /** Number of elements over named_weights, as timm / transformers count parameters. */
  int64_t parameter_count() const;
};

/** Loads config + safetensors from a hub folder (or a preset), strict about keys and shapes. */
LoadedModel load_model(const std::string& folder, const std::string& preset, at::Device device,
                       at::ScalarType dtype);

/**
 * Loads the weights of spec.folder into a model of `spec`: every missing, unexpected and mis-shaped key is listed
 * in one g2l::Error before any tensor is allocated; stored F32/F16/BF16 are converted to `dtype` on the way to
 * `device`.
 */
LoadedModel load_model(const ModelSpec& spec, at::Device device, at::ScalarType dtype);

/** Builds a model with random weights (for benchmarks and the demo). */
LoadedModel create_model(const ModelSpec& spec, at::Device device, at::ScalarType dtype, uint64_t seed);

/**
 * Writes the model in its own layout (config.json + model.safetensors), atomically (temp folder + rename). Refuses a
 * model prepared for frozen inference (VisionTransformerImpl::prepare_frozen: LayerScale folded in place).
 */
void export_model(const LoadedModel& model, const std::string& folder);

}  // namespace g2l
