// FP8 (E4M3) matrix products for the frozen teacher; the scheme is in quant.h.
#ifdef G2L_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAStream.h>

#include "kernels/cuda/kernels.h"
#endif

#include <ATen/ATen.h>

#include <string>
#include <utility>

#include "g2l/distill.h"
#include "kernels/quant.h"
#include "runtime/tensor_bridge.h"

namespace g2l {

namespace {

/** The at:: reference of the quantisation (and the kernel's contract): same operations, same rounding. */
Fp8Rows quantize_rows_aten(const at::Tensor& x) {
  at::Tensor xf = x.to(at::kFloat);
  at::Tensor amax = xf.abs().amax({1}, /*keepdim=*/true).clamp_min(kFp8MinAmax);
  // A same-device tensor divisor, not a scalar: CUDA turns division by a scalar into a product with its reciprocal;
  // the kernel divides, correctly rounded. The codes are x times the correctly rounded 1/scale, as in the kernel.
  at::Tensor scales = at::div(amax, at::scalar_tensor(kFp8E4M3Max, amax.options()));
  at::Tensor codes = (xf * at::reciprocal(scales)).clamp(-kFp8E4M3Max, kFp8E4M3Max).to(at::kFloat8_e4m3fn);
  return {codes.contiguous(), scales.contiguous()};
}

#ifdef G2L_WITH_CUDA
Fp8Rows quantize_rows_cuda(const at::Tensor& x) {
  at::Tensor xc = x.contiguous();
  const int64_t rows = xc.size(0), cols = xc.size(1);
  at::Tensor codes = at::empty({rows, cols}, xc.options().dtype(at::kFloat8_e4m3fn));
  at::Tensor scales = at::empty({rows, 1}, xc.options().dtype(at::kFloat));
  if (rows > 0 && cols > 0) {
    cuda::quantize_rows_bf16_to_fp8(reinterpret_cast<const uint16_t*>(xc.data_ptr()), rows, cols,
                                    reinterpret_cast<uint8_t*>(codes.data_ptr()), scales.data_ptr<float>(),
                                    static_cast<float>(kFp8MinAmax), c10::cuda::getCurrentCUDAStream().stream());
  }
  return {codes, scales};
}
#endif

}  // namespace

std::string Fp8LayerSet::describe() const {
  std::string out;
  for (auto [on, name] : {std::pair{qkv, "qkv"}, {proj, "proj"}, {fc1, "fc1"}, {fc2, "fc2"}}) {
    if (on) out += (out.empty() ? "" : ",") + std::string(name);
  }
  return out.empty() ? "none" : out;
}

Fp8LayerSet fp8_layers_from_names(const std::vector<std::string>& names) {
  Fp8LayerSet s{false, false, false, false};
  for (const std::string& item : names) {
    if (item == "qkv")
      s.qkv = true;
    else if (item == "proj")
      s.proj = true;
    else if (item == "fc1")
      s.fc1 = true;
    else if (item == "fc2")
      s.fc2 = true;
    else
      throw Error("teacherFp8Layers: unknown layer kind '" + item + "': use a subset of qkv, proj, fc1, fc2");
  }
  return s;
}

Fp8Rows quantize_rows_fp8(const at::Tensor& x, const std::string& mode) {
  if (x.dim() != 2) throw Error("FP8 quantisation: expected a 2-D tensor (rows, cols), got " + c10::str(x.sizes()));
  if (mode != "auto" && mode != "aten" && mode != "cuda") {
    throw Error("FP8 quantisation: mode must be auto, aten or cuda, got '" + mode + "'");
  }
  if (mode != "aten") {
#ifdef G2L_WITH_CUDA
    if (x.is_cuda() && x.scalar_type() == at::kBFloat16) return quantize_rows_cuda(x);
    if (mode == "cuda") {
      throw Error("FP8 quantisation: the fused kernel takes a bfloat16 tensor on a CUDA device, got " +
                  std::string(c10::toString(x.scalar_type())) + " on " + x.device().str() + ": use mode aten");
    }
#else
    if (mode == "cuda")
      throw Error("FP8 quantisation: the fused kernel needs a CUDA build of the engine: use mode aten");
#endif
  }
  return quantize_rows_aten(x);
}

at::Tensor dequantize_rows_fp8(const Fp8Rows& q) { return q.codes.to(at::kFloat) * q.scales; }

std::string fp8_unsupported_reason(const at::Device& device) {
  if (!device.is_cuda()) return "device '" + device.str() + "' is not a CUDA GPU";
#ifdef G2L_WITH_CUDA
  const int index = device.index() < 0 ? 0 : device.index();
  const cudaDeviceProp* p = at::cuda::getDeviceProperties(index);
  if (p->major * 10 + p->minor < 89) {
    return "the GPU " + std::string(p->name) + " has compute capability " + std::to_string(p->major) + "." +
           std::to_string(p->minor);
  }
  return "";
#else
  return "this engine was built without CUDA";
#endif
}

// ---------------------------------------------------------------------------------------------------------------
// Fp8Linear
// ---------------------------------------------------------------------------------------------------------------
bool Fp8Linear::fits(const at::Tensor& weight) {
  return weight.dim() == 2 && weight.size(0) % 16 == 0 && weight.size(1) % 16 == 0 && weight.size(0) > 0 &&
         weight.size(1) > 0;
}

Fp8Linear Fp8Linear::from_weight(const at::Tensor& weight, const at::Tensor& bias, const Fp8Options& options) {
  if (!fits(weight)) {
    throw Error("FP8 linear: weight " + c10::str(weight.sizes()) + " is not (N,K) with N and K multiples of 16");
  }
  at::NoGradGuard no_grad;
  Fp8Linear f;
  Fp8Rows q = quantize_rows_fp8(weight.detach(), "aten");
  f.codes_ = q.codes;
  f.scales_ = q.scales.view({1, weight.size(0)}).contiguous();
  f.options_ = options;
  if (options.emulate) {
    f.dequantized_ = dequantize_rows_fp8(q);
    if (bias.defined()) f.bias_ = bias.detach().to(at::kFloat);
  } else if (bias.defined()) {
    f.bias_ = bias.detach().to(at::kBFloat16).contiguous();
  }
  return f;
}

at::Tensor Fp8Linear::forward(const at::Tensor& x) const {
  const int64_t k = codes_.size(1);
  if (x.size(-1) != k)
    throw Error("FP8 linear: input has " + std::to_string(x.size(-1)) + " features, the layer " + std::to_string(k));
  at::Tensor x2 = x.reshape({-1, k});
  if (!x2.is_contiguous()) x2 = x2.contiguous();
  // The emulation quantises with at:: ops (what the CPU tests compare), the device path with the fused kernel
  // where it applies unless the options ask for at:: ops.
  const bool aten = options_.emulate || options_.quant == "aten";
  return forward_rows(quantize_rows_fp8(x2, aten ? "aten" : "auto"), x.sizes(), x.scalar_type());
}

at::Tensor Fp8Linear::forward_rows(const Fp8Rows& q, at::IntArrayRef sizes, at::ScalarType out_dtype) const {
  const int64_t k = codes_.size(1), n = codes_.size(0);
  if (sizes.empty() || sizes.back() != k || q.codes.dim() != 2 || q.codes.size(1) != k) {
    throw Error("FP8 linear: rows of " + std::to_string(q.codes.dim() == 2 ? q.codes.size(1) : -1) +
                " features for a layer of " + std::to_string(k));
  }
  std::vector<int64_t> out_shape(sizes.begin(), sizes.end());
  out_shape.back() = n;
  at::Tensor y;
  if (options_.emulate) {
    // What _scaled_mm computes, in float32: the products of the dequantised values, then the bf16 output rounding.
    y = at::linear(dequantize_rows_fp8(q), dequantized_, bias_).to(at::kBFloat16);
  } else {
    c10::optional<at::Tensor> bias;
    if (bias_.defined()) bias = bias_;
    y = at::_scaled_mm(q.codes, codes_.t(), q.scales, scales_, bias, /*scale_result=*/c10::nullopt,
                       /*out_dtype=*/at::kBFloat16, /*use_fast_accum=*/options_.fast_accum);
  }
  return y.to(out_dtype).view(out_shape);
}

int64_t Fp8Linear::bytes() const {
  int64_t n = 0;
  for (const at::Tensor* t : {&codes_, &scales_, &bias_, &dequantized_}) {
    if (t->defined()) n += t->numel() * static_cast<int64_t>(t->element_size());
  }
  return n;
}

}  // namespace g2l
