// Loading, creating and exporting models (model.h), and the handle the addon uses (g2l/models.h).
#include "models/model.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "g2l/models.h"
#include "models/preprocess.h"
#include "io/safetensors.h"
#include "runtime/tensor_bridge.h"
#include "models/vit.h"

namespace fs = std::filesystem;

namespace g2l {

namespace {

std::string shape_str(at::IntArrayRef s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? "," : "") + std::to_string(s[i]);
  return out + "]";
}

std::string join_limited(const std::vector<std::string>& items, size_t limit = 12) {
  std::string out;
  for (size_t i = 0; i < items.size() && i < limit; ++i) out += (i ? ", " : "") + items[i];
  if (items.size() > limit) out += ", ... and " + std::to_string(items.size() - limit) + " more";
  return out;
}

LoadedModel wrap(std::shared_ptr<VisionTransformerImpl> vit) {
  LoadedModel m;
  m.spec = vit->spec();
  m.named_weights = vit->named_weights();
  VisionTransformerImpl* raw = vit.get();
  m.module = vit;
  // The module outlives the closure's uses: LoadedModel owns both.
  m.forward = [raw](const at::Tensor& x) { return raw->forward(x); };
  return m;
}

/** Compares the model's expected tensors with the files' and throws one error listing every difference. */
void check_keys(const VisionTransformerImpl& shapes, const WeightFiles& files) {
  std::vector<std::string> missing, unexpected, misshaped;
  auto expected = shapes.named_weights();
  for (const auto& [key, t] : shapes.ordered_weights()) {
    auto it = files.entries().find(key);
    if (it == files.entries().end()) {
      missing.push_back(key);
    } else if (at::IntArrayRef(it->second.first->shape) != t.sizes()) {
      misshaped.push_back(key + " (file " + shape_str(it->second.first->shape) + ", model " + shape_str(t.sizes()) +
                          ")");
    }
  }
  for (const auto& [key, e] : files.entries()) {
    if (!expected.count(key)) unexpected.push_back(key);
  }
  if (missing.empty() && unexpected.empty() && misshaped.empty()) return;
  std::ostringstream msg;
  const ModelSpec& spec = shapes.spec();
  msg << "the weights in " << files.describe() << " do not match " << spec.describe() << ": ";
  std::vector<std::string> parts;
  if (!missing.empty()) parts.push_back(std::to_string(missing.size()) + " missing (" + join_limited(missing) + ")");
  if (!unexpected.empty())
    parts.push_back(std::to_string(unexpected.size()) + " unexpected (" + join_limited(unexpected) + ")");
  if (!misshaped.empty())
    parts.push_back(std::to_string(misshaped.size()) + " mis-shaped (" + join_limited(misshaped) + ")");
  for (size_t i = 0; i < parts.size(); ++i) msg << (i ? "; " : "") << parts[i];
  msg << ". Check that config.json (or the preset";
  if (!spec.preset.empty()) msg << " '" << spec.preset << "'";
  msg << ") describes these weights";
  throw Error(msg.str());
}

at::ScalarType parse_dtype(const std::string& s) {
  if (s == "fp32" || s == "float32" || s == "float") return at::kFloat;
  if (s == "fp16" || s == "float16" || s == "half") return at::kHalf;
  if (s == "bf16" || s == "bfloat16") return at::kBFloat16;
  throw Error("unknown dtype '" + s + "': use fp32, fp16 or bf16");
}

std::string dtype_label(at::ScalarType t) {
  switch (t) {
    case at::kFloat:
      return "fp32";
    case at::kHalf:
      return "fp16";
    case at::kBFloat16:
      return "bf16";
    default:
      return c10::toString(t);
  }
}

ModelInfo info_of(const ModelSpec& spec, int64_t parameters) {
  ModelInfo i;
  i.family = spec.family;
  i.layout = spec.layout;
  i.preset = spec.preset;
  i.folder = spec.folder;
  i.mlp = spec.mlp;
  i.dims = spec.out_dim();
  i.width = spec.embed_dim;
  i.pool = spec.pool;
  i.depth = spec.depth;
  i.num_heads = spec.num_heads;
  i.num_registers = spec.num_registers;
  i.patch_size = spec.patch_size;
  i.input_size = spec.input_size;
  i.parameters = parameters;
  i.mean = spec.mean;
  i.std = spec.std;
  return i;
}

void write_text(const fs::path& p, const std::string& text) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  if (!out) throw Error("cannot write " + p.string() + ": check that the folder is writable");
  out << text;
  if (!out.flush()) throw Error("writing " + p.string() + " failed (disk full?)");
}

}  // namespace

int64_t LoadedModel::parameter_count() const {
  int64_t n = 0;
  for (const auto& [k, t] : named_weights) n += t.numel();
  return n;
}

// ---------------------------------------------------------------------------------------------------------------
// The spec (resolved in lib/models/spec.ts; checked here before anything is built)
// ---------------------------------------------------------------------------------------------------------------
int64_t ModelSpec::pos_tokens() const {
  const int64_t grid = img_size / patch_size;
  if (layout == "hf") return grid * grid + 1;
  return grid * grid + (no_embed_class ? 0 : prefix_tokens());
}

std::string ModelSpec::describe() const {
  std::ostringstream s;
  s << layout << " " << family << " (dim " << embed_dim << ", depth " << depth << ", heads " << num_heads << ", patch "
    << patch_size;
  if (num_registers) s << ", " << num_registers << " registers";
  s << ", " << (mlp == "gelu" ? "GELU MLP" : "SwiGLU") << ", pool " << pool << ")";
  return s.str();
}

void check_spec(const ModelSpec& s) {
  const std::string where = "model spec" + (s.folder.empty() ? std::string() : " of " + s.folder);
  auto one_of = [&](const std::string& key, const std::string& v, std::initializer_list<const char*> names) {
    for (const char* n : names) {
      if (v == n) return;
    }
    std::string list;
    for (const char* n : names) list += (list.empty() ? "" : ", ") + std::string(n);
    throw Error(where + ": " + key + " '" + v + "' is not one of " + list);
  };
  one_of("layout", s.layout, {"timm", "hf"});
  one_of("mlp", s.mlp,
         s.layout == "hf" ? std::initializer_list<const char*>{"gelu", "swiglu_hf"}
                          : std::initializer_list<const char*>{"gelu", "swiglu_packed"});
  one_of("pool", s.pool, {"cls", "mean", "cls+mean"});
  const std::pair<const char*, int64_t> positive[] = {
      {"img_size", s.img_size}, {"input_size", s.input_size}, {"patch_size", s.patch_size}, {"embed_dim", s.embed_dim},
      {"depth", s.depth},       {"num_heads", s.num_heads},   {"mlp_hidden", s.mlp_hidden}};
  for (const auto& [key, v] : positive) {
    if (v <= 0) throw Error(where + ": " + key + " must be positive, got " + std::to_string(v));
  }
  if (s.num_registers < 0 || s.num_classes < 0) throw Error(where + ": num_registers and num_classes must be >= 0");
  if (s.embed_dim % s.num_heads != 0) {
    throw Error(where + ": embedding dim " + std::to_string(s.embed_dim) + " is not divisible by " +
                std::to_string(s.num_heads) + " heads");
  }
  if (s.img_size % s.patch_size != 0) {
    throw Error(where + ": image size " + std::to_string(s.img_size) + " is not a multiple of patch size " +
                std::to_string(s.patch_size));
  }
  if (s.pool == "cls+mean" && s.fc_norm)
    throw Error(where + ": cls+mean pooling on a model with fc_norm is not defined");
  for (float v : s.std) {
    if (!(v > 0)) throw Error(where + ": std must be positive");
  }
  const Regularization& r = s.drop;
  for (double v : {r.drop_path, r.attn_drop, r.proj_drop, r.pos_drop, r.head_drop, r.hidden_drop}) {
    if (!(v >= 0 && v <= 1)) throw Error(where + ": a dropout / drop-path rate is outside [0, 1]");
  }
  if (s.config_json.empty()) throw Error(where + ": config_json is empty (the config.json an export writes)");
}

// ---------------------------------------------------------------------------------------------------------------
// load / create / export
// ---------------------------------------------------------------------------------------------------------------
LoadedModel load_model(const ModelSpec& spec, at::Device device, at::ScalarType dtype) {
  return with_torch_errors([&] {
    check_spec(spec);
    if (spec.folder.empty()) {
      throw Error("preset '" + spec.preset + "' names an architecture but no weights: pass preset:" + spec.preset +
                  ":<folder>");
    }
    WeightFiles files = WeightFiles::open(spec.folder);
    // Shapes first, on the meta device: a mismatch fails before a byte is allocated or copied.
    check_keys(VisionTransformerImpl(spec, at::TensorOptions().device(at::kMeta).dtype(dtype)), files);
    auto vit = std::make_shared<VisionTransformerImpl>(spec, at::TensorOptions().device(device).dtype(dtype));
    at::NoGradGuard no_grad;
    for (auto& [key, t] : vit->named_weights()) {
      // From the mapped file straight to the target: copy_ converts dtype and moves device in one call.
      t.copy_(files.view(key), /*non_blocking=*/false);
    }
    return wrap(vit);
  });
}

LoadedModel create_model(const ModelSpec& spec, at::Device device, at::ScalarType dtype, uint64_t seed) {
  return with_torch_errors([&] {
    check_spec(spec);
    auto vit = std::make_shared<VisionTransformerImpl>(spec, at::TensorOptions().device(device).dtype(dtype));
    vit->init_random(seed);
    return wrap(vit);
  });
}

void export_model(const LoadedModel& model, const std::string& folder) {
  auto vit = std::dynamic_pointer_cast<VisionTransformerImpl>(model.module);
  if (vit && vit->prepared_frozen()) {
    throw Error(
        "a model prepared for frozen inference cannot be exported: its LayerScale is folded into its weights in "
        "place, so they no longer match its checkpoint layout; export the model as loaded from " +
        (model.spec.folder.empty() ? std::string("its folder") : model.spec.folder) + " instead");
  }
  with_torch_errors([&] {
    fs::path target = fs::absolute(fs::path(folder));
    if (target.filename().empty()) target = target.parent_path();
    fs::create_directories(target.parent_path());
    const std::string tag = "." + target.filename().string() + "." + std::to_string(::getpid()) + ".tmp";
    fs::path tmp = target.parent_path() / tag;
    fs::remove_all(tmp);
    fs::create_directories(tmp);
    try {
      std::vector<std::pair<std::string, at::Tensor>> tensors(model.named_weights.begin(), model.named_weights.end());
      write_safetensors((tmp / "model.safetensors").string(), tensors);
      const ModelSpec& spec = model.spec;
      write_text(tmp / "config.json", spec.config_json);
      if (!spec.preprocessor_json.empty()) write_text(tmp / "preprocessor_config.json", spec.preprocessor_json);
      fs::path old = target.parent_path() / (tag + ".old");
      const bool had = fs::exists(target);
      if (had) fs::rename(target, old);
      fs::rename(tmp, target);
      if (had) fs::remove_all(old);
    } catch (...) {
      std::error_code ec;
      fs::remove_all(tmp, ec);
      throw;
    }
    return 0;
  });
}

// ---------------------------------------------------------------------------------------------------------------
// The handle of g2l/models.h
// ---------------------------------------------------------------------------------------------------------------
Model::Model(std::unique_ptr<Impl> impl, ModelInfo info) : impl_(std::move(impl)), info_(std::move(info)) {}
Model::~Model() = default;

static std::shared_ptr<Model> make_model(LoadedModel m, at::Device device, at::ScalarType dtype) {
  ModelInfo info = info_of(m.spec, m.parameter_count());
  info.dtype = dtype_label(dtype);
  info.device = device.str();
  auto impl = std::make_unique<Model::Impl>();
  impl->model = std::move(m);
  impl->device = device;
  impl->dtype = dtype;
  impl->model.module->eval();
  return std::make_shared<Model>(std::move(impl), std::move(info));
}

std::shared_ptr<Model> Model::load(const ModelSpec& spec, const std::string& device, const std::string& dtype) {
  return with_torch_errors([&] {
    at::Device dev = parse_device(device);
    at::ScalarType dt = parse_dtype(dtype);
    return make_model(load_model(spec, dev, dt), dev, dt);
  });
}

std::shared_ptr<Model> Model::create_random(const ModelSpec& spec, const std::string& device, const std::string& dtype,
                                            uint64_t seed) {
  return with_torch_errors([&] {
    at::Device dev = parse_device(device);
    at::ScalarType dt = parse_dtype(dtype);
    return make_model(create_model(spec, dev, dt, seed), dev, dt);
  });
}

ModelInfo Model::describe(const ModelSpec& spec) {
  return with_torch_errors([&] {
    check_spec(spec);
    VisionTransformerImpl shapes(spec, at::TensorOptions().device(at::kMeta));
    int64_t n = 0;
    for (const auto& [k, t] : shapes.named_weights()) n += t.numel();
    return info_of(spec, n);
  });
}

HostTensor Model::embed(const HostTensor& images) const {
  std::lock_guard<std::mutex> lock(mutex_);
  return with_torch_errors([&] {
    if (!impl_) throw Error("embed: the model has been disposed");
    const ModelSpec& spec = impl_->model.spec;
    c10::InferenceMode inference;
    at::Tensor x;
    if (images.dtype == DType::U8) {
      if (images.shape.size() != 4 || images.shape[3] != 3) {
        throw Error("embed: uint8 images must have shape (N,H,W,3) (RGB), got " + shape_str(images.shape));
      }
      x = view_as_aten(images);
      if (images.shape[0] == 0) return to_host(at::empty({0, spec.out_dim()}, at::kFloat));
      if (!impl_->device.is_cpu()) x = x.to(impl_->device);
      x = normalize_images(x, spec.mean, spec.std);  // (N,3,H,W) float32
      if (x.size(2) != spec.input_size || x.size(3) != spec.input_size) {
        x = at::_upsample_bicubic2d_aa(x, {spec.input_size, spec.input_size}, false, c10::nullopt, c10::nullopt);
      }
    } else if (images.dtype == DType::F32) {
      if (images.shape.size() != 4 || images.shape[1] != 3) {
        throw Error("embed: float32 images must have shape (N,3,H,W), normalised, got " + shape_str(images.shape));
      }
      if (images.shape[2] < spec.patch_size || images.shape[3] < spec.patch_size) {
        throw Error("embed: images of " + std::to_string(images.shape[2]) + "x" + std::to_string(images.shape[3]) +
                    " px are smaller than one " + std::to_string(spec.patch_size) + " px patch");
      }
      x = view_as_aten(images);
      if (images.shape[0] == 0) return to_host(at::empty({0, spec.out_dim()}, at::kFloat));
      x = x.to(impl_->device);
    } else {
      throw Error(std::string("embed: images must be uint8 (N,H,W,3) or float32 (N,3,H,W), got ") +
                  dtype_name(images.dtype));
    }
    return to_host(impl_->model.forward(x.to(impl_->dtype)).to(at::kFloat));
  });
}

void Model::export_to(const std::string& folder) const {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!impl_) throw Error("export: the model has been disposed");
  export_model(impl_->model, folder);
}

void Model::release() {
  std::lock_guard<std::mutex> lock(mutex_);
  impl_.reset();
}

}  // namespace g2l
