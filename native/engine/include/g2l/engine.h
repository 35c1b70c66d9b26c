// g2l engine: public C++ surface of the distillation engine, over libtorch.
//
// This header is plain C++17 with no torch or Node headers, so that callers (the N-API addon, a C++ service,
// tests) compile fast and never depend on libtorch's headers. Tensors cross it as HostTensor: a contiguous,
// C-ordered buffer plus a shared owner that keeps the memory alive, so results travel without copies.
//
// Usage:
//   g2l::RuntimeInfo info = g2l::runtime_info();
//   g2l::HostTensor x = g2l::HostTensor::borrow(g2l::DType::U8, {n, h, w, 3}, pixels);
//   g2l::HostTensor y = g2l::normalize_images(x, {0.707223f, 0.578729f, 0.703617f},
//                                             {0.211883f, 0.230117f, 0.177517f}, "cpu");  // (N,3,H,W) float32
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace g2l {

/** Element types that cross the engine boundary. */
enum class DType : int { F32 = 0, F64 = 1, F16 = 2, BF16 = 3, U8 = 4, I64 = 5 };

size_t dtype_size(DType dtype);
const char* dtype_name(DType dtype);

/** A contiguous, C-ordered host buffer and the owner that keeps it alive. */
struct HostTensor {
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  void* data = nullptr;
  std::shared_ptr<void> owner;  // null when the memory is borrowed from the caller for the duration of a call

  int64_t numel() const;
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype); }

  /** Wraps memory the caller keeps alive for the duration of the engine call. */
  static HostTensor borrow(DType dtype, std::vector<int64_t> shape, void* data);
};

/** Every failure the engine reports to its caller: the message says what was wrong and what to do. */
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct DeviceInfo {
  int index = 0;
  std::string name;
  int major = 0;  // compute capability
  int minor = 0;
  int64_t total_memory_bytes = 0;
};

struct RuntimeInfo {
  std::string engine_version;
  std::string libtorch_version;
  bool cuda_built = false;                      // the engine was compiled with its CUDA kernels
  std::vector<std::string> cuda_architectures;  // e.g. {"80", "90"}
  bool cuda_available = false;                  // a CUDA device can be used now
  std::string cuda_runtime_version;             // of libtorch's CUDA, when built with it
  std::vector<DeviceInfo> devices;
  int cpu_threads = 0;
  std::string parallel_info;  // libtorch's own summary of its thread pools
};

RuntimeInfo runtime_info();

/**
 * Turns RGB images into a model's input: uint8 (N,H,W,3) -> float32 (N,3,H,W), scaled to [0,1] and normalised
 * with the model's per-channel mean and std. Runs a fused kernel on CUDA devices and libtorch ops on the CPU;
 * the result is returned on the host.
 */
HostTensor normalize_images(const HostTensor& images_nhwc_u8, const std::array<float, 3>& mean,
                            const std::array<float, 3>& std, const std::string& device);

}  // namespace g2l
