// Image preprocessing: uint8 RGB (N,H,W,3) -> normalised float (N,3,H,W), on the CPU with libtorch ops and on
// CUDA with one fused kernel (cuda/preprocess.cu). Both compute x/255 * (1/std) - mean/std in float32.
#ifdef G2L_WITH_CUDA
#include <c10/cuda/CUDAStream.h>

#include "kernels/cuda/kernels.h"
#endif

#include "models/preprocess.h"
#include "runtime/tensor_bridge.h"

namespace g2l {

at::Tensor normalize_images(const at::Tensor& images, const std::array<float, 3>& mean,
                            const std::array<float, 3>& std) {
  if (images.dim() != 4 || images.size(3) != 3 || images.scalar_type() != at::kByte) {
    throw Error("normalize_images: expected uint8 images of shape (N,H,W,3), got " +
                std::string(c10::toString(images.scalar_type())) + " " + c10::str(images.sizes()));
  }
  for (float s : std) {
    if (!(s > 0.f)) throw Error("normalize_images: std must be positive");
  }
  at::Tensor x = images.contiguous();
#ifdef G2L_WITH_CUDA
  if (x.is_cuda()) {
    at::Tensor out = at::empty({x.size(0), 3, x.size(1), x.size(2)}, x.options().dtype(at::kFloat));
    cuda::normalize_u8_nhwc_to_f32_nchw(x.data_ptr<uint8_t>(), out.data_ptr<float>(), x.size(0), x.size(1), x.size(2),
                                        mean[0], mean[1], mean[2], std[0], std[1], std[2],
                                        c10::cuda::getCurrentCUDAStream().stream());
    return out;
  }
#endif
  auto opts = at::TensorOptions().dtype(at::kFloat).device(x.device());
  at::Tensor scale = at::tensor({1.f / (255.f * std[0]), 1.f / (255.f * std[1]), 1.f / (255.f * std[2])}, opts);
  at::Tensor shift = at::tensor({-mean[0] / std[0], -mean[1] / std[1], -mean[2] / std[2]}, opts);
  // (N,H,W,3) * (3) + (3), then to channels-first: one pass over the data plus the layout copy.
  return at::addcmul(shift, x.to(at::kFloat), scale).permute({0, 3, 1, 2}).contiguous();
}

HostTensor normalize_images(const HostTensor& images_nhwc_u8, const std::array<float, 3>& mean,
                            const std::array<float, 3>& std, const std::string& device) {
  return with_torch_errors([&] {
    if (images_nhwc_u8.dtype != DType::U8) {
      throw Error(std::string("normalize_images: expected uint8 images, got ") + dtype_name(images_nhwc_u8.dtype));
    }
    at::Device dev = parse_device(device);
    at::Tensor x = view_as_aten(images_nhwc_u8);
    if (!dev.is_cpu()) x = x.to(dev, /*non_blocking=*/false);
    return to_host(normalize_images(x, mean, std));
  });
}

}  // namespace g2l
