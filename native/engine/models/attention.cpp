// SDPA backend preference and record (contract: attention.h).
#include "models/attention.h"

#include <ATen/Context.h>
#include <ATen/SDPBackend.h>

#include <array>
#include <mutex>
#include <vector>

#include "g2l/engine.h"
#include "g2l/kernels.h"

namespace g2l {

namespace {

struct Choice {
  const char* name;
  at::SDPBackend backend;
};
constexpr std::array<Choice, 4> kChoices{{{"cudnn", at::SDPBackend::cudnn_attention},
                                          {"flash", at::SDPBackend::flash_attention},
                                          {"efficient", at::SDPBackend::efficient_attention},
                                          {"math", at::SDPBackend::math}}};

// libtorch's own order, recorded at the first CUDA attention (after at::_fused_sdp_choice has let libtorch settle
// it), and the order last set; both under the mutex.
std::mutex order_mutex;
std::vector<int64_t> libtorch_order;
std::vector<int64_t> current_order;

std::vector<int64_t> priority_order() {
  std::vector<int64_t> order;
  for (at::SDPBackend b : at::globalContext().sDPPriorityOrder()) order.push_back(static_cast<int64_t>(b));
  return order;
}

// Sets libtorch's priority order to `wanted` first, then the rest of libtorch's own order.
void apply_preference(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const std::string& wanted) {
  std::lock_guard<std::mutex> lock(order_mutex);
  if (libtorch_order.empty()) {
    (void)at::_fused_sdp_choice(q, k, v);
    libtorch_order = priority_order();
    current_order = libtorch_order;
  }
  std::vector<int64_t> order;
  for (const Choice& c : kChoices) {
    if (wanted == c.name) order.push_back(static_cast<int64_t>(c.backend));
  }
  for (int64_t b : libtorch_order) {
    if (order.empty() || b != order.front()) order.push_back(b);
  }
  if (order == current_order) return;
  at::globalContext().setSDPPriorityOrder(order);
  current_order = std::move(order);
}

}  // namespace

bool is_sdpa_preference(const std::string& name) {
  if (name == "auto") return true;
  for (const Choice& c : kChoices) {
    if (name == c.name) return true;
  }
  return false;
}

// The string choices of KernelOptions (g2l/kernels.h), checked where a model takes them (set_kernels) and where a
// Distiller is configured, before any work.
void validate_kernel_options(const KernelOptions& k) {
  if (!is_sdpa_preference(k.sdpa)) {
    throw Error("kernels.sdpa '" + k.sdpa +
                "' is not an attention backend: use auto (libtorch's order), cudnn, flash, efficient or math");
  }
  if (k.fused_adamw != "auto" && k.fused_adamw != "on" && k.fused_adamw != "off") {
    throw Error("kernels.fusedAdamw must be auto (fused on CUDA, foreach on the CPU), on or off, got '" +
                k.fused_adamw + "'");
  }
  if (k.fp8_quant != "cuda" && k.fp8_quant != "aten") {
    throw Error("kernels.fp8Quant must be cuda (the fused kernel where it applies) or aten (at:: ops), got '" +
                k.fp8_quant + "'");
  }
}

std::string sdpa_backend_name(int code) {
  switch (static_cast<at::SDPBackend>(code)) {
    case at::SDPBackend::math:
      return "math";
    case at::SDPBackend::flash_attention:
      return "flash_attention";
    case at::SDPBackend::efficient_attention:
      return "efficient_attention";
    case at::SDPBackend::cudnn_attention:
      return "cudnn_attention";
    case at::SDPBackend::overrideable:
      return "overrideable";
    default:
      return "";
  }
}

at::Tensor attend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const std::string& preference,
                  std::atomic<int>* ran) {
  if (q.is_cuda()) apply_preference(q, k, v, preference);
  if (ran != nullptr) ran->store(static_cast<int>(at::_fused_sdp_choice(q, k, v)), std::memory_order_relaxed);
  return at::scaled_dot_product_attention(q, k, v);
}

}  // namespace g2l
