// HostTensor <-> at::Tensor, and device parsing.
#include "runtime/tensor_bridge.h"

#include <sstream>

namespace g2l {

size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::F32:
      return 4;
    case DType::F64:
      return 8;
    case DType::F16:
      return 2;
    case DType::BF16:
      return 2;
    case DType::U8:
      return 1;
    case DType::I64:
      return 8;
  }
  throw Error("dtype_size: unknown dtype " + std::to_string(static_cast<int>(dtype)));
}

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::F32:
      return "float32";
    case DType::F64:
      return "float64";
    case DType::F16:
      return "float16";
    case DType::BF16:
      return "bfloat16";
    case DType::U8:
      return "uint8";
    case DType::I64:
      return "int64";
  }
  return "unknown";
}

int64_t HostTensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

HostTensor HostTensor::borrow(DType dtype, std::vector<int64_t> shape, void* data) {
  HostTensor t;
  t.dtype = dtype;
  t.shape = std::move(shape);
  t.data = data;
  return t;
}

at::ScalarType to_scalar_type(DType dtype) {
  switch (dtype) {
    case DType::F32:
      return at::kFloat;
    case DType::F64:
      return at::kDouble;
    case DType::F16:
      return at::kHalf;
    case DType::BF16:
      return at::kBFloat16;
    case DType::U8:
      return at::kByte;
    case DType::I64:
      return at::kLong;
  }
  throw Error("to_scalar_type: unknown dtype");
}

DType from_scalar_type(at::ScalarType type) {
  switch (type) {
    case at::kFloat:
      return DType::F32;
    case at::kDouble:
      return DType::F64;
    case at::kHalf:
      return DType::F16;
    case at::kBFloat16:
      return DType::BF16;
    case at::kByte:
      return DType::U8;
    case at::kLong:
      return DType::I64;
    default:
      throw Error(std::string("engine returned an unsupported dtype: ") + c10::toString(type));
  }
}

at::Tensor view_as_aten(const HostTensor& t) {
  for (int64_t d : t.shape) {
    if (d < 0) throw Error("tensor shape has a negative dimension");
  }
  if (t.data == nullptr && t.numel() > 0) throw Error("tensor has no data");
  return at::from_blob(t.data, t.shape, at::TensorOptions().dtype(to_scalar_type(t.dtype)));
}

HostTensor to_host(const at::Tensor& t) {
  at::Tensor c = t.device().is_cpu() ? t.contiguous() : t.to(at::kCPU).contiguous();
  HostTensor out;
  out.dtype = from_scalar_type(c.scalar_type());
  out.shape = c.sizes().vec();
  auto holder = std::make_shared<at::Tensor>(c);
  out.data = holder->data_ptr();
  out.owner = std::static_pointer_cast<void>(holder);
  return out;
}

at::Device parse_device(const std::string& device) {
  at::Device d(at::kCPU);
  try {
    d = at::Device(device);
  } catch (const c10::Error&) {
    throw Error("unknown device '" + device + "': use cpu, cuda or cuda:<index>");
  }
  if (d.is_cuda()) {
    if (!at::hasCUDA()) {
      throw Error("device '" + device + "' asked for, but " + std::string("this engine has no CUDA device available") +
                  ": use --device cpu, or build the engine with CUDA on a GPU machine (npm run setup)");
    }
    int64_t count = static_cast<int64_t>(at::getNumGPUs());
    if (d.has_index() && d.index() >= count) {
      std::ostringstream msg;
      msg << "device '" << device << "' does not exist: " << count << " CUDA device(s) visible";
      throw Error(msg.str());
    }
  } else if (!d.is_cpu()) {
    throw Error("unsupported device '" + device + "': use cpu, cuda or cuda:<index>");
  }
  return d;
}

}  // namespace g2l
