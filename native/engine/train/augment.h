// Tile augmentation for distillation (engine-internal API): one view of each tile, fed to both models.
//
// G2L's recipe (docs/method.md, "Constants"): random crop 224 from 256; horizontal and vertical flips (p 0.5 each);
// colour jitter (p 0.5; brightness 0.15, contrast 0.15, saturation 0.1, hue 0.05; torchvision's definitions,
// random order); Gaussian blur 9x9 (p 0.1, sigma ~ U[0.1, 2.0]); then each model's normalisation.
//
// The random parameters are drawn on the host (sample_augment_params) from a seeded generator, then applied by
// augment_batch: a fused CUDA kernel on CUDA tensors, libtorch ops on the CPU. Drawing on the host keeps CPU and
// CUDA runs identical for a seed and makes the state resumable.
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <cstdint>

#include "g2l/augment.h"

namespace g2l {

// AugmentConfig, Normalization and the parameter columns (AugmentParamColumn, kAugmentParamCount) are defined in
// the public header g2l/augment.h, so the addon (no torch headers) shares them.

/**
 * Per-sample parameters, float32 (B, kAugmentParamCount) on the CPU. Columns: see AugmentParamColumn in g2l/augment.h
 * (crop x, crop y, hflip, vflip, jitter on, brightness, contrast, saturation, hue factors, 4 order slots, blur on,
 * sigma).
 */
at::Tensor sample_augment_params(int64_t batch, int64_t tile_h, int64_t tile_w, const AugmentConfig& config,
                                 at::Generator generator);

struct AugmentedBatch {
  at::Tensor teacher;  // (B,3,crop,crop), teacher_dtype, teacher normalisation
  at::Tensor student;  // (B,3,crop,crop), float32, student normalisation
};

/** tiles: uint8 (B,H,W,3) on the target device; params from sample_augment_params. */
AugmentedBatch augment_batch(const at::Tensor& tiles, const at::Tensor& params, const AugmentConfig& config,
                             const Normalization& teacher, const Normalization& student, at::ScalarType teacher_dtype);

}  // namespace g2l
