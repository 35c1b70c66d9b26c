// g2l engine: distillation (the log-sum loss, the optimiser and the Distiller) on HostTensors, no torch headers.
//
// Usage:
//   g2l::LossOptions opts;                                         // alpha 4, reduction "batch", BN eps 1e-4
//   g2l::LossResult r = g2l::log_sum_loss_with_grads(zs, zt, W, b, opts, "cpu");
//   // r.loss, r.grad_student (B,Ds), r.grad_weight (Dt,Ds), r.grad_bias (Dt), in the inputs' dtype
//
//   g2l::DistillerConfig cfg;  cfg.teacher = "/models/h-optimus-0";  cfg.student = "/models/hibou-l";
//   cfg.total_steps = 10000;
//   auto d = g2l::Distiller::create(cfg);
//   g2l::StepResult s = d->step(tiles_u8_b256x256x3);             // loss, lr, wd, grad norm
//   d->save("run/checkpoints/step-100");  d->export_student("run/student");
#pragma once

#include <cstdint>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "g2l/augment.h"
#include "g2l/dist.h"
#include "g2l/engine.h"
#include "g2l/kernels.h"
#include "g2l/models.h"

namespace g2l {

// ---------------------------------------------------------------------------------------------------------------
// The log-sum loss
// ---------------------------------------------------------------------------------------------------------------

struct LossOptions {
  double alpha = 4.0;
  std::string reduction = "batch";  // "batch": log of the total sum; "sample": mean over samples of log row sums
  double bn_eps = 1e-4;
  bool teacher_bn = true;
  // Data parallelism only: "global" takes the BatchNorm statistics and the log-sum over the rows of all ranks (N ranks
  // x B equal 1 process x N.B); "local" computes them per rank, as ordinary DDP does, and averages the ranks'
  // gradients.
  std::string sync = "global";
};

struct LossResult {
  double loss = 0.0;
  HostTensor grad_student;  // (B,Ds)
  HostTensor grad_weight;   // (Dt,Ds)
  HostTensor grad_bias;     // (Dt)
};

/**
 * Loss and gradients of log-sum(BN(zs W^T + b), BN(zt)) for zs (B,Ds), zt (B,Dt), W (Dt,Ds), b (Dt), all float32
 * or all float64 (computed in that dtype), on `device`.
 */
LossResult log_sum_loss_with_grads(const HostTensor& zs, const HostTensor& zt, const HostTensor& weight,
                                   const HostTensor& bias, const LossOptions& options, const std::string& device);

// ---------------------------------------------------------------------------------------------------------------
// The optimiser: AdamW with cosine schedules of learning rate and weight decay
// ---------------------------------------------------------------------------------------------------------------

struct OptimizerConfig {
  double lr = 1e-4;       // peak learning rate (after warm-up)
  double final_lr = 0.0;  // at the last planned step
  double weight_decay = 0.05;
  double final_weight_decay = 0.0;
  int64_t warmup_steps = 0;  // linear warm-up of the learning rate: lr (s+1)/warmup_steps at step s
  int64_t total_steps = 1;   // the planned steps: the cosines (torch's CosineAnnealingLR, T_max = the steps
                             // after warm-up) run from their start values to the final ones
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double clip_grad_norm = 0.0;  // 0: no clipping; else the total L2 norm is clipped to this value
};

/** The values of the schedules at a step (0-based). */
struct ScheduleValues {
  double lr = 0.0;
  double weight_decay = 0.0;
};
ScheduleValues schedule_at(const OptimizerConfig& config, int64_t step);

/** Whether a checkpoint key takes weight decay: not biases, norms, LayerScale, tokens or position embeddings. */
bool takes_weight_decay(const std::string& key, const std::vector<int64_t>& shape);

// ---------------------------------------------------------------------------------------------------------------
// The Distiller: frozen teacher, trained student + projector, one step per batch of tiles
// ---------------------------------------------------------------------------------------------------------------

struct DistillerConfig {
  ModelSpec teacher;                   // resolved by lib/models/spec.ts (folder, preset, pooling)
  ModelSpec student;                   // its drop: the student's training-only rates (config.json's, then studentDrop)
  std::string device = "cpu";          // "cpu", "cuda", "cuda:1"
  uint64_t seed = 0;                   // projector initialisation and the per-step augmentation draws
  std::string teacher_dtype = "auto";  // "auto" (float16 on CUDA, float32 on the CPU), "float16", "bfloat16", "float32"
  bool autocast = true;                // student forward in bfloat16 autocast on CUDA (fp32 master weights)
  int64_t accumulation_steps = 1;      // split each batch into this many micro-batches (BN statistics per micro-batch)
  // FP8 (E4M3) matrix products in the teacher (issue 8): its Linear weights quantised per output row, its activations
  // per token, multiplied by _scaled_mm; the rest of the teacher in bfloat16 (teacher_dtype auto or bfloat16). Needs
  // a CUDA GPU of compute capability 8.9+ (refused elsewhere).
  // Accepted only while the first batch's teacher features keep cosine >= 0.999 with the bf16 teacher's.
  bool teacher_fp8 = false;
  // With teacher_fp8: the kinds of the blocks' Linear layers that get FP8 weights, among qkv (or q/k/v), proj, fc1,
  // fc2. qkv + fc1: the set that kept the teacher's features above the 0.999 gate on the H200 (proj and fc2 as well
  // fell to 0.9988; docs/gpu-benchmarks.md).
  std::vector<std::string> teacher_fp8_layers = {"qkv", "fc1"};
  // Test hook, not a run option: with teacher_fp8, emulate the FP8 products (quantise -> dequantise -> float32
  // matmul) on any device instead of refusing one without FP8 tensor cores, so the CPU tests exercise the FP8 path.
  // Slower and not what _scaled_mm computes bit for bit, so no run configuration sets it (lib/ passes it only from
  // DistillerConfig.testing).
  bool teacher_fp8_emulate = false;
  // Which implementation each operation runs (g2l/kernels.h); both models take these.
  KernelOptions kernels;
  LossOptions loss;
  OptimizerConfig optimizer;
  AugmentConfig augment;
  // Data parallelism (g2l/dist.h): this process is one rank of a world of W; the B `tiles` given to step() are its
  // share of the global batch of B*W, global rows rank, rank + W, rank + 2W... (as the tile sampler shards them).
  // Null (the default): one process, no collectives. A world of one runs the data-parallel path with trivial
  // collectives (a check of that path on one device).
  std::shared_ptr<DistContext> dist;
};

struct StepResult {
  int64_t step = 0;   // 0-based index of the step just taken
  double loss = 0.0;  // mean over micro-batches; NaN/Inf are returned as they are
  double lr = 0.0;
  double weight_decay = 0.0;
  double grad_norm = 0.0;           // total L2 norm of student + projector gradients, before clipping
  int64_t device_memory_bytes = 0;  // peak CUDA memory allocated so far (0 on the CPU)
  // Whether any rank asked to stop with this step (step(tiles, stop_requested)); the same on every rank of a world,
  // so all ranks stop after the same step (an interrupt reaches the ranks at different moments).
  bool stop = false;
};

struct DistillerInfo {
  int64_t student_dim = 0;
  int64_t teacher_dim = 0;
  int64_t student_params = 0;
  int64_t teacher_params = 0;
  std::string device;
  std::string teacher_model;  // one-line description of each model
  std::string student_model;
  // The student's effective training-only rates (config.json, then studentDrop): keys drop_path, attn_drop,
  // proj_drop, pos_drop, head_drop, hidden_drop (the ones of its library).
  std::vector<std::pair<std::string, double>> student_drop;
  std::vector<float> teacher_mean, teacher_std, student_mean, student_std;
  // The frozen teacher's preparation (LayerScale folding, FP8): what it did and, with FP8, the acceptance check.
  int64_t teacher_layer_scales_folded = 0;  // of teacher_layer_scales
  int64_t teacher_layer_scales = 0;
  bool teacher_fp8 = false;
  int64_t teacher_fp8_layers = 0;  // Linear layers with FP8 weights, of teacher_linear_layers
  int64_t teacher_linear_layers = 0;
  bool teacher_fp8_emulated = false;  // teacher_fp8_emulate (test hook): quantise -> dequantise -> float32
  // Smallest cosine between FP8 and bf16 teacher features over the first teacher batch; NaN until that batch ran.
  double teacher_fp8_min_cosine = std::numeric_limits<double>::quiet_NaN();
  // The run's kernel choices (DistillerConfig::kernels, g2l/kernels.h); a fused path that is on still falls back to
  // the unfused ops wherever its kernel does not apply.
  bool fused_swiglu = false;
  bool fused_norm = false;
  bool packed_qkv = false;  // a separate-q/k/v student trains with one packed q/k/v product
  // Attention: the SDPA preference (kernels.sdpa: "auto", "cudnn", ...) and the SDPA backend each model's last
  // attention ran on ("flash_attention", "cudnn_attention", "math", ...; empty before its first forward).
  std::string sdpa;
  std::string teacher_attention;
  std::string student_attention;
};

/**
 * One distillation run's state. Not thread-safe: one call at a time (the addon serialises them). Every method
 * throws g2l::Error with what failed and what to do.
 */
class Distiller {
 public:
  /** Loads both models (strict about weights), builds the projector and the optimiser. */
  static std::unique_ptr<Distiller> create(const DistillerConfig& config);
  virtual ~Distiller() = default;

  /**
   * tiles: uint8 (B,H,W,3), B >= 2 per micro-batch. Augments (one view for both models), runs the frozen teacher
   * and the student, the loss, its backward and one AdamW update at the current step. stop_requested: this rank
   * wants the run to stop after this step; StepResult::stop is its OR over the ranks (one tiny all-reduce per step
   * in a world; without one it is stop_requested itself).
   */
  virtual StepResult step(const HostTensor& tiles, bool stop_requested = false) = 0;

  /** Embeddings of centre-cropped tiles, no augmentation: (B,D) float32 of the student or the teacher. */
  virtual HostTensor features(const HostTensor& tiles, bool teacher) = 0;

  /** Writes student, projector, optimiser moments and the step into `folder` (state.safetensors); the caller renames.
   */
  virtual void save(const std::string& folder) = 0;
  /** Restores what save() wrote; the models and config must be those of the run that saved it. */
  virtual void load(const std::string& folder) = 0;
  /** Writes the student in its own layout (config.json + model.safetensors), loadable by timm / transformers. */
  virtual void export_student(const std::string& folder) = 0;

  virtual int64_t steps_taken() const = 0;
  virtual DistillerInfo info() const = 0;
};

}  // namespace g2l
