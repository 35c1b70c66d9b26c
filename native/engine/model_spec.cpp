// Model folder -> ModelSpec: the timm registry defaults, the hub config.json of either library, the presets.
//
// timm: a hub folder's config.json names a registered architecture and overrides its defaults with model_args
// (timm.create_model(architecture, **model_args)); pretrained_cfg carries mean, std and input_size. transformers:
// config.json holds every field of Dinov2Config / Dinov2WithRegistersConfig (defaults apply to absent ones), and
// preprocessor_config.json holds mean and std. Presets carry what an official checkpoint's config.json leaves to
// code (UNI2-h's SwiGLU layer and 8 registers are timm kwargs in its model card), and everything when a folder has
// no config.json at all.
#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <functional>
#include <fstream>
#include <sstream>

#include "g2l/engine.h"
#include "model.h"
#include "model_json.h"

namespace fs = std::filesystem;

namespace g2l {

namespace {

constexpr std::array<float, 3> kImagenetMean{0.485f, 0.456f, 0.406f};
constexpr std::array<float, 3> kImagenetStd{0.229f, 0.224f, 0.225f};
constexpr std::array<float, 3> kInceptionMean{0.5f, 0.5f, 0.5f};
constexpr std::array<float, 3> kInceptionStd{0.5f, 0.5f, 0.5f};
// docs/method.md, "Constants": the official model cards' normalisations.
constexpr std::array<float, 3> kHoptimusMean{0.707223f, 0.578729f, 0.703617f};
constexpr std::array<float, 3> kHoptimusStd{0.211883f, 0.230117f, 0.177517f};
constexpr std::array<float, 3> kHibouMean{0.7068f, 0.5755f, 0.722f};
constexpr std::array<float, 3> kHibouStd{0.195f, 0.2316f, 0.1816f};

json::Value num(double d) { return json::Value::number(d); }
json::Value str(const char* s) { return json::Value::string(s); }
json::Value boolean(bool b) { return json::Value::boolean(b); }

/** A timm registered architecture: the model_args of its entry function (timm/models/vision_transformer.py). */
struct TimmArch {
  const char* name;
  int64_t patch, dim, depth, heads;
  double mlp_ratio;
  const char* mlp_layer;  // "mlp" or "swiglu_packed"
  double init_values;     // 0: no LayerScale
  int64_t reg_tokens;
  bool no_embed_class;
  int64_t img_size;       // the default pretrained_cfg's input size
  bool imagenet_norm;     // default pretrained_cfg mean/std: ImageNet (DINOv2) or Inception (0.5)
};

const std::vector<TimmArch>& timm_registry() {
  static const std::vector<TimmArch> r = {
      {"vit_small_patch14_dinov2", 14, 384, 12, 6, 4.0, "mlp", 1e-5, 0, false, 518, true},
      {"vit_base_patch14_dinov2", 14, 768, 12, 12, 4.0, "mlp", 1e-5, 0, false, 518, true},
      {"vit_large_patch14_dinov2", 14, 1024, 24, 16, 4.0, "mlp", 1e-5, 0, false, 518, true},
      {"vit_giant_patch14_dinov2", 14, 1536, 40, 24, 2.66667 * 2, "swiglu_packed", 1e-5, 0, false, 518, true},
      {"vit_small_patch14_reg4_dinov2", 14, 384, 12, 6, 4.0, "mlp", 1e-5, 4, true, 518, true},
      {"vit_base_patch14_reg4_dinov2", 14, 768, 12, 12, 4.0, "mlp", 1e-5, 4, true, 518, true},
      {"vit_large_patch14_reg4_dinov2", 14, 1024, 24, 16, 4.0, "mlp", 1e-5, 4, true, 518, true},
      {"vit_giant_patch14_reg4_dinov2", 14, 1536, 40, 24, 2.66667 * 2, "swiglu_packed", 1e-5, 4, true, 518, true},
      {"vit_small_patch16_224", 16, 384, 12, 6, 4.0, "mlp", 0, 0, false, 224, false},
      {"vit_base_patch16_224", 16, 768, 12, 12, 4.0, "mlp", 0, 0, false, 224, false},
      {"vit_large_patch16_224", 16, 1024, 24, 16, 4.0, "mlp", 0, 0, false, 224, false},
      {"vit_huge_patch14_224", 14, 1280, 32, 16, 4.0, "mlp", 0, 0, false, 224, false},
      {"vit_giant_patch14_224", 14, 1408, 40, 16, 48.0 / 11.0, "mlp", 0, 0, false, 224, false},
  };
  return r;
}

/** A preset: a config.json (in the folder's layout) whose values the folder's own config.json overrides. */
struct Preset {
  const char* name;
  const char* layout;
  std::function<json::Value()> config;
  std::array<float, 3> mean, std;
  const char* pool;  // the official card's embedding: cls, mean or cls+mean
  const char* about;
};

/** HistAI Hibou: transformers Dinov2WithRegisters, 4 registers, SwiGLU, LayerScale 1e-5, at a given size. */
json::Value hibou_config(int64_t hidden, int64_t layers, int64_t heads) {
  json::Value c = json::Value::object();
  c.set("model_type", str("dinov2_with_registers"));
  c.set("hidden_size", num(hidden));
  c.set("num_hidden_layers", num(layers));
  c.set("num_attention_heads", num(heads));
  c.set("mlp_ratio", num(4));
  c.set("use_swiglu_ffn", boolean(true));
  c.set("num_register_tokens", num(4));
  c.set("image_size", num(224));
  c.set("patch_size", num(14));
  c.set("layer_norm_eps", num(1e-6));
  c.set("layerscale_value", num(1e-5));
  return c;
}

/** A timm preset: architecture + model_args, every constant from TRIDENT's encoder definitions
 *  (mahmoodlab/TRIDENT trident/patch_encoder_models/load.py, commit 5f53f476: the timm_kwargs of each
 *  *InferenceEncoder._build, its eval_transform's Normalize and its forward's pooling); README "Encoders". */
json::Value timm_preset(const char* arch, const std::vector<std::pair<const char*, json::Value>>& args) {
  json::Value c = json::Value::object();
  c.set("architecture", str(arch));
  c.set("num_classes", num(0));
  json::Value a = json::Value::object();
  for (const auto& [k, v] : args) a.set(k, v);
  c.set("model_args", a);
  return c;
}

const std::vector<Preset>& presets() {
  static const std::vector<Preset> p = {
      {"h-optimus-0", "timm",
       [] {
         json::Value c = json::Value::object();
         c.set("architecture", str("vit_giant_patch14_reg4_dinov2"));
         c.set("num_classes", num(0));
         json::Value a = json::Value::object();
         a.set("img_size", num(224));
         a.set("init_values", num(1e-5));
         a.set("dynamic_img_size", boolean(false));
         c.set("model_args", a);
         return c;
       },
       kHoptimusMean, kHoptimusStd, "cls", "Bioptimus H-optimus-0, timm ViT-g/14, 4 registers, packed SwiGLU"},
      {"uni2-h", "timm",
       [] {
         // The model card's timm_kwargs: its config.json names vit_giant_patch14_224 but not the SwiGLU layer.
         json::Value c = json::Value::object();
         c.set("architecture", str("vit_giant_patch14_224"));
         c.set("num_classes", num(0));
         json::Value a = json::Value::object();
         a.set("img_size", num(224));
         a.set("patch_size", num(14));
         a.set("depth", num(24));
         a.set("num_heads", num(24));
         a.set("init_values", num(1e-5));
         a.set("embed_dim", num(1536));
         a.set("mlp_ratio", num(2.66667 * 2));
         a.set("no_embed_class", boolean(true));
         a.set("mlp_layer", str("swiglu_packed"));
         a.set("act_layer", str("silu"));
         a.set("reg_tokens", num(8));
         a.set("dynamic_img_size", boolean(true));
         c.set("model_args", a);
         return c;
       },
       kImagenetMean, kImagenetStd, "cls", "MahmoodLab UNI2-h, timm ViT-H/14-like (dim 1536, depth 24), 8 registers, packed SwiGLU"},
      {"hibou-l", "hf", [] { return hibou_config(1024, 24, 16); },
       kHibouMean, kHibouStd, "cls", "HistAI Hibou-L, DINOv2 ViT-L/14 with 4 registers and SwiGLU"},
      {"hibou-b", "hf", [] { return hibou_config(768, 12, 12); },
       kHibouMean, kHibouStd, "cls", "HistAI Hibou-B, DINOv2 ViT-B/14 with 4 registers and SwiGLU"},
      // TRIDENT's names (load.py above). UNIInferenceEncoder: vit_large_patch16_224, img 224, patch 16, LayerScale 1e-5,
      // ImageNet Normalize, model(x) = the class token (global_pool token).
      {"uni_v1", "timm",
       [] {
         return timm_preset("vit_large_patch16_224", {{"img_size", num(224)}, {"patch_size", num(16)},
                                                      {"init_values", num(1e-5)}, {"dynamic_img_size", boolean(true)}});
       },
       kImagenetMean, kImagenetStd, "cls", "MahmoodLab UNI, timm ViT-L/16, LayerScale, GELU MLP"},
      // Virchow2InferenceEncoder: vit_huge_patch14_224, LayerScale 1e-5, 4 registers, mlp_ratio 5.3375, SwiGLUPacked +
      // SiLU (code kwargs), global_pool ''; forward = cat(output[:, 0], output[:, 5:].mean(1)); ImageNet Normalize.
      {"virchow2", "timm",
       [] {
         return timm_preset("vit_huge_patch14_224",
                            {{"img_size", num(224)}, {"init_values", num(1e-5)}, {"reg_tokens", num(4)},
                             {"mlp_ratio", num(5.3375)}, {"global_pool", str("")}, {"dynamic_img_size", boolean(true)},
                             {"mlp_layer", str("swiglu_packed")}, {"act_layer", str("silu")}});
       },
       kImagenetMean, kImagenetStd, "cls+mean", "Paige Virchow2, timm ViT-H/14, 4 registers, packed SwiGLU, cls+mean (2560-d)"},
      // HOptimus1InferenceEncoder: as H-optimus-0 (vit_giant_patch14_reg4_dinov2, img 224, LayerScale 1e-5, global_pool
      // token) with the same Normalize constants.
      {"hoptimus1", "timm",
       [] {
         return timm_preset("vit_giant_patch14_reg4_dinov2", {{"img_size", num(224)}, {"init_values", num(1e-5)},
                                                              {"global_pool", str("token")}, {"dynamic_img_size", boolean(false)}});
       },
       kHoptimusMean, kHoptimusStd, "cls", "Bioptimus H-optimus-1, timm ViT-g/14, 4 registers, packed SwiGLU"},
      // GigaPathInferenceEncoder: vit_giant_patch14_dinov2 (packed SwiGLU, LayerScale by the registry's defaults) with
      // img 224, patch 16, dim 1536, depth 40, 24 heads, mlp_ratio 5.33334; ImageNet Normalize; global_pool token.
      {"gigapath", "timm",
       [] {
         return timm_preset("vit_giant_patch14_dinov2",
                            {{"img_size", num(224)}, {"in_chans", num(3)}, {"patch_size", num(16)}, {"embed_dim", num(1536)},
                             {"depth", num(40)}, {"num_heads", num(24)}, {"mlp_ratio", num(5.33334)}});
       },
       kImagenetMean, kImagenetStd, "cls", "Prov-GigaPath tile encoder, timm ViT-g/16 (dinov2 family), packed SwiGLU"},
      // H0MiniInferenceEncoder (TRIDENT's later load.py; the model card bioptimus/H0-mini): timm
      // vit_base_patch14_reg4_dinov2 with SwiGLUPacked + SiLU passed in code, global_pool '' (the card's output is every
      // token, (1, 261, 768)); the H-optimus Normalize constants; TRIDENT's default return_type is the class token
      // (cls+mean, 1536-d, by --pool).
      {"h0-mini", "timm",
       [] {
         return timm_preset("vit_base_patch14_reg4_dinov2",
                            {{"img_size", num(224)}, {"init_values", num(1e-5)}, {"global_pool", str("")},
                             {"dynamic_img_size", boolean(true)}, {"mlp_layer", str("swiglu_packed")},
                             {"act_layer", str("silu")}});
       },
       kHoptimusMean, kHoptimusStd, "cls", "Bioptimus H0-mini, timm ViT-B/14, 4 registers, packed SwiGLU (distilled from H-optimus-0)"},
      // Phikonv2InferenceEncoder: transformers AutoModel of owkin/phikon-v2 (Dinov2Model, ViT-L/16: dim 1024, 24 layers,
      // 16 heads, GELU MLP, no registers); Resize(224) + CenterCrop(224), ImageNet Normalize; last_hidden_state[:, 0].
      {"phikon_v2", "hf",
       [] {
         json::Value c = json::Value::object();
         c.set("model_type", str("dinov2"));
         c.set("hidden_size", num(1024));
         c.set("num_hidden_layers", num(24));
         c.set("num_attention_heads", num(16));
         c.set("mlp_ratio", num(4));
         c.set("use_swiglu_ffn", boolean(false));
         c.set("image_size", num(224));
         c.set("patch_size", num(16));
         c.set("layer_norm_eps", num(1e-6));
         c.set("layerscale_value", num(1e-5));
         return c;
       },
       kImagenetMean, kImagenetStd, "cls", "Owkin Phikon-v2, DINOv2 ViT-L/16 (transformers), GELU MLP"},
  };
  return p;
}

/** TRIDENT's names for the presets the engine had under the models' own names. */
const std::vector<std::pair<std::string, std::string>>& preset_aliases() {
  static const std::vector<std::pair<std::string, std::string>> a = {
      {"hoptimus0", "h-optimus-0"}, {"uni_v2", "uni2-h"}, {"hibou_l", "hibou-l"}, {"hibou_b", "hibou-b"}};
  return a;
}

const TimmArch* find_timm(const std::string& name) {
  for (const auto& a : timm_registry()) {
    if (name == a.name) return &a;
  }
  return nullptr;
}

const std::vector<std::pair<std::string, std::string>>& preset_aliases();

std::string known_presets() {
  std::string s;
  for (const auto& p : presets()) s += (s.empty() ? "" : ", ") + std::string(p.name);
  for (const auto& [alias, target] : preset_aliases()) s += ", " + alias;
  return s;
}

std::string known_timm() {
  std::string s;
  for (const auto& a : timm_registry()) s += (s.empty() ? "" : ", ") + std::string(a.name);
  return s;
}

std::string read_text(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) throw Error("cannot read " + p.string() + ": check its permissions");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

/** Overlays `top` onto `base` (one level, plus model_args one level deeper). */
json::Value overlay(json::Value base, const json::Value& top) {
  for (const auto& [k, v] : top.members()) {
    const json::Value* b = base.find(k);
    if (k == "model_args" && b && b->is_object() && v.is_object()) {
      json::Value merged = *b;
      for (const auto& [mk, mv] : v.members()) merged.set(mk, mv);
      base.set(k, merged);
    } else {
      base.set(k, v);
    }
  }
  return base;
}

// Typed reads that name the file and key on a wrong type.
struct Reader {
  const json::Value& obj;
  std::string where;

  const json::Value* get(const std::string& key) const {
    const json::Value* v = obj.find(key);
    return v && !v->is_null() ? v : nullptr;
  }
  double number(const std::string& key, double fallback) const {
    const json::Value* v = get(key);
    if (!v) return fallback;
    if (!v->is_number()) throw Error(where + ": '" + key + "' must be a number");
    return v->as_number();
  }
  int64_t integer(const std::string& key, int64_t fallback) const {
    const json::Value* v = get(key);
    if (!v) return fallback;
    if (v->is_array() && !v->items().empty() && v->items()[0].is_number()) {
      // image_size / patch_size / img_size may be [h, w]: the engine supports square grids.
      const auto& items = v->items();
      if (items.size() == 2 && items[0].as_number() != items[1].as_number()) {
        throw Error(where + ": '" + key + "' is not square; the engine supports square sizes only");
      }
      return static_cast<int64_t>(items.back().as_number());
    }
    if (!v->is_number() || v->as_number() != std::floor(v->as_number())) {
      throw Error(where + ": '" + key + "' must be an integer");
    }
    return static_cast<int64_t>(v->as_number());
  }
  bool flag(const std::string& key, bool fallback) const {
    const json::Value* v = get(key);
    if (!v) return fallback;
    if (!v->is_bool()) throw Error(where + ": '" + key + "' must be true or false");
    return v->as_bool();
  }
  std::string text(const std::string& key, const std::string& fallback) const {
    const json::Value* v = get(key);
    if (!v) return fallback;
    if (!v->is_string()) throw Error(where + ": '" + key + "' must be a string");
    return v->as_string();
  }
  bool triple(const std::string& key, std::array<float, 3>& out) const {
    const json::Value* v = get(key);
    if (!v) return false;
    if (!v->is_array() || v->items().size() != 3) throw Error(where + ": '" + key + "' must be a list of 3 numbers");
    for (int i = 0; i < 3; ++i) out[i] = static_cast<float>(v->items()[i].as_number());
    return true;
  }
};

/** A dropout / drop-path rate: a number in [0, 1], 0 when absent or null. */
double rate(const Reader& r, const std::string& key) {
  const json::Value* v = r.get(key);
  if (!v || v->is_null()) return 0.0;
  const double x = r.number(key, 0.0);
  if (!(x >= 0.0 && x <= 1.0)) throw Error(r.where + ": '" + key + "' must be a rate in [0, 1], got " + std::to_string(x));
  return x;
}

// ---------------------------------------------------------------------------------------------------------------
// timm
// ---------------------------------------------------------------------------------------------------------------
void resolve_timm(const json::Value& config, const std::string& where, ModelSpec& spec) {
  Reader root{config, where};
  std::string arch = root.text("architecture", "");
  if (arch.empty()) throw Error(where + ": no \"architecture\" (a timm model name) in the timm config");
  const TimmArch* reg = nullptr;
  for (const auto& a : timm_registry()) {
    if (arch == a.name) reg = &a;
  }
  if (!reg) {
    throw Error(where + ": timm architecture '" + arch + "' is not supported; supported: " + known_timm());
  }
  static const json::Value empty = json::Value::object();
  const json::Value* args_v = root.get("model_args");
  Reader args{args_v ? *args_v : empty, where + " model_args"};

  // Arguments that change nothing the engine computes, or that it supports only at their default.
  static const std::vector<std::string> known = {
      "img_size", "patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio", "qkv_bias", "init_values",
      "reg_tokens", "no_embed_class", "class_token", "global_pool", "num_classes", "mlp_layer", "act_layer",
      "dynamic_img_size", "dynamic_img_pad", "in_chans", "drop_rate", "pos_drop_rate", "patch_drop_rate",
      "proj_drop_rate", "attn_drop_rate", "drop_path_rate", "weight_init", "fix_init", "pre_norm", "fc_norm",
      "qk_norm", "pos_embed", "num_features"};
  if (args_v) {
    for (const auto& [k, v] : args_v->members()) {
      if (std::find(known.begin(), known.end(), k) == known.end()) {
        throw Error(where + ": model_args '" + k + "' is not supported by the engine's ViT; remove it if it does not "
                    "change the architecture, or open an issue with the model's name");
      }
    }
  }
  if (!args.flag("class_token", true)) throw Error(where + ": class_token false is not supported (embeddings are the class token)");
  if (args.flag("pre_norm", false)) throw Error(where + ": pre_norm is not supported");
  if (args.flag("qk_norm", false)) throw Error(where + ": qk_norm is not supported");
  if (args.flag("dynamic_img_pad", false)) throw Error(where + ": dynamic_img_pad is not supported");
  if (args.integer("in_chans", 3) != 3) throw Error(where + ": in_chans must be 3 (RGB)");
  if (args.text("pos_embed", "learn") != "learn") throw Error(where + ": only learned position embeddings are supported");
  // Pooling as timm's forward_head does it: global_pool 'token' -> the class token, 'avg' -> the mean of the patch
  // tokens (global_pool_nlc drops the num_prefix_tokens class and register tokens); use_fc_norm = global_pool in
  // ('avg', 'avgmax', 'max') when fc_norm is unset, and then the final norm is Identity and fc_norm normalises the
  // pooled vector. '' (all tokens, Virchow2's config) says no pooling: a preset or --pool must say which.
  std::string pool = args.text("global_pool", root.text("global_pool", "token"));
  if (pool == "token") {
    spec.pool = "cls";
  } else if (pool == "avg") {
    spec.pool = "mean";
  } else if (pool.empty()) {
    spec.pool = "";  // resolved by the preset or the override (resolve_model_spec), else refused there
  } else {
    throw Error(where + ": global_pool '" + pool + "' is not supported; supported: 'token' (class token), 'avg' (mean "
                "of the patch tokens), or '' with a pooling from a preset or --pool");
  }
  {
    const json::Value* fc = args.get("fc_norm");
    if (fc && !fc->is_bool()) throw Error(where + ": model_args 'fc_norm' must be true, false or null");
    spec.fc_norm = fc ? fc->as_bool() : pool == "avg";
  }

  spec.layout = "timm";
  spec.family = arch;
  spec.patch_size = args.integer("patch_size", reg->patch);
  spec.embed_dim = args.integer("embed_dim", reg->dim);
  spec.depth = args.integer("depth", reg->depth);
  spec.num_heads = args.integer("num_heads", reg->heads);
  double mlp_ratio = args.number("mlp_ratio", reg->mlp_ratio);
  // Names as hub configs write them: "swiglu_packed", "SwiGLUPacked", "timm.layers.SwiGLUPacked"; "silu", "torch.nn.SiLU".
  std::string mlp_layer = args.text("mlp_layer", reg->mlp_layer);
  for (auto& ch : mlp_layer) ch = static_cast<char>(std::tolower(ch));
  if (mlp_layer.rfind("timm.layers.", 0) == 0) mlp_layer = mlp_layer.substr(12);
  if (mlp_layer == "swiglupacked") mlp_layer = "swiglu_packed";
  std::string act = args.text("act_layer", mlp_layer == "swiglu_packed" ? "silu" : "gelu");
  for (auto& ch : act) ch = static_cast<char>(std::tolower(ch));
  if (act.rfind("torch.nn.", 0) == 0) act = act.substr(9);
  // timm's Mlp / GluMlp: hidden_features = int(dim * mlp_ratio); GluMlp's fc2 takes half of it.
  int64_t hidden = static_cast<int64_t>(static_cast<double>(spec.embed_dim) * mlp_ratio);
  if (mlp_layer == "swiglu_packed") {
    if (act != "silu" && act != "swish") throw Error(where + ": SwiGLU with act_layer '" + act + "' is not supported");
    spec.mlp = "swiglu_packed";
    spec.mlp_hidden = hidden / 2;
  } else if (mlp_layer == "mlp") {
    if (act != "gelu") throw Error(where + ": Mlp with act_layer '" + act + "' is not supported (GELU only)");
    spec.mlp = "gelu";
    spec.mlp_hidden = hidden;
  } else {
    throw Error(where + ": mlp_layer '" + mlp_layer + "' is not supported (Mlp with GELU, or swiglu_packed)");
  }
  const json::Value* iv = args_v ? args_v->find("init_values") : nullptr;
  if (iv && !iv->is_null()) {
    spec.init_values = args.number("init_values", 0);
    spec.layer_scale = true;
  } else if (!iv) {
    spec.init_values = reg->init_values;
    spec.layer_scale = reg->init_values > 0;
  } else {
    spec.layer_scale = false;  // init_values: null disables LayerScale
  }
  spec.num_registers = args.integer("reg_tokens", reg->reg_tokens);
  spec.no_embed_class = args.flag("no_embed_class", reg->no_embed_class);
  spec.qkv_bias = args.flag("qkv_bias", true);
  spec.qkv_fused = true;
  spec.norm_eps = 1e-6;
  spec.pos_antialias = true;  // timm resample_abs_pos_embed: bicubic, antialias=True
  spec.mask_token = false;
  spec.num_classes = args.integer("num_classes", root.integer("num_classes", 0));
  // Training-only regularisation (model.h Regularization); read so that a student trains as timm would train it.
  spec.drop.drop_path = rate(args, "drop_path_rate");
  spec.drop.attn_drop = rate(args, "attn_drop_rate");
  spec.drop.proj_drop = rate(args, "proj_drop_rate");
  spec.drop.pos_drop = rate(args, "pos_drop_rate");
  spec.drop.head_drop = rate(args, "drop_rate");
  spec.drop.patch_drop = rate(args, "patch_drop_rate");

  // Image size: model_args, else the pretrained_cfg's fixed input size, else the registry's default cfg.
  static const json::Value empty_cfg = json::Value::object();
  const json::Value* pcfg_v = root.get("pretrained_cfg");
  Reader pcfg{pcfg_v ? *pcfg_v : empty_cfg, where + " pretrained_cfg"};
  int64_t cfg_input = reg->img_size;
  if (const json::Value* is = pcfg.get("input_size"); is && is->is_array() && is->items().size() == 3) {
    cfg_input = static_cast<int64_t>(is->items()[2].as_number());
    if (is->items()[1].as_number() != is->items()[2].as_number()) throw Error(where + ": non-square input_size is not supported");
  }
  spec.img_size = args.integer("img_size", cfg_input);
  spec.input_size = pcfg_v && pcfg.get("input_size") ? cfg_input : spec.img_size;
  spec.mean = reg->imagenet_norm ? kImagenetMean : kInceptionMean;
  spec.std = reg->imagenet_norm ? kImagenetStd : kInceptionStd;
  pcfg.triple("mean", spec.mean);
  pcfg.triple("std", spec.std);
}

// ---------------------------------------------------------------------------------------------------------------
// transformers
// ---------------------------------------------------------------------------------------------------------------
void resolve_hf(const json::Value& config, const std::string& where, ModelSpec& spec) {
  Reader c{config, where};
  std::string type = c.text("model_type", "");
  if (type != "dinov2" && type != "dinov2_with_registers") {
    throw Error(where + ": model_type '" + type + "' is not supported; supported: dinov2, dinov2_with_registers "
                "(transformers layout) or a timm hub config with \"architecture\"");
  }
  const bool with_registers = type == "dinov2_with_registers";
  spec.layout = "hf";
  spec.family = type;
  spec.embed_dim = c.integer("hidden_size", 768);
  spec.depth = c.integer("num_hidden_layers", 12);
  spec.num_heads = c.integer("num_attention_heads", 12);
  spec.patch_size = c.integer("patch_size", with_registers ? 16 : 14);
  spec.img_size = c.integer("image_size", 224);
  if (c.integer("num_channels", 3) != 3) throw Error(where + ": num_channels must be 3 (RGB)");
  spec.qkv_bias = c.flag("qkv_bias", true);
  spec.qkv_fused = false;
  spec.norm_eps = c.number("layer_norm_eps", 1e-6);
  spec.layer_scale = true;  // Dinov2Layer always has layer_scale1/2
  spec.init_values = c.number("layerscale_value", 1.0);
  // Registers: Dinov2WithRegisters (default 4); plain dinov2 configs that carry them (Hibou's remote code) too.
  spec.num_registers = c.integer("num_register_tokens", with_registers ? 4 : 0);
  spec.no_embed_class = false;
  // transformers' Dinov2 interpolates with plain bicubic; Dinov2WithRegisters with antialias=True.
  spec.pos_antialias = with_registers || spec.num_registers > 0;
  spec.mask_token = with_registers ? true : c.flag("use_mask_token", true);
  spec.num_classes = 0;
  // Training-only regularisation (model.h Regularization); Dinov2Config defaults are 0.
  spec.drop.drop_path = rate(c, "drop_path_rate");
  spec.drop.attn_drop = rate(c, "attention_probs_dropout_prob");
  spec.drop.hidden_drop = rate(c, "hidden_dropout_prob");
  double mlp_ratio = c.number("mlp_ratio", 4);
  int64_t hidden = static_cast<int64_t>(static_cast<double>(spec.embed_dim) * mlp_ratio);
  if (c.flag("use_swiglu_ffn", false)) {
    // Dinov2SwiGLUFFN: hidden = (int(hidden * 2 / 3) + 7) // 8 * 8; weights_in is 2 * hidden wide.
    spec.mlp = "swiglu_hf";
    spec.mlp_hidden = (static_cast<int64_t>(static_cast<double>(hidden) * 2.0 / 3.0) + 7) / 8 * 8;
  } else {
    std::string act = c.text("hidden_act", "gelu");
    if (act != "gelu") throw Error(where + ": hidden_act '" + act + "' is not supported (gelu only)");
    spec.mlp = "gelu";
    spec.mlp_hidden = hidden;
  }
  spec.input_size = spec.img_size;
  spec.mean = kImagenetMean;
  spec.std = kImagenetStd;
  // Dinov2Model's pooler_output is the class token of last_hidden_state (after the final layernorm); the config
  // has no pooling field, so cls unless a preset or --pool says otherwise.
  spec.pool = "cls";
  spec.fc_norm = false;
}

void apply_preprocessor(const json::Value& pre, const std::string& where, ModelSpec& spec) {
  Reader p{pre, where};
  p.triple("image_mean", spec.mean);
  p.triple("image_std", spec.std);
  if (const json::Value* crop = p.get("crop_size"); crop && p.flag("do_center_crop", true)) {
    if (crop->is_object()) {
      Reader cr{*crop, where + " crop_size"};
      spec.input_size = cr.integer("height", spec.input_size);
    } else if (crop->is_number()) {
      spec.input_size = static_cast<int64_t>(crop->as_number());
    }
  }
}

/** Presets whose config.json is incomplete without them, recognised from that config (UNI2-h). */
std::string detect_preset(const json::Value& config) {
  Reader r{config, ""};
  // An export of a model that needed a preset records it (recorded_config_json): H0-mini's config.json, for one, is
  // that of a plain vit_base_patch14_reg4_dinov2 with the SwiGLU layer left to code.
  if (const json::Value* g = config.find("g2l_preset"); g && g->is_string()) {
    for (const auto& p : presets()) {
      if (g->as_string() == p.name) return p.name;
    }
  }
  if (r.text("architecture", "") == "vit_giant_patch14_224") {
    const json::Value* args = config.find("model_args");
    if (args && args->is_object()) {
      Reader a{*args, ""};
      if (a.integer("reg_tokens", 0) == 8 && !a.get("mlp_layer")) return "uni2-h";
    }
  }
  // Virchow2's config.json: vit_huge_patch14_224 with 4 registers and mlp_ratio 5.3375, the SwiGLU layer and the
  // cls+mean embedding left to code (TRIDENT's Virchow2InferenceEncoder).
  if (r.text("architecture", "") == "vit_huge_patch14_224") {
    const json::Value* args = config.find("model_args");
    if (args && args->is_object()) {
      Reader a{*args, ""};
      if (a.integer("reg_tokens", 0) == 4 && a.number("mlp_ratio", 0) == 5.3375 && !a.get("mlp_layer")) return "virchow2";
    }
  }
  return "";
}

}  // namespace

std::vector<std::string> preset_names() {
  std::vector<std::string> names;
  for (const auto& p : presets()) names.emplace_back(p.name);
  for (const auto& [alias, target] : preset_aliases()) names.push_back(alias);
  return names;
}

int64_t ModelSpec::pos_tokens() const {
  int64_t grid = img_size / patch_size;
  if (layout == "hf") return grid * grid + 1;
  return grid * grid + (no_embed_class ? 0 : prefix_tokens());
}

// The student's training-only rates: its config.json's, replaced by the run's overrides; a rate its library does not
// have, or a non-zero patch drop, is refused rather than ignored.
Regularization student_regularization(const ModelSpec& spec, const StudentDrop& o) {
  Regularization r = spec.drop;
  const bool hf = spec.layout == "hf";
  struct Item {
    const char* run_key;     // the run config's name (studentDrop.<key>)
    const char* lib_key;     // the student library's config name
    const std::optional<double>& override_value;
    double& value;
    bool supported;
  };
  const Item items[] = {
      {"dropPath", "drop_path_rate", o.drop_path, r.drop_path, true},
      {"attnDrop", hf ? "attention_probs_dropout_prob" : "attn_drop_rate", o.attn_drop, r.attn_drop, true},
      {"projDrop", "proj_drop_rate", o.proj_drop, r.proj_drop, !hf},
      {"posDrop", "pos_drop_rate", o.pos_drop, r.pos_drop, !hf},
      {"headDrop", "drop_rate", o.head_drop, r.head_drop, !hf},
      {"hiddenDrop", "hidden_dropout_prob", o.hidden_drop, r.hidden_drop, hf},
      {"patchDrop", "patch_drop_rate", o.patch_drop, r.patch_drop, !hf},
  };
  for (const Item& it : items) {
    if (!it.override_value) continue;
    const double v = *it.override_value;
    if (!(v >= 0.0 && v <= 1.0)) {
      throw Error(std::string("studentDrop.") + it.run_key + " must be a rate in [0, 1], got " + std::to_string(v));
    }
    if (!it.supported && v != 0.0) {
      throw Error(std::string("studentDrop.") + it.run_key + " is not a rate of a " +
                  (hf ? "transformers (Dinov2) student: use dropPath, attnDrop, hiddenDrop"
                      : "timm student: use dropPath, attnDrop, projDrop, posDrop, headDrop") +
                  " (student: " + spec.describe() + ")");
    }
    it.value = v;
  }
  if (r.patch_drop > 0) {
    throw Error("the student's config sets patch_drop_rate " + std::to_string(r.patch_drop) +
                " (timm PatchDropout, which drops tokens): not supported; set it to 0 in the student's config.json or "
                "override it with studentDrop.patchDrop 0 (student: " + spec.describe() + ")");
  }
  return r;
}

std::string ModelSpec::describe() const {
  std::ostringstream s;
  s << layout << " " << family << " (dim " << embed_dim << ", depth " << depth << ", heads " << num_heads << ", patch "
    << patch_size;
  if (num_registers) s << ", " << num_registers << " registers";
  s << ", " << (mlp == "gelu" ? "GELU MLP" : "SwiGLU") << ", pool " << pool << ")";
  return s.str();
}

const std::vector<std::string>& pool_names() {
  static const std::vector<std::string> names = {"cls", "mean", "cls+mean"};
  return names;
}

ModelSpec resolve_model_spec(const std::string& folder, const std::string& preset_name, const std::string& pool) {
  if (!pool.empty() && std::find(pool_names().begin(), pool_names().end(), pool) == pool_names().end()) {
    throw Error("unknown pooling '" + pool + "': use cls, mean or cls+mean");
  }
  const Preset* preset = nullptr;
  if (!preset_name.empty()) {
    std::string name = preset_name;
    for (const auto& [alias, target] : preset_aliases()) {
      if (name == alias) name = target;
    }
    for (const auto& p : presets()) {
      if (name == p.name) preset = &p;
    }
    if (!preset) throw Error("unknown preset '" + preset_name + "': known presets are " + known_presets());
  }
  json::Value config;
  bool has_config = false;
  std::string where = "preset " + preset_name;
  if (!folder.empty()) {
    if (!fs::is_directory(folder)) {
      throw Error("model folder " + folder + " does not exist or is not a folder: pass the folder that holds config.json and model.safetensors");
    }
    fs::path cfg = fs::path(folder) / "config.json";
    if (fs::exists(cfg)) {
      config = json::parse_file(cfg.string());
      if (!config.is_object()) throw Error(cfg.string() + " is not a JSON object");
      has_config = true;
      where = cfg.string();
    } else if (!preset) {
      throw Error(folder + " has no config.json and no preset was given: pass --model preset:<name>:" + folder +
                  " (presets: " + known_presets() + "), or put the model's config.json next to its weights");
    }
  } else if (!preset) {
    throw Error("no model folder and no preset given: pass a model folder, or preset:<name>[:<folder>]");
  }

  std::string detected;
  if (!preset && has_config) {
    detected = detect_preset(config);
    for (const auto& p : presets()) {
      if (detected == p.name) preset = &p;
    }
  }

  // The layout is the config's own; a preset of the other layout cannot describe these weights.
  std::string layout = has_config ? (config.has("architecture") ? "timm" : config.has("model_type") ? "hf" : "") : preset->layout;
  if (layout.empty()) {
    throw Error(where + " is neither a timm hub config (no \"architecture\") nor a transformers config (no \"model_type\")" +
                (preset ? "" : ": pass a preset (" + known_presets() + ")"));
  }
  if (preset && layout != preset->layout) {
    throw Error(where + " is a " + layout + " config but preset '" + preset->name + "' describes a " + preset->layout +
                " folder: drop the preset or use the folder of the model it names");
  }
  json::Value merged = preset ? preset->config() : json::Value::object();
  if (has_config) merged = overlay(merged, config);

  ModelSpec spec;
  if (layout == "timm") {
    resolve_timm(merged, where, spec);
  } else {
    resolve_hf(merged, where, spec);
  }
  // Normalisation: a preset's official values unless the folder's own files say otherwise.
  if (preset) {
    const bool cfg_has_norm = has_config && layout == "timm" && config.find("pretrained_cfg") &&
                              config.find("pretrained_cfg")->has("mean");
    if (!cfg_has_norm) {
      spec.mean = preset->mean;
      spec.std = preset->std;
    }
  }
  if (!folder.empty()) {
    fs::path pre = fs::path(folder) / "preprocessor_config.json";
    if (layout == "hf" && fs::exists(pre)) {
      spec.preprocessor_json = read_text(pre);
      apply_preprocessor(json::parse(spec.preprocessor_json, pre.string()), pre.string(), spec);
    }
    if (has_config) spec.config_json = read_text(fs::path(folder) / "config.json");
  }
  spec.preset = preset ? preset->name : "";
  spec.folder = folder;
  // Pooling: the override, else the preset's (the official card's), else the config's (timm global_pool; cls for
  // transformers).
  const json::Value* recorded = has_config ? config.find("g2l_pool") : nullptr;
  if (recorded && !(recorded->is_string() &&
                    std::find(pool_names().begin(), pool_names().end(), recorded->as_string()) != pool_names().end())) {
    throw Error(where + ": g2l_pool must be one of cls, mean, cls+mean");
  }
  if (!pool.empty()) {
    spec.pool = pool;
  } else if (recorded) {
    spec.pool = recorded->as_string();  // recorded by an export (a student trained with this pooling)
  } else if (preset && preset->pool[0]) {
    spec.pool = preset->pool;
  }
  if (spec.pool.empty()) {
    throw Error(where + ": global_pool '' returns every token and says no pooling: pass a pooling (--pool cls, mean or "
                "cls+mean; pool in a distill config)");
  }
  if (spec.pool == "cls+mean" && spec.fc_norm) {
    throw Error(where + ": cls+mean pooling on a model with fc_norm (timm global_pool 'avg') is not defined: fc_norm "
                "normalises one D-wide pooled vector; use --pool mean or cls");
  }

  if (spec.embed_dim % spec.num_heads != 0) {
    throw Error(where + ": embedding dim " + std::to_string(spec.embed_dim) + " is not divisible by " +
                std::to_string(spec.num_heads) + " heads");
  }
  if (spec.patch_size <= 0 || spec.img_size % spec.patch_size != 0) {
    throw Error(where + ": image size " + std::to_string(spec.img_size) + " is not a multiple of patch size " +
                std::to_string(spec.patch_size));
  }
  for (float s : spec.std) {
    if (!(s > 0)) throw Error(where + ": std must be positive");
  }
  return spec;
}

// ---------------------------------------------------------------------------------------------------------------
// Configs for models that have none (random models being exported)
// ---------------------------------------------------------------------------------------------------------------
namespace {
/** A ratio r with int(dim * r) == hidden in double arithmetic, as timm and transformers compute widths. */
double width_ratio(int64_t hidden, int64_t dim) {
  double r = static_cast<double>(hidden) / static_cast<double>(dim);
  if (static_cast<int64_t>(static_cast<double>(dim) * r) == hidden) return r;
  return (static_cast<double>(hidden) + 0.5) / static_cast<double>(dim);  // (hidden/dim)*dim fell just short
}

json::Value triple_json(const std::array<float, 3>& v) {
  // Print the float32 values as the short decimals they came from (0.707223, not 0.70722299814).
  json::Value a = json::Value::array();
  for (float f : v) a.items().push_back(json::Value::number(std::stod(c10::str(f))));
  return a;
}

}  // namespace

/** config.json for a model that has none (a random model): what timm / transformers need to rebuild it. */
std::string synthesize_config_json(const ModelSpec& spec) {
  json::Value c = json::Value::object();
  auto num = [](double d) { return json::Value::number(d); };
  if (spec.layout == "timm") {
    c.set("architecture", json::Value::string(spec.family));
    c.set("num_classes", num(static_cast<double>(spec.num_classes)));
    c.set("num_features", num(static_cast<double>(spec.embed_dim)));
    // timm's own pooling where it has one; cls+mean is not a timm pool: all tokens ('') and g2l_pool (read back by
    // resolve_model_spec) say it.
    c.set("global_pool", json::Value::string(spec.pool == "cls" ? "token" : spec.pool == "mean" ? "avg" : ""));
    json::Value a = json::Value::object();
    a.set("img_size", num(static_cast<double>(spec.img_size)));
    a.set("patch_size", num(static_cast<double>(spec.patch_size)));
    a.set("embed_dim", num(static_cast<double>(spec.embed_dim)));
    a.set("depth", num(static_cast<double>(spec.depth)));
    a.set("num_heads", num(static_cast<double>(spec.num_heads)));
    a.set("mlp_ratio", num(width_ratio(spec.mlp == "gelu" ? spec.mlp_hidden : 2 * spec.mlp_hidden, spec.embed_dim)));
    a.set("init_values", spec.layer_scale ? num(spec.init_values > 0 ? spec.init_values : 1e-5) : json::Value());
    a.set("reg_tokens", num(static_cast<double>(spec.num_registers)));
    a.set("no_embed_class", json::Value::boolean(spec.no_embed_class));
    a.set("qkv_bias", json::Value::boolean(spec.qkv_bias));
    // timm reads global_pool from model_args (the top-level one is informational); fc_norm only where it differs
    // from timm's default for that pool.
    a.set("global_pool", json::Value::string(spec.pool == "cls" ? "token" : spec.pool == "mean" ? "avg" : ""));
    if (spec.fc_norm != (spec.pool == "mean")) a.set("fc_norm", json::Value::boolean(spec.fc_norm));
    // timm takes the MLP layer as a class in code (mlp_layer=SwiGLUPacked, act_layer=SiLU), so a name here would
    // stop timm.create_model: written only where the architecture's default differs and no preset says it.
    const TimmArch* reg = find_timm(spec.family);
    const bool default_mlp = reg && (spec.mlp == "swiglu_packed") == (std::string(reg->mlp_layer) == "swiglu_packed");
    if (!default_mlp && spec.preset != "uni2-h" && spec.preset != "virchow2" && spec.preset != "h0-mini") {
      a.set("mlp_layer", json::Value::string(spec.mlp == "swiglu_packed" ? "swiglu_packed" : "mlp"));
      a.set("act_layer", json::Value::string(spec.mlp == "swiglu_packed" ? "silu" : "gelu"));
    }
    c.set("model_args", a);
    json::Value p = json::Value::object();
    json::Value input = json::Value::array({num(3), num(static_cast<double>(spec.input_size)), num(static_cast<double>(spec.input_size))});
    p.set("input_size", input);
    p.set("interpolation", json::Value::string("bicubic"));
    p.set("crop_pct", num(1.0));
    p.set("mean", triple_json(spec.mean));
    p.set("std", triple_json(spec.std));
    p.set("num_classes", num(static_cast<double>(spec.num_classes)));
    c.set("pretrained_cfg", p);
    if (spec.pool == "cls+mean") c.set("g2l_pool", json::Value::string(spec.pool));
    if (!spec.preset.empty()) c.set("g2l_preset", json::Value::string(spec.preset));
  } else {
    const bool regs = spec.num_registers > 0;
    c.set("architectures", json::Value::array({json::Value::string(regs ? "Dinov2WithRegistersModel" : "Dinov2Model")}));
    c.set("model_type", json::Value::string(regs ? "dinov2_with_registers" : "dinov2"));
    c.set("hidden_size", num(static_cast<double>(spec.embed_dim)));
    c.set("num_hidden_layers", num(static_cast<double>(spec.depth)));
    c.set("num_attention_heads", num(static_cast<double>(spec.num_heads)));
    c.set("patch_size", num(static_cast<double>(spec.patch_size)));
    c.set("image_size", num(static_cast<double>(spec.img_size)));
    c.set("layer_norm_eps", num(spec.norm_eps));
    c.set("layerscale_value", num(spec.init_values));
    c.set("qkv_bias", json::Value::boolean(spec.qkv_bias));
    c.set("use_swiglu_ffn", json::Value::boolean(spec.mlp == "swiglu_hf"));
    if (spec.mlp == "gelu") c.set("mlp_ratio", num(width_ratio(spec.mlp_hidden, spec.embed_dim)));
    else c.set("mlp_ratio", num(4));  // transformers derives the SwiGLU width from hidden * mlp_ratio
    if (regs) c.set("num_register_tokens", num(static_cast<double>(spec.num_registers)));
    c.set("hidden_act", json::Value::string("gelu"));
    // transformers configs have no pooling field: the engine's own key, read back by resolve_model_spec.
    if (spec.pool != "cls") c.set("g2l_pool", json::Value::string(spec.pool));
    if (!spec.preset.empty()) c.set("g2l_preset", json::Value::string(spec.preset));
  }
  return c.dump(2) + "\n";
}

std::string recorded_config_json(const ModelSpec& spec) {
  json::Value c = json::parse(spec.config_json, "config.json");
  std::string own = "cls";
  if (const json::Value* g = c.find("g2l_pool"); g && g->is_string()) {
    own = g->as_string();
  } else if (spec.layout == "timm") {
    const json::Value* args = c.find("model_args");
    const json::Value* gp = args && args->is_object() ? args->find("global_pool") : nullptr;
    if (!gp || !gp->is_string()) gp = c.find("global_pool");
    const std::string p = gp && gp->is_string() ? gp->as_string() : "token";
    own = p == "token" ? "cls" : p == "avg" ? "mean" : "";
  }
  // The preset the model needed, when its config.json alone does not lead back to it (g2l_preset, read by
  // detect_preset): the exported folder then reloads without naming it.
  const bool record_preset = !spec.preset.empty() && detect_preset(c) != spec.preset;
  if (own == spec.pool && !record_preset) return spec.config_json;
  if (own != spec.pool) c.set("g2l_pool", json::Value::string(spec.pool));
  if (record_preset) c.set("g2l_preset", json::Value::string(spec.preset));
  return c.dump(2) + "\n";
}

std::string synthesize_preprocessor_json(const ModelSpec& spec) {
  json::Value p = json::Value::object();
  auto num = [](double d) { return json::Value::number(d); };
  json::Value crop = json::Value::object();
  crop.set("height", num(static_cast<double>(spec.input_size)));
  crop.set("width", num(static_cast<double>(spec.input_size)));
  p.set("crop_size", crop);
  p.set("do_center_crop", json::Value::boolean(true));
  p.set("do_normalize", json::Value::boolean(true));
  p.set("do_rescale", json::Value::boolean(true));
  p.set("do_resize", json::Value::boolean(true));
  p.set("image_mean", triple_json(spec.mean));
  p.set("image_std", triple_json(spec.std));
  p.set("image_processor_type", json::Value::string("BitImageProcessor"));
  p.set("resample", num(3));
  p.set("rescale_factor", num(1.0 / 255.0));
  json::Value size = json::Value::object();
  size.set("shortest_edge", num(static_cast<double>(spec.input_size)));
  p.set("size", size);
  return p.dump(2) + "\n";
}

}  // namespace g2l
