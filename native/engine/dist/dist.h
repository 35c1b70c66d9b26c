// Data parallelism over c10d (engine-internal API; the public surface is g2l/dist.h).
//
// DistContext owns the c10d TCPStore and one backend: ProcessGroupNCCL for CUDA devices (CUDA builds with NCCL),
// ProcessGroupGloo for the CPU (compiled into libtorch_cpu; see native/engine/third_party/gloo/README.md for how its
// header is made to compile). GradientSync averages or sums gradients across ranks the way DDP does: parameters are
// packed into ~25 MB flat buckets in reverse registration order (the order backward produces them), each parameter's
// .grad() is a view into its bucket, and a post hook on each parameter's gradient accumulator launches a bucket's
// all-reduce as soon as all of its gradients are in, while backward goes on. Buckets launch strictly in order, so every
// rank issues the same collectives in the same order whatever order its hooks fire in.
//
// Usage (one training step):
//   auto dist = DistContext::create(cfg);                                // rendezvous
//   dist->broadcast_(params);                                            // rank 0's initial weights everywhere
//   GradientSync sync(dist, params, GradientSync::Reduction::Sum);       // Sum: the loss is already global
//   options.cross_rank = dist->cross_rank_sum();                         // global BatchNorm statistics in the loss
//   loss.backward();  sync.finish();  optimizer.step();
#pragma once

#include <ATen/ATen.h>

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "dist/cross_rank.h"
#include "g2l/dist.h"

namespace c10d {
class Backend;
class Store;
class Work;
}  // namespace c10d

namespace torch::autograd {
struct Node;
}

namespace g2l {

class DistContext : public std::enable_shared_from_this<DistContext> {
 public:
  /** Rendezvous and backend creation; blocks until every rank has joined (or the timeout passes). */
  static std::shared_ptr<DistContext> create(const DistConfig& config);
  ~DistContext();

  int rank() const { return config_.rank; }
  int world_size() const { return config_.world_size; }
  int local_rank() const { return config_.local_rank; }
  bool is_primary() const { return config_.rank == 0; }
  const DistConfig& config() const { return config_; }
  const std::string& backend_name() const { return backend_name_; }
  at::Device device() const { return device_; }

  // Collectives. Every rank calls them in the same order with the same shapes. Tensors are on device().
  /** Sums over ranks in place, all tensors in one collective (one dtype per call); waits for the result. */
  void all_reduce_sum_(const std::vector<at::Tensor>& tensors);
  /** Copies rank `root`'s values into every rank's tensors, in place (one collective per dtype). */
  void broadcast_(const std::vector<at::Tensor>& tensors, int root = 0);
  /** Starts an in-place sum of one contiguous tensor; the caller waits on the returned work. */
  c10::intrusive_ptr<c10d::Work> all_reduce_sum_async(at::Tensor& flat);
  void barrier();

  /** The loss's hook (cross_rank.h) over this process group. */
  c10::intrusive_ptr<CrossRankSum> cross_rank_sum();

 private:
  explicit DistContext(const DistConfig& config);
  DistConfig config_;
  std::string backend_name_;
  at::Device device_{at::kCPU};
  c10::intrusive_ptr<c10d::Store> store_;
  c10::intrusive_ptr<c10d::Backend> backend_;
};

class GradientSync {
 public:
  // Sum: each rank's backward already yields its share of the gradient of one global loss (the distillation loss,
  // with cross-rank BatchNorm), so the shares add up to it. Mean: each rank's loss is a mean over its own samples
  // (DDP's convention), so the average of the ranks' gradients is the gradient of the global mean.
  enum class Reduction { Sum, Mean };

  /** params: leaf tensors with requires_grad, one dtype and device, in registration (forward) order. */
  GradientSync(std::shared_ptr<DistContext> dist, std::vector<at::Tensor> params, Reduction reduction,
               int64_t bucket_bytes = 25 * 1024 * 1024);
  ~GradientSync();
  GradientSync(const GradientSync&) = delete;
  GradientSync& operator=(const GradientSync&) = delete;

  /**
   * false: the next backward passes only accumulate locally (gradient accumulation's inner micro-steps); true (the
   * default): they reduce. Set it before the backward it applies to.
   */
  void set_enabled(bool enabled);

  /**
   * After loss.backward(): launches the buckets still waiting (parameters that received no gradient count as the
   * zeros in their views), waits for all of them and leaves the reduced gradients in each parameter's .grad().
   */
  void finish();

  int64_t bucket_count() const { return static_cast<int64_t>(buckets_.size()); }
  int64_t total_bytes() const;
  /** Buckets of the last finished step whose all-reduce started during backward (the rest started in finish()). */
  int64_t launched_during_backward() const { return last_launched_during_backward_; }

 private:
  struct Bucket {
    at::Tensor flat;              // (numel) the bucket's gradients, the parameters' .grad() views into it
    std::vector<size_t> members;  // indices into params_
    size_t pending = 0;           // gradients not yet accumulated this backward
    c10::intrusive_ptr<c10d::Work> work;
  };
  void on_gradient_ready(size_t index);
  void launch_ready_buckets_locked();
  void launch_locked(Bucket& bucket);
  void reset_locked();

  std::shared_ptr<DistContext> dist_;
  Reduction reduction_;
  std::vector<at::Tensor> params_;
  std::vector<at::Tensor> views_;  // views_[i]: params_[i]'s gradient inside its bucket, shaped like the param
  std::vector<size_t> bucket_of_;
  std::vector<bool> ready_;
  std::vector<Bucket> buckets_;
  size_t next_launch_ = 0;
  int64_t launched_during_backward_ = 0;
  int64_t last_launched_during_backward_ = 0;
  bool trace_ = false;  // G2L_DIST_TRACE=1: one line a step on stderr about the overlap
  bool enabled_ = true;
  std::vector<std::shared_ptr<torch::autograd::Node>> accumulators_;  // keeps the hooked accumulators alive
  std::shared_ptr<bool> alive_;  // the hooks outlive nothing: they check it before touching `this`
  std::mutex mutex_;             // hooks run on autograd's device threads
};

}  // namespace g2l
