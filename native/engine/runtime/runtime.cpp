// What the engine was built with and what it can use now: libtorch version, CUDA devices, thread pools.
#include <ATen/Parallel.h>
#include <torch/version.h>

#ifdef G2L_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <cuda_runtime_api.h>
#endif

#include <sstream>

#include "runtime/tensor_bridge.h"

#ifndef G2L_ENGINE_VERSION
#define G2L_ENGINE_VERSION "0.1.0"
#endif

namespace g2l {

static std::vector<std::string> split_archs(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  std::string item;
  while (std::getline(in, item, ',')) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

RuntimeInfo runtime_info() {
  return with_torch_errors([] {
    RuntimeInfo info;
    info.engine_version = G2L_ENGINE_VERSION;
    info.libtorch_version = TORCH_VERSION;
    info.cuda_architectures = split_archs(G2L_CUDA_ARCHS);
    info.cpu_threads = at::get_num_threads();
    info.parallel_info = at::get_parallel_info();
#ifdef G2L_WITH_CUDA
    info.cuda_built = true;
    int runtime = 0;
    if (cudaRuntimeGetVersion(&runtime) == cudaSuccess) {
      info.cuda_runtime_version = std::to_string(runtime / 1000) + "." + std::to_string((runtime % 1000) / 10);
    }
    info.cuda_available = at::hasCUDA() && at::getNumGPUs() > 0;
    if (info.cuda_available) {
      for (int i = 0; i < static_cast<int>(at::getNumGPUs()); ++i) {
        const cudaDeviceProp* p = at::cuda::getDeviceProperties(i);
        info.devices.push_back({i, p->name, p->major, p->minor, static_cast<int64_t>(p->totalGlobalMem)});
      }
    }
#endif
    return info;
  });
}

}  // namespace g2l
