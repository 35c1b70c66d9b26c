// Vision Transformer models of the timm and Hugging Face DINOv2 families (engine-internal API).
//
// One implementation covers H-optimus-0 (timm vit_giant_patch14_reg4_dinov2), UNI2-h, Hibou-L/B (transformers
// Dinov2WithRegisters) and the other supported names; see DESIGN.md "Model formats".
#pragma once

#include <torch/torch.h>

#include <array>
#include <map>
#include <string>

namespace g2l {

/** What a model folder resolves to: architecture, weight layout and preprocessing. */
struct ModelSpec {
  std::string family;   // e.g. "vit_giant_patch14_reg4_dinov2", "dinov2_with_registers"
  std::string layout;   // "timm" or "hf": the key names and config.json format of the folder
  int64_t img_size = 224;
  int64_t patch_size = 14;
  int64_t embed_dim = 768;
  int64_t depth = 12;
  int64_t num_heads = 12;
  int64_t num_registers = 0;
  int64_t mlp_hidden = 3072;        // hidden width of the MLP (SwiGLU: width of each half)
  std::string mlp = "gelu";         // "gelu", "swiglu_packed" (timm fc1 -> silu(x1)*x2), "swiglu_hf" (weights_in/out)
  double init_values = 0.0;         // LayerScale present when > 0 (or when the weights carry it)
  bool layer_scale = false;
  bool no_embed_class = false;      // timm: pos_embed covers the patches only
  bool qkv_fused = true;            // timm fused qkv; HF separate query/key/value
  bool qkv_bias = true;
  double norm_eps = 1e-6;
  std::array<float, 3> mean{0.485f, 0.456f, 0.406f};
  std::array<float, 3> std{0.229f, 0.224f, 0.225f};
};

/** The network: (B,3,H,W) normalised images -> (B,embed_dim) class token after the final norm. */
class VisionTransformerImpl;

struct LoadedModel {
  ModelSpec spec;
  std::shared_ptr<torch::nn::Module> module;            // a VisionTransformerImpl
  std::function<at::Tensor(const at::Tensor&)> forward;  // (B,3,H,W) -> (B,D)
  /** Checkpoint key -> parameter, in the folder's own layout (used by export and by weight-decay grouping). */
  std::map<std::string, at::Tensor> named_weights;
};

/** Loads config + safetensors from a hub folder (or a preset), strict about keys and shapes. */
LoadedModel load_model(const std::string& folder, const std::string& preset, at::Device device,
                       at::ScalarType dtype);

/** Builds a model with random weights (for benchmarks and the demo). */
LoadedModel create_model(const ModelSpec& spec, at::Device device, at::ScalarType dtype, uint64_t seed);

/** Writes the model in its own layout (config.json + model.safetensors), atomically (temp folder + rename). */
void export_model(const LoadedModel& model, const std::string& folder);

}  // namespace g2l
