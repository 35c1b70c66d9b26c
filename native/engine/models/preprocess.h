// Image preprocessing on at::Tensor (engine-internal); the HostTensor form is in g2l/engine.h.
#pragma once

#include <ATen/ATen.h>

#include <array>

namespace g2l {

/** uint8 (N,H,W,3) on any device -> float32 (N,3,H,W) on the same device, (x/255 - mean) / std per channel. */
at::Tensor normalize_images(const at::Tensor& images, const std::array<float, 3>& mean,
                            const std::array<float, 3>& std);

}  // namespace g2l
