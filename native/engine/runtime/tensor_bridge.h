// Conversions between the engine's HostTensor and at::Tensor (engine-internal).
#pragma once

#include <ATen/ATen.h>

#include "g2l/engine.h"

namespace g2l {

at::ScalarType to_scalar_type(DType dtype);
DType from_scalar_type(at::ScalarType type);

/** A CPU at::Tensor viewing the HostTensor's memory (no copy): valid while the HostTensor's memory lives. */
at::Tensor view_as_aten(const HostTensor& t);

/** A HostTensor owning a contiguous CPU copy (or the tensor itself when it already is one). */
HostTensor to_host(const at::Tensor& t);

/** Parses "cpu", "cuda", "cuda:1" into a device, with a clear error for other strings or absent devices. */
at::Device parse_device(const std::string& device);

/** Runs `f`, turning libtorch's c10::Error into g2l::Error with the message alone (no C++ backtrace). */
template <typename F>
auto with_torch_errors(F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const c10::Error& e) {
    throw Error(e.what_without_backtrace());
  }
}

}  // namespace g2l
