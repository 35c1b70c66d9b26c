// Data parallelism over c10d: rendezvous, the Gloo and NCCL backends, coalesced collectives and the bucketed,
// backward-overlapped gradient all-reduce (see dist.h for the design).
//
// ProcessGroupGloo.hpp needs USE_C10D_GLOO and includes gloo headers that pip's libtorch does not ship: the ones in
// native/engine/third_party/gloo/ declare what it names (README.md there). ProcessGroupNCCL.hpp needs USE_C10D_NCCL and
// nccl.h, which CMakeLists.txt finds in the nvidia-nccl wheel beside torch (G2L_WITH_NCCL).
#define USE_C10D_GLOO 1
#if defined(G2L_WITH_CUDA) && defined(G2L_WITH_NCCL)
#define USE_C10D_NCCL 1
#endif

#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/utils/lambda_post_hook.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/Work.hpp>
#ifdef USE_C10D_NCCL
#include <c10/cuda/CUDAGuard.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <limits>

#include "dist/dist.h"
#include "runtime/instrument.h"
#include "runtime/tensor_bridge.h"

namespace g2l {

// ---------------------------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------------------------

namespace {

bool env_int(const char* name, int& out) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return false;
  char* end = nullptr;
  long n = std::strtol(v, &end, 10);
  if (*end != '\0' || n < 0 || n > std::numeric_limits<int>::max()) {
    throw Error(std::string("environment variable ") + name + "=\"" + v +
                "\" is not a non-negative integer; set it as torchrun does (RANK, WORLD_SIZE, LOCAL_RANK, "
                "MASTER_PORT are integers)");
  }
  out = static_cast<int>(n);
  return true;
}

}  // namespace

DistConfig dist_config_from_env(const DistConfig& defaults) {
  DistConfig c = defaults;
  env_int("RANK", c.rank);
  env_int("WORLD_SIZE", c.world_size);
  if (!env_int("LOCAL_RANK", c.local_rank)) c.local_rank = defaults.local_rank;
  env_int("MASTER_PORT", c.master_port);
  if (const char* addr = std::getenv("MASTER_ADDR"); addr != nullptr && *addr != '\0') c.master_addr = addr;
  validate_dist_config(c);
  return c;
}

void validate_dist_config(const DistConfig& c) {
  if (c.world_size < 1) throw Error("data parallelism: world size must be >= 1, got " + std::to_string(c.world_size));
  if (c.rank < 0 || c.rank >= c.world_size) {
    throw Error("data parallelism: rank " + std::to_string(c.rank) + " is outside the world of " +
                std::to_string(c.world_size) + " ranks (RANK must be in [0, WORLD_SIZE))");
  }
  if (c.local_rank < 0) throw Error("data parallelism: local rank must be >= 0");
  if (c.master_port < 1 || c.master_port > 65535) {
    throw Error("data parallelism: master port " + std::to_string(c.master_port) + " is not a TCP port (1-65535)");
  }
  if (c.master_addr.empty()) throw Error("data parallelism: MASTER_ADDR is empty; give rank 0's host name or address");
  if (c.backend != "auto" && c.backend != "gloo" && c.backend != "nccl") {
    throw Error("data parallelism: backend must be \"auto\", \"gloo\" or \"nccl\", got \"" + c.backend + "\"");
  }
  if (c.timeout_ms <= 0) throw Error("data parallelism: timeout must be positive");
  if (c.bucket_bytes <= 0) throw Error("data parallelism: bucket size must be positive");
}

// ---------------------------------------------------------------------------------------------------------------
// DistContext
// ---------------------------------------------------------------------------------------------------------------

DistContext::DistContext(const DistConfig& config) : config_(config) {}

DistContext::~DistContext() = default;

std::shared_ptr<DistContext> DistContext::create(const DistConfig& config) {
  validate_dist_config(config);
  std::shared_ptr<DistContext> ctx(new DistContext(config));
  ctx->device_ = parse_device(config.device);
  // One GPU per process: a bare "cuda" means this process's own, cuda:<local_rank>.
  if (ctx->device_.is_cuda() && !ctx->device_.has_index()) {
    ctx->device_ = at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(config.local_rank));
  }
  std::string backend = config.backend;
  if (backend == "auto") backend = ctx->device_.is_cuda() ? "nccl" : "gloo";
  if (backend == "nccl" && !ctx->device_.is_cuda()) {
    throw Error("data parallelism: the nccl backend needs a CUDA device, got \"" + config.device +
                "\"; use --device cuda or the gloo backend");
  }
  ctx->backend_name_ = backend;
  const auto timeout = std::chrono::milliseconds(config.timeout_ms);

  return with_torch_errors([&] {
    c10d::TCPStoreOptions opts;
    opts.port = static_cast<uint16_t>(config.master_port);
    // Rank 0 serves the store, unless torchrun's agent already does (it says so in TORCHELASTIC_USE_AGENT_STORE and
    // puts its own address in MASTER_ADDR/MASTER_PORT): then every rank is a client, as in torch.distributed.
    const char* agent_store = std::getenv("TORCHELASTIC_USE_AGENT_STORE");
    const bool agent_serves = agent_store != nullptr && std::string(agent_store) == "True";
    opts.isServer = config.rank == 0 && !agent_serves;
    opts.numWorkers = static_cast<size_t>(config.world_size);
    opts.waitWorkers = true;
    opts.timeout = timeout;
    try {
      ctx->store_ = c10::make_intrusive<c10d::TCPStore>(config.master_addr, opts);
    } catch (const std::exception& e) {
      throw Error("data parallelism: rank " + std::to_string(config.rank) + " could not join the rendezvous at " +
                  config.master_addr + ":" + std::to_string(config.master_port) + " (" + e.what() +
                  "). Check MASTER_ADDR/MASTER_PORT, that rank 0 is running and that the port is free and reachable");
    }
    // Keys of this attempt only: torchrun's agent store outlives a restarted world (TORCHELASTIC_RESTART_COUNT).
    const char* restart = std::getenv("TORCHELASTIC_RESTART_COUNT");
    ctx->store_ = c10::make_intrusive<c10d::PrefixStore>(
        std::string("g2l/") + (restart != nullptr && *restart != '\0' ? restart : "0"), ctx->store_);
    if (backend == "gloo") {
      auto options = c10d::ProcessGroupGloo::Options::create(timeout);
      // The network interface as torch.distributed picks it: GLOO_SOCKET_IFNAME when set (comma-separated names),
      // loopback for a single-node world (the --nproc launcher), else the address the host name resolves to.
      const char* ifname = std::getenv("GLOO_SOCKET_IFNAME");
      if (ifname != nullptr && *ifname != '\0') {
        std::string names = ifname;
        for (size_t start = 0; start <= names.size();) {
          size_t end = names.find(',', start);
          if (end == std::string::npos) end = names.size();
          if (end > start) {
            options->devices.push_back(
                c10d::ProcessGroupGloo::createDeviceForInterface(names.substr(start, end - start)));
          }
          start = end + 1;
        }
      } else if (config.master_addr == "127.0.0.1" || config.master_addr == "localhost") {
        options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
      } else {
        options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
      }
      ctx->backend_ = c10::make_intrusive<c10d::ProcessGroupGloo>(ctx->store_, config.rank, config.world_size, options);
    } else {
#ifdef USE_C10D_NCCL
      c10::cuda::set_device(ctx->device_.index());
      auto options = c10d::ProcessGroupNCCL::Options::create();
      options->timeout = timeout;
      ctx->backend_ = c10::make_intrusive<c10d::ProcessGroupNCCL>(ctx->store_, config.rank, config.world_size, options);
#else
      throw Error(
          "data parallelism: this engine was built without NCCL (a CPU build, or nccl.h was not found at build "
          "time); rebuild on a CUDA host with the nvidia-nccl package beside torch, or use the gloo backend");
#endif
    }
    return ctx;
  });
}

void DistContext::all_reduce_sum_(const std::vector<at::Tensor>& tensors) {
  if (tensors.empty()) return;
  with_torch_errors([&] {
    at::Tensor flat;
    if (tensors.size() == 1 && tensors[0].is_contiguous()) {
      flat = tensors[0];
    } else {
      std::vector<at::Tensor> pieces;
      pieces.reserve(tensors.size());
      for (const auto& t : tensors) pieces.push_back(t.reshape({-1}));
      flat = at::cat(pieces);
    }
    std::vector<at::Tensor> arg{flat};
    backend_->allreduce(arg)->wait();
    if (!flat.is_same(tensors[0])) {
      int64_t offset = 0;
      for (const auto& t : tensors) {
        t.copy_(flat.narrow(0, offset, t.numel()).view(t.sizes()));
        offset += t.numel();
      }
    }
  });
}

void DistContext::broadcast_(const std::vector<at::Tensor>& tensors, int root) {
  if (tensors.empty()) return;
  with_torch_errors([&] {
    // One flat buffer per dtype: a handful of collectives instead of one per parameter.
    std::vector<at::ScalarType> dtypes;
    for (const auto& t : tensors) {
      if (std::find(dtypes.begin(), dtypes.end(), t.scalar_type()) == dtypes.end()) dtypes.push_back(t.scalar_type());
    }
    for (at::ScalarType dtype : dtypes) {
      std::vector<at::Tensor> group, pieces;
      for (const auto& t : tensors) {
        if (t.scalar_type() == dtype) {
          group.push_back(t);
          pieces.push_back(t.detach().reshape({-1}));
        }
      }
      at::Tensor flat = at::cat(pieces);
      std::vector<at::Tensor> arg{flat};
      c10d::BroadcastOptions opts;
      opts.rootRank = root;
      backend_->broadcast(arg, opts)->wait();
      at::NoGradGuard no_grad;
      int64_t offset = 0;
      for (auto& t : group) {
        t.detach().copy_(flat.narrow(0, offset, t.numel()).view(t.sizes()));
        offset += t.numel();
      }
    }
  });
}

c10::intrusive_ptr<c10d::Work> DistContext::all_reduce_sum_async(at::Tensor& flat) {
  std::vector<at::Tensor> arg{flat};
  return backend_->allreduce(arg);
}

void DistContext::barrier() {
  with_torch_errors([&] {
    c10d::BarrierOptions opts;
    if (device_.is_cuda()) opts.device_ids = {device_.index()};
    backend_->barrier(opts)->wait();
  });
}

namespace {

class ProcessGroupSum : public CrossRankSum {
 public:
  explicit ProcessGroupSum(std::shared_ptr<DistContext> dist) : dist_(std::move(dist)) {}
  void sum_(const std::vector<at::Tensor>& tensors) const override { dist_->all_reduce_sum_(tensors); }
  int world_size() const override { return dist_->world_size(); }

 private:
  std::shared_ptr<DistContext> dist_;
};

}  // namespace

c10::intrusive_ptr<CrossRankSum> DistContext::cross_rank_sum() {
  return c10::make_intrusive<ProcessGroupSum>(shared_from_this());
}

// ---------------------------------------------------------------------------------------------------------------
// The public surface (g2l/dist.h)
// ---------------------------------------------------------------------------------------------------------------

std::shared_ptr<DistContext> init_distributed(const DistConfig& config) { return DistContext::create(config); }

DistInfo dist_info(const DistContext& context) {
  DistInfo info;
  info.rank = context.rank();
  info.world_size = context.world_size();
  info.local_rank = context.local_rank();
  info.backend = context.backend_name();
  info.device = context.device().str();
  return info;
}

// ---------------------------------------------------------------------------------------------------------------
// GradientSync
// ---------------------------------------------------------------------------------------------------------------

GradientSync::GradientSync(std::shared_ptr<DistContext> dist, std::vector<at::Tensor> params, Reduction reduction,
                           int64_t bucket_bytes)
    : dist_(std::move(dist)), reduction_(reduction), params_(std::move(params)), alive_(std::make_shared<bool>(true)) {
  trace_ = instrument_flag("G2L_DIST_TRACE");
  if (!dist_) throw Error("GradientSync: no process group");
  if (params_.empty()) throw Error("GradientSync: no parameters");
  if (bucket_bytes <= 0) throw Error("GradientSync: bucket size must be positive");
  const auto options = params_[0].options();
  for (const auto& p : params_) {
    if (!p.is_leaf() || !p.requires_grad()) throw Error("GradientSync: parameters must be leaves that require grad");
    if (p.scalar_type() != options.dtype().toScalarType() || p.device() != options.device()) {
      throw Error("GradientSync: parameters must share one dtype and device");
    }
  }

  // Buckets in reverse registration order: the last layers' gradients come first in backward.
  const int64_t elem = static_cast<int64_t>(params_[0].element_size());
  std::vector<std::vector<size_t>> groups(1);
  int64_t group_bytes = 0;
  for (size_t k = params_.size(); k-- > 0;) {
    const int64_t bytes = params_[k].numel() * elem;
    if (!groups.back().empty() && group_bytes + bytes > bucket_bytes) {
      groups.emplace_back();
      group_bytes = 0;
    }
    groups.back().push_back(k);
    group_bytes += bytes;
  }

  at::NoGradGuard no_grad;
  bucket_of_.assign(params_.size(), 0);
  views_.resize(params_.size());
  ready_.assign(params_.size(), false);
  for (size_t b = 0; b < groups.size(); ++b) {
    int64_t numel = 0;
    for (size_t k : groups[b]) numel += params_[k].numel();
    Bucket bucket;
    bucket.flat = at::zeros({numel}, options.requires_grad(false));
    bucket.members = groups[b];
    bucket.pending = groups[b].size();
    int64_t offset = 0;
    for (size_t k : groups[b]) {
      at::Tensor& p = params_[k];
      views_[k] = bucket.flat.narrow(0, offset, p.numel()).view(p.sizes());
      offset += p.numel();
      bucket_of_[k] = b;
      // The gradient lives in the bucket from now on: backward accumulates into it in place.
      if (p.grad().defined()) views_[k].copy_(p.grad());
      p.mutable_grad() = views_[k];
    }
    buckets_.push_back(std::move(bucket));
  }

  // A post hook on each gradient accumulator: it runs after the gradient has been added into .grad().
  std::weak_ptr<bool> alive = alive_;
  for (size_t k = 0; k < params_.size(); ++k) {
    std::shared_ptr<torch::autograd::Node> acc = torch::autograd::impl::grad_accumulator(params_[k]);
    acc->add_post_hook(std::make_unique<torch::autograd::utils::LambdaPostHook>(
        [this, alive, k](const torch::autograd::variable_list& outputs, const torch::autograd::variable_list&) {
          if (!alive.expired()) on_gradient_ready(k);
          return outputs;
        }));
    accumulators_.push_back(std::move(acc));
  }
}

GradientSync::~GradientSync() {
  alive_.reset();
  // Give back the gradients as ordinary tensors so the parameters outlive the buckets cleanly.
  for (size_t k = 0; k < params_.size(); ++k) {
    if (params_[k].grad().is_same(views_[k])) params_[k].mutable_grad() = views_[k].clone();
  }
}

int64_t GradientSync::total_bytes() const {
  int64_t n = 0;
  for (const auto& b : buckets_) n += b.flat.numel() * static_cast<int64_t>(b.flat.element_size());
  return n;
}

void GradientSync::set_enabled(bool enabled) {
  std::lock_guard<std::mutex> lock(mutex_);
  enabled_ = enabled;
}

void GradientSync::on_gradient_ready(size_t index) {
  std::lock_guard<std::mutex> lock(mutex_);
  at::Tensor& grad = params_[index].mutable_grad();
  if (!grad.is_same(views_[index])) {
    // Something replaced .grad() (e.g. set to None and re-created by backward): move it back into the bucket.
    at::NoGradGuard no_grad;
    if (grad.defined()) {
      views_[index].copy_(grad);
    } else {
      views_[index].zero_();
    }
    grad = views_[index];
  }
  // Micro-steps that only accumulate leave the buckets alone. A reducing backward must be followed by finish() before
  // the next backward: one reaching a parameter twice before it would add into a bucket already on its way.
  if (!enabled_ || ready_[index]) return;
  ready_[index] = true;
  Bucket& bucket = buckets_[bucket_of_[index]];
  if (bucket.pending > 0) --bucket.pending;
  launch_ready_buckets_locked();
}

void GradientSync::launch_ready_buckets_locked() {
  while (next_launch_ < buckets_.size() && buckets_[next_launch_].pending == 0) {
    launch_locked(buckets_[next_launch_]);
    ++next_launch_;
    ++launched_during_backward_;
  }
}

void GradientSync::launch_locked(Bucket& bucket) {
  at::NoGradGuard no_grad;
  if (reduction_ == Reduction::Mean) bucket.flat.div_(static_cast<double>(dist_->world_size()));
  bucket.work = dist_->all_reduce_sum_async(bucket.flat);
}

void GradientSync::reset_locked() {
  std::fill(ready_.begin(), ready_.end(), false);
  for (auto& b : buckets_) {
    b.pending = b.members.size();
    b.work.reset();
  }
  next_launch_ = 0;
  launched_during_backward_ = 0;
}

void GradientSync::finish() {
  std::lock_guard<std::mutex> lock(mutex_);
  with_torch_errors([&] {
    if (enabled_) {
      // Parameters that took no part in this backward keep the zeros (or the earlier micro-steps' sums) in their
      // views; their buckets go now, still in order.
      for (; next_launch_ < buckets_.size(); ++next_launch_) {
        Bucket& b = buckets_[next_launch_];
        b.pending = 0;
        launch_locked(b);
      }
      for (auto& b : buckets_) {
        if (b.work) b.work->wait();
      }
      last_launched_during_backward_ = launched_during_backward_;
      if (trace_) {
        std::fprintf(stderr, "g2l dist: rank %d: %lld/%zu gradient buckets launched during backward\n", dist_->rank(),
                     static_cast<long long>(launched_during_backward_), buckets_.size());
      }
      // Make sure the gradients the optimiser reads are the bucket views, whatever replaced them since.
      for (size_t k = 0; k < params_.size(); ++k) {
        if (!params_[k].grad().is_same(views_[k])) params_[k].mutable_grad() = views_[k];
      }
    }
    reset_locked();
  });
}

}  // namespace g2l
