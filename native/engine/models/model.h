// Vision Transformer models of the timm and Hugging Face DINOv2 families (engine-internal API).
//
// One implementation covers H-optimus-0 (timm vit_giant_patch14_reg4_dinov2), UNI2-h, Hibou-L/B (transformers
// Dinov2WithRegisters) and the other supported names; see docs/architecture.md "Model formats".
//
// A folder resolves to a ModelSpec in lib/models/spec.ts (config.json, preprocessor_config.json, the timm registry
// defaults and the presets: the one registry); the module (vit.h) is built from the spec with parameters named
// exactly as the folder's checkpoint keys, so named_weights, strict loading and export need no key mapping.
//
// Usage:
//   g2l::LoadedModel teacher = g2l::load_model(teacher_spec, at::Device("cuda:0"), at::kHalf);
//   at::Tensor z = teacher.forward(images);  // (B,3,224,224) normalised -> (B,1536)
//   g2l::export_model(student, "/runs/r1/student");  // spec.config_json + model.safetensors
#pragma once

#include <torch/torch.h>

#include <array>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "g2l/models.h"

namespace g2l {

/** The network: (B,3,H,W) normalised images -> (B,embed_dim) class token after the final norm. */
class VisionTransformerImpl;

struct LoadedModel {
  ModelSpec spec;
  std::shared_ptr<torch::nn::Module> module;             // a VisionTransformerImpl
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

/**
 * Loads the weights of spec.folder into a model of `spec`: every missing, unexpected and mis-shaped key is listed
 * in one g2l::Error before any tensor is allocated; stored F32/F16/BF16 are converted to `dtype` on the way to
 * `device`.
 */
LoadedModel load_model(const ModelSpec& spec, at::Device device, at::ScalarType dtype);

/** Builds a model with random weights (for benchmarks and the demo). */
LoadedModel create_model(const ModelSpec& spec, at::Device device, at::ScalarType dtype, uint64_t seed);

/**
 * Writes the model in its own layout (spec.config_json, model.safetensors and, for transformers,
 * spec.preprocessor_json), atomically (temp folder + rename). Refuses a
 * model prepared for frozen inference (VisionTransformerImpl::prepare_frozen: LayerScale folded in place).
 */
void export_model(const LoadedModel& model, const std::string& folder);

/** What the handle of g2l/models.h holds (model.cpp; the test entry embed_train of testing/entries.cpp reads it). */
struct Model::Impl {
  LoadedModel model;
  at::Device device{at::kCPU};
  at::ScalarType dtype = at::kFloat;
};

}  // namespace g2l
