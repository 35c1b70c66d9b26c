// SDPA backend preference and record (contract: attention.h).
#include "attention.h"

#include <ATen/Context.h>
#include <ATen/SDPBackend.h>

#include <array>
#include <cstdlib>
#include <mutex>
#include <vector>

#include "g2l/engine.h"

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

std::string read_preference() {
  const char* v = std::getenv("G2L_SDPA");
  const std::string s = v == nullptr ? "" : v;
  if (s.empty() || s == "auto") return "auto";
  for (const Choice& c : kChoices) {
    if (s == c.name) return s;
  }
  throw Error("G2L_SDPA='" + s +
              "' is not an attention backend: use auto (libtorch's order), cudnn, flash, efficient or math, or unset "
              "it");
}

// Puts the preferred backend first, once, at the first CUDA attention: libtorch settles its default order at its
// own first CUDA attention (at::_fused_sdp_choice below makes that happen now), so an order set before would be
// overwritten.
void apply_preference(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  static std::once_flag applied;
  std::call_once(applied, [&] {
    const std::string& wanted = sdpa_preference();
    if (wanted == "auto") return;
    (void)at::_fused_sdp_choice(q, k, v);
    at::SDPBackend first = at::SDPBackend::error;
    for (const Choice& c : kChoices) {
      if (wanted == c.name) first = c.backend;
    }
    std::vector<int64_t> order{static_cast<int64_t>(first)};
    for (at::SDPBackend b : at::globalContext().sDPPriorityOrder()) {
      if (b != first) order.push_back(static_cast<int64_t>(b));
    }
    at::globalContext().setSDPPriorityOrder(order);
  });
}

}  // namespace

const std::string& sdpa_preference() {
  // Read at the first call; a bad value throws and is read again at the next call.
  static const std::string value = read_preference();
  return value;
}

std::string sdpa_backend_name(int code) {
  switch (static_cast<at::SDPBackend>(code)) {
    case at::SDPBackend::math: return "math";
    case at::SDPBackend::flash_attention: return "flash_attention";
    case at::SDPBackend::efficient_attention: return "efficient_attention";
    case at::SDPBackend::cudnn_attention: return "cudnn_attention";
    case at::SDPBackend::overrideable: return "overrideable";
    default: return "";
  }
}

at::Tensor attend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, std::atomic<int>* ran) {
  if (q.is_cuda()) apply_preference(q, k, v);
  if (ran != nullptr) ran->store(static_cast<int>(at::_fused_sdp_choice(q, k, v)), std::memory_order_relaxed);
  return at::scaled_dot_product_attention(q, k, v);
}

}  // namespace g2l
