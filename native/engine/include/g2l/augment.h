// g2l engine: the tile augmentation on HostTensors (no torch headers), for the N-API addon and other C++ callers.
// The at::Tensor form the trainer uses is native/engine/train/augment.h; both run the same code.
//
// Usage:
//   g2l::AugmentConfig cfg;                                              // G2L's recipe (docs/method.md)
//   g2l::HostTensor params = g2l::sample_augment_params(b, 256, 256, cfg, /*seed=*/7);   // (B,15) float32
//   g2l::HostAugmentedBatch out = g2l::augment_batch(tiles_u8_bhw3, params, cfg, hoptimus0, hibou,
//                                                    g2l::DType::F16, "cpu");            // (B,3,224,224) each
#pragma once

#include <array>
#include <cstdint>
#include <string>

#include "g2l/engine.h"

namespace g2l {

struct AugmentConfig {
  bool enabled = true;  // false: centre crop only
  int64_t crop = 224;
  double p_hflip = 0.5;
  double p_vflip = 0.5;
  double p_jitter = 0.5;
  double brightness = 0.15;
  double contrast = 0.15;
  double saturation = 0.1;
  double hue = 0.05;
  double p_blur = 0.1;
  int64_t blur_kernel = 9;
  double blur_sigma_min = 0.1;
  double blur_sigma_max = 2.0;
};

struct Normalization {
  std::array<float, 3> mean;
  std::array<float, 3> std;
};

/**
 * Columns of the per-sample parameter rows (float32). Flags are 0 or 1; the four jitter factors and the order are
 * always drawn (so the random stream advances the same way for every sample) but apply only when kJitter is 1;
 * kOrder0..kOrder3 hold a permutation of 0 brightness, 1 contrast, 2 saturation, 3 hue (torchvision's fn_idx).
 */
enum AugmentParamColumn : int64_t {
  kCropX = 0,
  kCropY = 1,
  kHFlip = 2,
  kVFlip = 3,
  kJitter = 4,
  kBrightness = 5,
  kContrast = 6,
  kSaturation = 7,
  kHue = 8,
  kOrder0 = 9,
  kBlur = 13,
  kSigma = 14,
};
constexpr int64_t kAugmentParamCount = 15;

/**
 * Draws (B, kAugmentParamCount) float32 parameters from an mt19937 seeded with `seed` (libtorch's CPU generator, so
 * the pure-JS backend reproduces it draw for draw): 14 draws of 32 bits per sample, in column order, with the
 * order taken by a Fisher-Yates shuffle of (0,1,2,3).
 */
HostTensor sample_augment_params(int64_t batch, int64_t tile_h, int64_t tile_w, const AugmentConfig& config,
                                 uint64_t seed);

struct HostAugmentedBatch {
  HostTensor teacher;  // (B,3,crop,crop), teacher_dtype
  HostTensor student;  // (B,3,crop,crop), float32
};

/** tiles: uint8 (B,H,W,3) on the host; runs on `device` ("cpu", "cuda:0") and returns the result on the host. */
HostAugmentedBatch augment_batch(const HostTensor& tiles, const HostTensor& params, const AugmentConfig& config,
                                 const Normalization& teacher, const Normalization& student, DType teacher_dtype,
                                 const std::string& device);

/**
 * A host buffer of `bytes` for tile batches, page-locked (pinned) when `pinned` and a CUDA device is available, so
 * copying a batch to the GPU is one DMA with no staging copy; plain memory otherwise.
 */
HostTensor alloc_tile_buffer(int64_t bytes, bool pinned);

}  // namespace g2l
