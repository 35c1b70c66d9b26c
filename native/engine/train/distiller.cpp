// The Distiller (public API in g2l/distill.h): G2L's training step, read top to bottom in step().
//
//   tiles uint8 (B,H,W,3) -> augment_batch (one view, both normalisations)
//     -> teacher (frozen, inference mode, fp16 on CUDA;            zt (B,Dt)
//                 LayerScale folded, optional FP8 products: vit.h prepare_frozen, quant.h)
//     -> student (fp32 master weights, bf16 autocast on CUDA)      zs (B,Ds)
//     -> projector Linear(Ds -> Dt) + log-sum loss (loss.h)        scalar
//     -> backward -> AdamW with cosine schedules (optim.h)
//
// Randomness is a pure function of (seed, step): the projector is drawn from the seed, each step's augmentation
// from a generator seeded by mix(seed, step). A resumed run therefore needs only the step to continue exactly.
// Data parallelism (issue 7) slots in between backward and the optimiser (gradient all-reduce) and inside the
// loss (the BN column sums reduced across ranks); nothing here assumes a single process beyond that.
#ifdef G2L_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAStream.h>
#endif

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/autocast_mode.h>

#include <cmath>
#include <exception>
#include <filesystem>
#include <limits>
#include <optional>
#include <set>
#include <sstream>

#include "models/attention.h"
#include "train/augment.h"
#include "dist/dist.h"
#include "g2l/distill.h"
#include "kernels/fused.h"
#include "train/loss.h"
#include "models/model.h"
#include "train/optim.h"
#include "kernels/quant.h"
#include "io/safetensors.h"
#include "train/step_profile.h"
#include "train/step_timer.h"
#include "runtime/tensor_bridge.h"
#include "models/vit.h"

namespace g2l {

namespace {

// A checkpoint's tensors (student/<param>, projector.*, optimizer/<key>, step, seed): safetensors, read by Python
// with safetensors alone. kLegacyStateFile: the torch pickle that g2l-native wrote before; recognised, not read.
constexpr const char* kStateFile = "state.safetensors";
constexpr const char* kLegacyStateFile = "state.pt";
// The FP8 teacher is accepted only while its features keep this cosine with the bf16 teacher's (issue 8).
constexpr double kFp8MinCosine = 0.999;
constexpr const char* kFp8Needs =
    "--teacher-fp8 needs a CUDA GPU with FP8 tensor cores (compute capability 8.9+); drop the flag";

at::ScalarType teacher_dtype_for(const std::string& name, const at::Device& device) {
  if (name == "auto") return device.is_cuda() ? at::kHalf : at::kFloat;
  if (name == "float16") return at::kHalf;
  if (name == "bfloat16") return at::kBFloat16;
  if (name == "float32") return at::kFloat;
  throw Error("teacherDtype must be auto, float16, bfloat16 or float32, got '" + name + "'");
}

// splitmix64 of (seed, step): independent, reproducible augmentation draws per step.
uint64_t step_seed(uint64_t seed, int64_t step) {
  uint64_t z = seed + 0x9E3779B97F4A7C15ull * (static_cast<uint64_t>(step) + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

Normalization normalization_of(const ModelSpec& spec) { return Normalization{spec.mean, spec.std}; }

// bf16 autocast of the student's forward on CUDA, restored on scope exit (also on exceptions).
class CudaAutocast {
 public:
  explicit CudaAutocast(bool on) : on_(on) {
    if (!on_) return;
    prev_enabled_ = at::autocast::is_autocast_enabled(at::kCUDA);
    prev_dtype_ = at::autocast::get_autocast_dtype(at::kCUDA);
    at::autocast::set_autocast_dtype(at::kCUDA, at::kBFloat16);
    at::autocast::set_autocast_enabled(at::kCUDA, true);
    at::autocast::increment_nesting();
  }
  ~CudaAutocast() {
    if (!on_) return;
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    at::autocast::set_autocast_enabled(at::kCUDA, prev_enabled_);
    at::autocast::set_autocast_dtype(at::kCUDA, prev_dtype_);
  }

 private:
  bool on_;
  bool prev_enabled_ = false;
  at::ScalarType prev_dtype_ = at::kBFloat16;
};

// The tiles' copy to the device. From page-locked host memory (Distiller.allocateTileBuffer in lib/, the addon's
// allocTileBuffer) it is asynchronous: the step's work queues behind it on the same stream while the host goes on
// enqueueing. The host buffer must outlive the copy: a step ends by reading its loss (a synchronisation) before it
// returns, and if it throws before that, this guard waits for the stream, so either way the caller may refill or free
// the buffer once the call has returned. From pageable memory the copy is synchronous, as before; on the CPU the
// tensor is a view of the caller's memory.
class UploadGuard {
 public:
  explicit UploadGuard(const at::Device& device) : device_(device) {}
  UploadGuard(const UploadGuard&) = delete;
  UploadGuard& operator=(const UploadGuard&) = delete;

  at::Tensor to_device(const HostTensor& tiles) {
    at::Tensor host = view_as_aten(tiles);
    if (device_.is_cpu()) return host;
    async_ = host.is_pinned();
    return host.to(device_, /*non_blocking=*/async_, /*copy=*/true);
  }

  ~UploadGuard() {
#ifdef G2L_WITH_CUDA
    if (async_ && std::uncaught_exceptions() > exceptions_) {
      try {
        c10::cuda::getCurrentCUDAStream(device_.index()).synchronize();
      } catch (...) {
        // The step's own error is the one to report.
      }
    }
#endif
  }

 private:
  at::Device device_;
  bool async_ = false;
  int exceptions_ = std::uncaught_exceptions();
};

class DistillerImpl final : public Distiller {
 public:
  explicit DistillerImpl(const DistillerConfig& config) : config_(config), device_(parse_device(config.device)) {
    if (config_.accumulation_steps < 1) throw Error("accumulationSteps must be at least 1");
    loss_options_.alpha = config_.loss.alpha;
    loss_options_.reduction = parse_loss_reduction(config_.loss.reduction);
    loss_options_.bn_eps = config_.loss.bn_eps;
    loss_options_.teacher_bn = config_.loss.teacher_bn;
    if (config_.loss.sync != "global" && config_.loss.sync != "local") {
      throw Error("loss.sync must be \"global\" or \"local\", got \"" + config_.loss.sync + "\"");
    }
    teacher_dtype_ = teacher_dtype_for(config_.teacher_dtype, device_);
    validate_kernel_options(config_.kernels);
    if (config_.teacher_fp8) {
      // Before any weights are read: the layer kinds must be known, the device must have FP8 tensor cores (or the
      // emulation, a test hook, be asked for).
      fp8_layers_ = fp8_layers_from_names(config_.teacher_fp8_layers);
      fp8_emulated_ = config_.teacher_fp8_emulate;
      const std::string why = fp8_unsupported_reason(device_);
      if (!why.empty() && !fp8_emulated_) throw Error("teacherFp8: " + why + ": " + kFp8Needs);
      if (config_.teacher_dtype != "auto" && config_.teacher_dtype != "bfloat16") {
        throw Error("teacherFp8 runs the teacher in bfloat16 (the FP8 products write bfloat16), but teacherDtype is '" +
                    config_.teacher_dtype + "': use teacherDtype auto or bfloat16, or drop --teacher-fp8");
      }
      teacher_dtype_ = at::kBFloat16;
    }

    teacher_ = load_model(config_.teacher, device_, teacher_dtype_);
    teacher_.module->eval();
    for (auto& p : teacher_.module->parameters()) p.requires_grad_(false);
    // Frozen: LayerScale folded into the projections in place (the teacher is never exported), FP8 copies if asked.
    teacher_vit_ = std::dynamic_pointer_cast<VisionTransformerImpl>(teacher_.module);
    if (!teacher_vit_) throw Error("internal: the teacher is not a VisionTransformer");
    teacher_vit_->set_kernels(config_.kernels);
    FrozenOptions frozen;
    frozen.fp8 = config_.teacher_fp8;
    if (config_.teacher_fp8) {
      frozen.fp8_layers = fp8_layers_;
      frozen.fp8_options.quant = config_.kernels.fp8_quant;
      frozen.fp8_options.fast_accum = config_.kernels.fp8_fast_accum;
      frozen.fp8_options.emulate = fp8_emulated_;
    }
    frozen_ = teacher_vit_->prepare_frozen(frozen);
    student_ = load_model(config_.student, device_, at::kFloat);
    student_.module->train();
    student_vit_ = std::dynamic_pointer_cast<VisionTransformerImpl>(student_.module);
    if (!student_vit_) throw Error("internal: the student is not a VisionTransformer");
    student_vit_->set_kernels(config_.kernels);
    student_vit_->set_regularization(student_.spec.drop);

    // Projector Linear(Ds -> Dt) with nn.Linear's initialisation, U(-1/sqrt(Ds), 1/sqrt(Ds)), drawn from the seed.
    const int64_t ds = student_.spec.out_dim(), dt = teacher_.spec.out_dim();  // pooled widths (2*D for cls+mean)
    at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(config_.seed);
    const double bound = 1.0 / std::sqrt(static_cast<double>(ds));
    projector_weight_ = at::empty({dt, ds}, at::kFloat).uniform_(-bound, bound, gen).to(device_).requires_grad_(true);
    projector_bias_ = at::empty({dt}, at::kFloat).uniform_(-bound, bound, gen).to(device_).requires_grad_(true);

    std::vector<std::pair<std::string, at::Tensor>> trained;
    for (const auto& item : student_.module->named_parameters(/*recurse=*/true)) {
      if (item.value().requires_grad()) trained.emplace_back("student/" + item.key(), item.value());
    }
    if (trained.empty()) throw Error("the student model has no trainable parameters: " + student_.spec.describe());
    trained.emplace_back("projector.weight", projector_weight_);
    trained.emplace_back("projector.bias", projector_bias_);
    std::vector<at::Tensor> trained_tensors;
    for (const auto& item : trained) trained_tensors.push_back(item.second);
    optimizer_ = std::make_unique<AdamW>(std::move(trained), config_.optimizer, config_.kernels.fused_adamw);
    if (config_.dist) join_world(trained_tensors);  // a world of one runs the same path (GPU-host and CPU checks)
  }

  StepResult step(const HostTensor& tiles, bool stop_requested) override {
    return with_torch_errors([&] {
      StepTimer timer(device_);                 // G2L_STEP_TIMING=1: one line of phase times per step on stderr
      StepProfiler profile(device_, calls_++);  // G2L_PROFILE: one step's kernels (step_profile.h)
      check_tiles(tiles, "step");
      const int64_t batch = tiles.shape[0], accum = config_.accumulation_steps;
      if (batch % accum != 0 || batch / accum < 2) {
        throw Error("step: a batch of " + std::to_string(batch) + " tiles cannot be split into " +
                    std::to_string(accum) + " micro-batches of at least 2 (BatchNorm needs 2 samples): change " +
                    "batchSize or accumulationSteps");
      }
      UploadGuard upload(device_);
      at::Tensor x = upload.to_device(tiles);
      timer.mark("upload");
      at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(step_seed(config_.seed, step_));
      at::Tensor params = augment_params_for(batch, x.size(1), x.size(2), gen);
      AugmentedBatch views = augment_batch(x, params, config_.augment, normalization_of(teacher_.spec),
                                           normalization_of(student_.spec), teacher_dtype_);
      timer.mark("augment");

      optimizer_->zero_grad();
      // The student's dropout and drop path (training only; none in the teacher or in features()): masks from a
      // generator of (seed, step, rank), drawn in order over the micro-batches, so a resumed run draws the same.
      // Each rank draws its own masks for its own rows, as each DDP process does.
      const uint64_t drop_seed = step_seed(step_seed(config_.seed, step_), config_.dist ? config_.dist->rank() : 0);
      std::optional<VisionTransformerImpl::DropScope> drop;
      if (student_.spec.drop.any()) drop.emplace(*student_vit_, drop_seed);
      const int64_t micro = batch / accum;
      at::Tensor loss_sum = at::zeros({}, at::TensorOptions().dtype(at::kFloat).device(device_));
      for (int64_t m = 0; m < accum; ++m) {
        at::Tensor teacher_in = views.teacher.narrow(0, m * micro, micro);
        at::Tensor student_in = views.student.narrow(0, m * micro, micro);
        at::Tensor zt;
        {
          c10::InferenceMode frozen;
          zt = teacher_forward(teacher_in);  // (b,Dt)
        }
        // A float32 copy outside inference mode: the loss saves it for backward.
        zt = zt.to(at::kFloat, /*non_blocking=*/false, /*copy=*/true);
        timer.mark("teacher");
        at::Tensor zs;
        {
          CudaAutocast autocast(device_.is_cuda() && config_.autocast);
          zs = student_.forward(student_in);  // (b,Ds)
        }
        timer.mark("student_forward");
        at::Tensor loss = log_sum_loss(zs.to(at::kFloat), zt, projector_weight_, projector_bias_, loss_options_);
        if (grad_sync_) grad_sync_->set_enabled(m == accum - 1);  // reduce once, after the last micro-batch
        (accum > 1 ? loss / static_cast<double>(accum) : loss).backward();
        loss_sum.add_(loss.detach());
        timer.mark("loss_backward");
      }
      if (grad_sync_) grad_sync_->finish();
      at::Tensor grad_norm = optimizer_->step(step_);
      timer.mark("optimizer");
      const ScheduleValues sched = schedule_at(optimizer_->config(), step_);
      // Stop requests of all ranks, summed, and with per-rank losses (loss.sync "local") their sum: one small
      // all-reduce beside the step's other collectives.
      const bool local_loss = config_.dist && config_.loss.sync == "local";
      at::Tensor loss = loss_sum / static_cast<double>(accum);
      at::Tensor shared = at::stack(
          {at::full({}, stop_requested ? 1.0 : 0.0, loss.options()), local_loss ? loss : at::zeros_like(loss)});
      if (config_.dist) config_.dist->all_reduce_sum_({shared});
      if (local_loss) loss = shared[1] / static_cast<double>(config_.dist->world_size());
      // The one host synchronisation of the step: loss, gradient norm and the stop requests together.
      at::Tensor host = at::stack({loss, grad_norm.to(at::kFloat), shared[0]}).to(at::kCPU);
      StepResult r;
      r.step = step_;
      r.loss = host[0].item<double>();
      r.grad_norm = host[1].item<double>();
      r.stop = host[2].item<double>() > 0;
      r.lr = sched.lr;
      r.weight_decay = sched.weight_decay;
      r.device_memory_bytes = peak_device_memory();
      timer.mark("read_loss");
      timer.report(step_);
      profile.finish();
      step_ += 1;
      return r;
    });
  }

  HostTensor features(const HostTensor& tiles, bool teacher) override {
    return with_torch_errors([&] {
      check_tiles(tiles, "features");
      UploadGuard upload(device_);
      at::Tensor x = upload.to_device(tiles);
      AugmentConfig centre = config_.augment;
      centre.enabled = false;
      at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(0);
      at::Tensor params = sample_augment_params(x.size(0), x.size(1), x.size(2), centre, gen);
      c10::InferenceMode no_grad;
      AugmentedBatch views = augment_batch(x, params, centre, normalization_of(teacher_.spec),
                                           normalization_of(student_.spec), teacher_dtype_);
      at::Tensor z = teacher ? teacher_forward(views.teacher) : student_.forward(views.student);
      return to_host(z.to(at::kCPU, at::kFloat).contiguous());
    });
  }

  void save(const std::string& folder) override {
    with_torch_errors([&] {
      std::vector<std::pair<std::string, at::Tensor>> state;
      for (const auto& item : student_.module->named_parameters(true)) {
        state.emplace_back("student/" + item.key(), item.value().detach());
      }
      state.emplace_back("projector.weight", projector_weight_.detach());
      state.emplace_back("projector.bias", projector_bias_.detach());
      for (const auto& [key, t] : optimizer_->state_dict()) state.emplace_back("optimizer/" + key, t.detach());
      state.emplace_back("step", at::tensor({step_}, at::kLong));
      state.emplace_back("seed", at::tensor({static_cast<int64_t>(config_.seed)}, at::kLong));
      std::filesystem::create_directories(folder);
      const std::filesystem::path path = std::filesystem::path(folder) / kStateFile;
      const std::filesystem::path tmp = std::filesystem::path(folder) / (std::string(".") + kStateFile + ".tmp");
      write_safetensors(tmp.string(), state, {{"format", "pt"}}, /*checksum=*/true);
      std::error_code ec;
      std::filesystem::rename(tmp, path, ec);
      if (ec) throw Error("save: could not rename " + tmp.string() + " to " + path.string() + ": " + ec.message());
      return 0;
    });
  }

  // Reads a state.safetensors written by save() on either backend (lib/backends/js/distill.ts writes the same keys):
  // the header strictly, the data against its CRC-32, the metadata and the key set exactly, each tensor's dtype and
  // shape against the model's; any difference is one message naming the file.
  void load(const std::string& folder) override {
    with_torch_errors([&] {
      const std::filesystem::path dir(folder);
      const std::string path = (dir / kStateFile).string();
      if (!std::filesystem::is_regular_file(path)) {
        if (std::filesystem::exists(dir / kLegacyStateFile)) {
          throw Error("load: " + folder + " holds " + kLegacyStateFile +
                      ": a checkpoint written by an earlier g2l-native (format state.pt), which this version does not "
                      "read; finish that run with the g2l-native version that wrote it, or start it again");
        }
        throw Error("load: cannot read " + path + ": is this a checkpoint folder of a g2l-native run?");
      }
      const std::string advice = "resume from an earlier checkpoints/step-N folder";
      SafetensorsFile file(path, advice);
      auto damaged = [&](const std::string& what) {
        return Error("load: " + path + " " + what + ": the checkpoint is damaged or from another run; " + advice);
      };
      if (!file.has_checksum() || file.metadata().size() != 2 || !file.metadata().count("format") ||
          file.metadata().at("format") != "pt") {
        throw damaged("does not have the __metadata__ g2l-native writes ({format: pt, " +
                      std::string(kSafetensorsChecksumKey) + "})");
      }
      std::set<std::string> unused;
      for (const auto& [key, e] : file.entries()) unused.insert(key);
      auto get = [&](const std::string& key, at::ScalarType dtype, c10::IntArrayRef shape) {
        auto it = file.entries().find(key);
        if (it == file.entries().end()) throw damaged("has no '" + key + "' (is it from another model?)");
        const SafetensorsEntry& e = it->second;
        if (e.dtype != dtype || c10::IntArrayRef(e.shape) != shape) {
          throw damaged("has '" + key + "' as " + e.dtype_name + " " + c10::str(c10::IntArrayRef(e.shape)) +
                        " but the run needs " + safetensors_dtype_name(dtype) + " " + c10::str(shape) +
                        " (is it from another model?)");
        }
        unused.erase(key);
        return file.view(e);
      };
      // Everything is checked before anything is copied: a refused file leaves the state as it was.
      std::vector<std::pair<at::Tensor, at::Tensor>> copies;  // (destination, mapped source)
      auto take = [&](const std::string& key, const at::Tensor& dst) {
        copies.emplace_back(dst, get(key, dst.scalar_type(), dst.sizes()));
      };
      for (const auto& item : student_.module->named_parameters(true)) take("student/" + item.key(), item.value());
      take("projector.weight", projector_weight_);
      take("projector.bias", projector_bias_);
      std::map<std::string, at::Tensor> opt_state;
      for (const auto& [key, t] : optimizer_->state_dict())
        opt_state[key] = get("optimizer/" + key, t.scalar_type(), t.sizes());
      const int64_t step = get("step", at::kLong, {1}).item<int64_t>();
      get("seed", at::kLong, {1});
      if (!unused.empty()) throw damaged("holds '" + *unused.begin() + "', which this run does not have");
      if (step < 0) throw damaged("has a negative step (" + std::to_string(step) + ")");
      at::NoGradGuard no_grad;
      for (auto& [dst, src] : copies) dst.copy_(src);
      optimizer_->load_state_dict(opt_state);  // copies into the optimiser's own tensors
      step_ = step;
      return 0;
    });
  }

  void export_student(const std::string& folder) override {
    with_torch_errors([&] {
      export_model(student_, folder);
      return 0;
    });
  }

  int64_t steps_taken() const override { return step_; }

  DistillerInfo info() const override {
    DistillerInfo i;
    i.student_dim = student_.spec.out_dim();
    i.teacher_dim = teacher_.spec.out_dim();
    i.student_params = student_.parameter_count();
    i.teacher_params = teacher_.parameter_count();
    i.device = device_.str();
    i.teacher_model = teacher_.spec.describe();
    i.student_model = student_.spec.describe();
    i.teacher_mean.assign(teacher_.spec.mean.begin(), teacher_.spec.mean.end());
    i.teacher_std.assign(teacher_.spec.std.begin(), teacher_.spec.std.end());
    i.student_mean.assign(student_.spec.mean.begin(), student_.spec.mean.end());
    i.student_std.assign(student_.spec.std.begin(), student_.spec.std.end());
    i.teacher_layer_scales = frozen_.layer_scales;
    i.teacher_layer_scales_folded = frozen_.layer_scales_folded;
    i.teacher_fp8 = config_.teacher_fp8;
    i.teacher_fp8_layers = frozen_.fp8_layers;
    i.teacher_linear_layers = frozen_.linear_layers;
    i.teacher_fp8_emulated = config_.teacher_fp8 && fp8_emulated_;
    i.fused_swiglu = config_.kernels.fused_swiglu;
    i.fused_norm = config_.kernels.fused_norm;
    i.packed_qkv = config_.kernels.packed_qkv;
    i.sdpa = config_.kernels.sdpa;
    i.teacher_attention = teacher_vit_->attention_backend();
    i.student_attention = student_vit_->attention_backend();
    const Regularization& r = student_.spec.drop;
    if (student_.spec.layout == "hf") {
      i.student_drop = {{"drop_path", r.drop_path}, {"attn_drop", r.attn_drop}, {"hidden_drop", r.hidden_drop}};
    } else {
      i.student_drop = {{"drop_path", r.drop_path},
                        {"attn_drop", r.attn_drop},
                        {"proj_drop", r.proj_drop},
                        {"pos_drop", r.pos_drop},
                        {"head_drop", r.head_drop}};
    }
    i.teacher_fp8_min_cosine = fp8_min_cosine_;
    return i;
  }

 private:
  /**
   * The teacher's features (inside inference mode). With FP8, the first call is the acceptance check: the batch runs
   * through the bf16 weights and the FP8 products, and the FP8 teacher is refused when any row's cosine falls below
   * kFp8MinCosine.
   */
  at::Tensor teacher_forward(const at::Tensor& x) {
    if (!config_.teacher_fp8 || fp8_checked_) return teacher_.forward(x);
    teacher_vit_->set_fp8_enabled(false);
    at::Tensor reference = teacher_.forward(x).to(at::kFloat);
    teacher_vit_->set_fp8_enabled(true);
    at::Tensor z = teacher_.forward(x);
    at::Tensor cos = at::cosine_similarity(z.to(at::kFloat), reference, /*dim=*/1, /*eps=*/1e-8).to(at::kCPU);
    const int64_t worst = cos.argmin().item<int64_t>();
    fp8_min_cosine_ = cos[worst].item<double>();
    if (!(fp8_min_cosine_ >= kFp8MinCosine)) {
      std::ostringstream msg;
      msg.precision(6);
      msg << "teacherFp8: the FP8 teacher's features of the first batch fall to cosine " << fp8_min_cosine_ << " (tile "
          << worst << " of " << cos.size(0) << ") with the bfloat16 teacher's, below the " << kFp8MinCosine
          << " the FP8 path is accepted at (" << frozen_.fp8_layers << " of " << frozen_.linear_layers
          << " Linear layers in FP8: " << fp8_layers_.describe()
          << "): drop --teacher-fp8 for this teacher, or keep more layers in bf16 (teacherFp8Layers: e.g. [qkv])";
      throw Error(msg.str());
    }
    fp8_checked_ = true;
    return z;
  }

  void check_tiles(const HostTensor& tiles, const char* what) const {
    if (tiles.dtype != DType::U8 || tiles.shape.size() != 4 || tiles.shape[3] != 3) {
      throw Error(std::string(what) + ": expected uint8 tiles (B,H,W,3)");
    }
    const int64_t crop = config_.augment.crop;
    if (tiles.shape[1] < crop || tiles.shape[2] < crop) {
      throw Error(std::string(what) + ": tiles of " + std::to_string(tiles.shape[1]) + "x" +
                  std::to_string(tiles.shape[2]) + " are smaller than the crop (" + std::to_string(crop) + ")");
    }
  }

  // -- Data parallelism (issue 7; dist.h) -------------------------------------------------------------------------
  // Every rank starts from rank 0's weights. loss.sync "global": the loss takes its BatchNorm statistics and sums over
  // the global batch (so each rank's backward gives its share of the global gradient), and GradientSync adds the
  // shares up in buckets during backward. "local": each rank's loss is its own batch's (statistics per rank, as DDP
  // with ordinary BatchNorm), and GradientSync averages the ranks' gradients. Without a world none of this runs.
  void join_world(const std::vector<at::Tensor>& trained) {
    std::vector<at::Tensor> weights;
    for (const auto& p : student_.module->parameters(true)) weights.push_back(p);
    weights.push_back(projector_weight_);
    weights.push_back(projector_bias_);
    config_.dist->broadcast_(weights, 0);
    const bool global = config_.loss.sync == "global";
    if (global) loss_options_.cross_rank = config_.dist->cross_rank_sum();
    grad_sync_ = std::make_unique<GradientSync>(config_.dist, trained,
                                                global ? GradientSync::Reduction::Sum : GradientSync::Reduction::Mean,
                                                config_.dist->config().bucket_bytes);
  }

  // Augmentation parameters drawn per global sample: every rank draws the whole global batch's rows from the step's
  // generator and keeps its own, rows rank, rank + W, rank + 2W... (the rows the tile sampler gives it), so a tile
  // gets the same view whatever the number of ranks.
  at::Tensor augment_params_for(int64_t batch, int64_t h, int64_t w, at::Generator& gen) const {
    const int64_t world = config_.dist ? config_.dist->world_size() : 1;
    if (world == 1) return sample_augment_params(batch, h, w, config_.augment, gen);
    at::Tensor all = sample_augment_params(batch * world, h, w, config_.augment, gen);  // (B*W,P)
    return all.view({batch, world, all.size(1)}).select(1, config_.dist->rank()).contiguous();
  }

  int64_t peak_device_memory() const {
#ifdef G2L_WITH_CUDA
    if (device_.is_cuda()) {
      auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device_.index() < 0 ? 0 : device_.index());
      return stats.allocated_bytes[0].peak;  // StatType::AGGREGATE
    }
#endif
    return 0;
  }

  DistillerConfig config_;
  at::Device device_;
  at::ScalarType teacher_dtype_ = at::kFloat;
  LogSumLossOptions loss_options_;
  LoadedModel teacher_, student_;
  std::shared_ptr<VisionTransformerImpl> teacher_vit_;
  std::shared_ptr<VisionTransformerImpl> student_vit_;  // student_.module, for its training randomness  //
                                                        // teacher_.module, for its frozen-inference switches
  FrozenReport frozen_;
  bool fp8_emulated_ = false;
  Fp8LayerSet fp8_layers_;
  bool fp8_checked_ = false;  // the FP8 acceptance check passed
  double fp8_min_cosine_ = std::numeric_limits<double>::quiet_NaN();
  at::Tensor projector_weight_, projector_bias_;
  std::unique_ptr<AdamW> optimizer_;
  std::unique_ptr<GradientSync> grad_sync_;  // data parallelism only
  int64_t step_ = 0;
  int64_t calls_ = 0;  // step() calls of this Distiller (G2L_PROFILE_STEP counts these, not the resumed step)
};

}  // namespace

std::unique_ptr<Distiller> Distiller::create(const DistillerConfig& config) {
  return with_torch_errors([&]() -> std::unique_ptr<Distiller> { return std::make_unique<DistillerImpl>(config); });
}

}  // namespace g2l
