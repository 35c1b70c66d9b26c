// g2l engine: teacher and student models behind an opaque handle (no torch headers), for the N-API addon and
// C++ callers. One Model is a loaded ViT on one device in one dtype; embed() turns images into embeddings.
//
// Usage:
//   auto enc = g2l::Model::load("/models/h-optimus-0", "", "cuda:0", "fp16");
//   g2l::HostTensor tiles = g2l::HostTensor::borrow(g2l::DType::U8, {n, 224, 224, 3}, pixels);
//   g2l::HostTensor z = enc->embed(tiles);  // float32 (n, 1536)
//   enc->release();                         // frees the weights now rather than at the last reference
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "g2l/engine.h"

namespace g2l {

/** What a model is, as reported to users (Encoder.info). */
struct ModelInfo {
  std::string family;   // "vit_giant_patch14_reg4_dinov2", "dinov2_with_registers", ...
  std::string layout;   // "timm" or "hf"
  std::string preset;   // "" when none applied
  std::string folder;
  std::string mlp;      // "gelu", "swiglu_packed", "swiglu_hf"
  int64_t dims = 0;     // embedding width (2 * width for cls+mean pooling)
  int64_t width = 0;    // the transformer's token width D
  std::string pool;     // "cls", "mean", "cls+mean"
  int64_t depth = 0;
  int64_t num_heads = 0;
  int64_t num_registers = 0;
  int64_t patch_size = 0;
  int64_t input_size = 0;  // px: uint8 images are resized to this
  int64_t parameters = 0;
  std::array<float, 3> mean{};
  std::array<float, 3> std{};
  std::string dtype;    // "fp32", "fp16", "bf16" (empty for describe())
  std::string device;   // "cpu", "cuda:0" (empty for describe())
};

// A model's (the student's) training-only regularisation (model.h Regularization), each rate in [0, 1]: unset ones keep the
// value of the student's config.json, set ones replace it. timm students: drop_path, attn_drop, proj_drop, pos_drop,
// head_drop; transformers students: drop_path, attn_drop, hidden_drop (a rate the student's library does not have
// must stay unset or 0). patch_drop (timm PatchDropout) is not supported: only 0 is accepted, which also overrides
// a non-zero patch_drop_rate in config.json. The teacher never drops anything.
struct StudentDrop {
  std::optional<double> drop_path, attn_drop, proj_drop, pos_drop, head_drop, hidden_drop, patch_drop;
};

class Model {
 public:
  /** Loads a hub folder (timm or transformers layout) and/or a preset; dtype "fp32" | "fp16" | "bf16"; pool "cls" |
   *  "mean" | "cls+mean" overrides the model's own pooling ("" keeps it). */
  static std::shared_ptr<Model> load(const std::string& folder, const std::string& preset, const std::string& device,
                                     const std::string& dtype, const std::string& pool = "");
  /** The architecture of a folder/preset with random weights (benchmarks, demos): no weights are read. */
  static std::shared_ptr<Model> create_random(const std::string& folder, const std::string& preset,
                                              const std::string& device, const std::string& dtype, uint64_t seed,
                                              const std::string& pool = "");
  /** Resolves a folder/preset without reading or allocating weights (parameters counted from shapes). */
  static ModelInfo describe(const std::string& folder, const std::string& preset, const std::string& pool = "");

  ~Model();

  const ModelInfo& info() const { return info_; }

  /**
   * images: uint8 (N,H,W,3) RGB, resized to info().input_size if needed (bicubic, antialiased), scaled to [0,1]
   * and normalised with the model's mean/std; or float32 (N,3,H,W) already normalised, used as given (sizes other
   * than the model's interpolate its position embeddings). Returns float32 (N,D) on the host.
   */
  HostTensor embed(const HostTensor& images) const;

  /**
   * A training-mode forward as the Distiller runs the student: float32 (N,3,H,W) normalised images, dropout and drop
   * path at the rates of the model's config.json replaced by `drop` (refused as the Distiller refuses them), masks
   * from a generator seeded with `seed` on the model's device. For tests and diagnostics; embed() never drops.
   */
  HostTensor embed_train(const HostTensor& images, uint64_t seed, const StudentDrop& drop) const;

  /** Writes the model in its folder's layout (config.json + model.safetensors) to `folder`, atomically. */
  void export_to(const std::string& folder) const;

  /** Frees the weights now; later calls fail with a clear error. */
  void release();

  struct Impl;  // defined in the engine: only the static constructors above can build one
  Model(std::unique_ptr<Impl> impl, ModelInfo info);

 private:
  std::unique_ptr<Impl> impl_;
  ModelInfo info_;
  mutable std::mutex mutex_;  // one forward at a time per model; release waits for it
};

}  // namespace g2l
