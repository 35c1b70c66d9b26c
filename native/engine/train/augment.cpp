// Tile augmentation (G2L, docs/method.md, "Constants"): random crop, flips, colour jitter in random order, Gaussian
// blur, then both models' normalisations, for one view fed to teacher and student.
//
// The CPU path below is written with libtorch ops that follow torchvision 0.26's tensor kernels
// (torchvision/transforms/v2/functional/_color.py and _misc.py) line by line, on float32 images in [0,1]:
//   adjust_brightness  x*f, clamp [0,1]
//   adjust_contrast    blend(x, mean(gray(x)), f)       gray = 0.2989 r + 0.587 g + 0.114 b, mean over the image
//   adjust_saturation  blend(x, gray(x), f)             blend(a, b, f) = clamp(f a + (1-f) b, 0, 1)
//   adjust_hue         rgb -> hsv, h = (h + f) mod 1, hsv -> rgb
//   gaussian_blur      9x9, reflect padding, kernel softmax(-(x/sigma)^2) on linspace(+-(k-1)/(2 sqrt 2))
// The CUDA path (cuda/augment.cu) computes the same function in one fused kernel per batch.
// Pipeline order: crop -> hflip -> vflip -> colour jitter (p_jitter) -> blur (p_blur) -> normalise.
#include "train/augment.h"

#include <ATen/CPUGeneratorImpl.h>
#include <c10/util/ParallelGuard.h>

#include <cmath>
#include <mutex>
#include <string>

#ifdef G2L_WITH_CUDA
#include <c10/cuda/CUDAStream.h>

#include "kernels/cuda/kernels.h"
#endif

#include "runtime/tensor_bridge.h"

namespace g2l {

namespace {

// ---------------------------------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------------------------------

void check_config(const AugmentConfig& c, int64_t tile_h, int64_t tile_w) {
  auto prob = [](double p, const char* name) {
    if (!(p >= 0.0 && p <= 1.0))
      throw Error(std::string("augment: ") + name + " must be in [0, 1], got " + std::to_string(p));
  };
  if (c.crop <= 0 || c.crop > tile_h || c.crop > tile_w) {
    throw Error("augment: crop " + std::to_string(c.crop) + " does not fit tiles of " + std::to_string(tile_h) + "x" +
                std::to_string(tile_w) + ": use a crop no larger than the tile");
  }
  prob(c.p_hflip, "p_hflip");
  prob(c.p_vflip, "p_vflip");
  prob(c.p_jitter, "p_jitter");
  prob(c.p_blur, "p_blur");
  if (!(c.brightness >= 0 && c.contrast >= 0 && c.saturation >= 0)) {
    throw Error("augment: brightness, contrast and saturation must be non-negative");
  }
  if (!(c.hue >= 0 && c.hue <= 0.5)) throw Error("augment: hue must be in [0, 0.5], got " + std::to_string(c.hue));
  if (c.blur_kernel <= 0 || c.blur_kernel % 2 == 0 || c.blur_kernel / 2 >= c.crop) {
    throw Error("augment: blur_kernel must be odd, positive and smaller than twice the crop, got " +
                std::to_string(c.blur_kernel));
  }
  if (!(c.blur_sigma_min > 0 && c.blur_sigma_max >= c.blur_sigma_min)) {
    throw Error("augment: blur sigma range must satisfy 0 < min <= max");
  }
}

/** Checks every row of params (CPU float32, contiguous) against the tile size and the config. */
void check_params(const at::Tensor& p, int64_t batch, int64_t tile_h, int64_t tile_w, const AugmentConfig& config) {
  if (p.dim() != 2 || p.size(0) != batch || p.size(1) != kAugmentParamCount) {
    throw Error("augment_batch: params must be (B," + std::to_string(kAugmentParamCount) +
                ") with B = " + std::to_string(batch) + ", got " + c10::str(p.sizes()));
  }
  auto a = p.accessor<float, 2>();
  for (int64_t b = 0; b < batch; ++b) {
    float cx = a[b][kCropX], cy = a[b][kCropY];
    if (cx != std::floor(cx) || cy != std::floor(cy) || cx < 0 || cy < 0 || cx + config.crop > tile_w ||
        cy + config.crop > tile_h) {
      throw Error("augment_batch: params row " + std::to_string(b) + ": crop offset (" + std::to_string(cx) + ", " +
                  std::to_string(cy) + ") does not fit a " + std::to_string(config.crop) + " crop in " +
                  std::to_string(tile_h) + "x" + std::to_string(tile_w) + " tiles");
    }
    int seen = 0;
    for (int k = 0; k < 4; ++k) {
      float o = a[b][kOrder0 + k];
      if (o != 0 && o != 1 && o != 2 && o != 3)
        throw Error("augment_batch: params row " + std::to_string(b) + ": bad order slot");
      seen |= 1 << static_cast<int>(o);
    }
    if (seen != 15)
      throw Error("augment_batch: params row " + std::to_string(b) + ": order is not a permutation of 0..3");
    if (a[b][kBlur] != 0 && !(a[b][kSigma] > 0)) {
      throw Error("augment_batch: params row " + std::to_string(b) + ": blur sigma must be positive");
    }
    if (a[b][kJitter] != 0 && !(a[b][kBrightness] >= 0 && a[b][kContrast] >= 0 && a[b][kSaturation] >= 0 &&
                                a[b][kHue] >= -0.5f && a[b][kHue] <= 0.5f)) {
      throw Error("augment_batch: params row " + std::to_string(b) + ": jitter factors out of range");
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// CPU path: torchvision's tensor kernels on one (3,H,W) float32 image
// ---------------------------------------------------------------------------------------------------------------

at::Tensor grayscale(const at::Tensor& x) {  // (3,H,W) -> (1,H,W)
  return x[0].mul(0.2989).add_(x[1], 0.587).add_(x[2], 0.114).unsqueeze(0);
}

at::Tensor blend(const at::Tensor& a, const at::Tensor& b, double ratio) {
  return a.mul(ratio).add_(b, 1.0 - ratio).clamp_(0, 1);
}

at::Tensor adjust_brightness(const at::Tensor& x, double f) { return x.mul(f).clamp_(0, 1); }
at::Tensor adjust_contrast(const at::Tensor& x, double f) { return blend(x, grayscale(x).mean({-3, -2, -1}, true), f); }
at::Tensor adjust_saturation(const at::Tensor& x, double f) { return blend(x, grayscale(x), f); }

at::Tensor rgb_to_hsv(const at::Tensor& image) {  // (3,H,W) -> (3,H,W) h,s,v
  at::Tensor r = image[0], g = image[1];
  auto [minc, maxc] = at::aminmax(image, -3);
  at::Tensor eqc = maxc == minc;
  at::Tensor channels_range = maxc - minc;
  at::Tensor ones = at::ones_like(maxc);
  at::Tensor s = channels_range / at::where(eqc, ones, maxc);
  at::Tensor divisor = at::where(eqc, ones, channels_range).unsqueeze(-3);
  at::Tensor rgbc = (maxc.unsqueeze(-3) - image) / divisor;
  at::Tensor rc = rgbc[0], gc = rgbc[1], bc = rgbc[2];
  at::Tensor maxc_neq_r = maxc != r;
  at::Tensor maxc_eq_g = maxc == g;
  at::Tensor hg = rc.add(2.0).sub_(bc).mul_(maxc_eq_g & maxc_neq_r);
  at::Tensor hr = bc.sub(gc).mul_(maxc_neq_r.logical_not());
  at::Tensor hb = gc.add(4.0).sub_(rc).mul_(maxc_neq_r.logical_and(maxc_eq_g.logical_not()));
  at::Tensor h = hr.add_(hg).add_(hb).mul_(1.0 / 6.0).add_(1.0).fmod_(1.0);
  return at::stack({h, s, maxc}, -3);
}

at::Tensor hsv_to_rgb(const at::Tensor& img) {
  at::Tensor h = img[0], s = img[1], v = img[2];
  at::Tensor h6 = h.mul(6);
  at::Tensor i = at::floor(h6);
  at::Tensor f = h6.sub(i);
  at::Tensor ii = i.to(at::kInt).remainder_(6).to(at::kLong);
  at::Tensor sxf = s * f;
  at::Tensor one_minus_s = 1.0 - s;
  at::Tensor q = (1.0 - sxf).mul_(v).clamp_(0.0, 1.0);
  at::Tensor t = sxf.add(one_minus_s).mul_(v).clamp_(0.0, 1.0);
  at::Tensor p = one_minus_s.mul(v).clamp_(0.0, 1.0);
  at::Tensor vpqt = at::stack({v, p, q, t}, -3);  // (4,H,W)
  // vpqt -> rgb by sector i (torchvision's select table)
  at::Tensor select = at::tensor({0, 2, 1, 1, 3, 0, 3, 0, 0, 2, 1, 1, 1, 1, 3, 0, 0, 2}, at::kLong).view({3, 6});
  at::Tensor idx = select.index_select(1, ii.flatten()).view({3, h.size(0), h.size(1)});  // (3,H,W) in 0..3
  return vpqt.gather(0, idx);
}

at::Tensor adjust_hue(const at::Tensor& x, double f) {
  at::Tensor hsv = rgb_to_hsv(x);
  at::Tensor h = hsv[0].add(f).remainder_(1.0);
  return hsv_to_rgb(at::stack({h, hsv[1], hsv[2]}, 0));
}

at::Tensor gaussian_kernel1d(int64_t k, double sigma) {
  double lim = (k - 1) / (2.0 * std::sqrt(2.0));
  at::Tensor x = at::linspace(-lim, lim, k, at::kFloat);
  return at::softmax(x.div(sigma).pow(2).neg(), 0);
}

at::Tensor gaussian_blur(const at::Tensor& x, int64_t k, double sigma) {  // (3,H,W)
  at::Tensor k1 = gaussian_kernel1d(k, sigma);
  at::Tensor k2 = (k1.unsqueeze(-1) * k1).expand({3, 1, k, k});
  int64_t pad = k / 2;
  at::Tensor padded = at::reflection_pad2d(x.unsqueeze(0), {pad, pad, pad, pad});
  const std::vector<int64_t> one{1, 1}, zero{0, 0};
  return at::conv2d(padded, k2, /*bias=*/at::Tensor(), one, zero, one, /*groups=*/3).squeeze(0);
}

/** One sample: tile (H,W,3) uint8 -> augmented (3,crop,crop) float32 in [0,1]. */
at::Tensor augment_one(const at::Tensor& tile, const float* p, const AugmentConfig& config) {
  const int64_t c = config.crop;
  at::Tensor x = tile.slice(0, static_cast<int64_t>(p[kCropY]), static_cast<int64_t>(p[kCropY]) + c)
                     .slice(1, static_cast<int64_t>(p[kCropX]), static_cast<int64_t>(p[kCropX]) + c)
                     .permute({2, 0, 1})
                     .to(at::kFloat)
                     .div_(255.0);
  if (p[kHFlip] != 0) x = x.flip({2});
  if (p[kVFlip] != 0) x = x.flip({1});
  if (p[kJitter] != 0) {
    for (int k = 0; k < 4; ++k) {
      switch (static_cast<int>(p[kOrder0 + k])) {
        case 0:
          x = adjust_brightness(x, p[kBrightness]);
          break;
        case 1:
          x = adjust_contrast(x, p[kContrast]);
          break;
        case 2:
          x = adjust_saturation(x, p[kSaturation]);
          break;
        case 3:
          x = adjust_hue(x, p[kHue]);
          break;
      }
    }
  }
  if (p[kBlur] != 0) x = gaussian_blur(x, config.blur_kernel, p[kSigma]);
  return x;
}

at::Tensor normalize_chw(const at::Tensor& x, const Normalization& n) {
  at::Tensor mean = at::tensor({n.mean[0], n.mean[1], n.mean[2]}, at::kFloat).view({3, 1, 1});
  at::Tensor stdev = at::tensor({n.std[0], n.std[1], n.std[2]}, at::kFloat).view({3, 1, 1});
  return x.sub(mean).div_(stdev);
}

void check_norm(const Normalization& n, const char* who) {
  for (float s : n.std) {
    if (!(s > 0.f)) throw Error(std::string("augment_batch: ") + who + " std must be positive");
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------------
// Parameters
// ---------------------------------------------------------------------------------------------------------------

at::Tensor sample_augment_params(int64_t batch, int64_t tile_h, int64_t tile_w, const AugmentConfig& config,
                                 at::Generator generator) {
  if (batch < 0) throw Error("sample_augment_params: batch must be non-negative");
  check_config(config, tile_h, tile_w);
  at::Tensor out = at::zeros({batch, kAugmentParamCount}, at::kFloat);
  auto a = out.accessor<float, 2>();
  auto* gen = at::check_generator<at::CPUGeneratorImpl>(generator);
  std::lock_guard<std::mutex> lock(generator.mutex());
  // 24 high bits of one 32-bit draw -> [0, 1), exactly representable; the JS backend does the same.
  auto uniform = [&] { return static_cast<double>(gen->random() >> 8) * (1.0 / 16777216.0); };
  auto between = [&](double lo, double hi) { return lo + (hi - lo) * uniform(); };
  for (int64_t b = 0; b < batch; ++b) {
    float* row = &a[b][0];
    for (int k = 0; k < 4; ++k) row[kOrder0 + k] = static_cast<float>(k);
    row[kBrightness] = row[kContrast] = row[kSaturation] = 1.f;
    if (!config.enabled) {  // torchvision CenterCrop: int(round((size - crop) / 2))
      row[kCropX] = static_cast<float>(std::nearbyint((tile_w - config.crop) / 2.0));
      row[kCropY] = static_cast<float>(std::nearbyint((tile_h - config.crop) / 2.0));
      continue;
    }
    row[kCropX] = static_cast<float>(std::floor(uniform() * static_cast<double>(tile_w - config.crop + 1)));
    row[kCropY] = static_cast<float>(std::floor(uniform() * static_cast<double>(tile_h - config.crop + 1)));
    row[kHFlip] = uniform() < config.p_hflip ? 1.f : 0.f;
    row[kVFlip] = uniform() < config.p_vflip ? 1.f : 0.f;
    row[kJitter] = uniform() < config.p_jitter ? 1.f : 0.f;
    row[kBrightness] = static_cast<float>(between(std::max(0.0, 1.0 - config.brightness), 1.0 + config.brightness));
    row[kContrast] = static_cast<float>(between(std::max(0.0, 1.0 - config.contrast), 1.0 + config.contrast));
    row[kSaturation] = static_cast<float>(between(std::max(0.0, 1.0 - config.saturation), 1.0 + config.saturation));
    row[kHue] = static_cast<float>(between(-config.hue, config.hue));
    for (int i = 3; i > 0; --i) {  // Fisher-Yates: a uniform permutation, as torch.randperm(4)
      int j = static_cast<int>(std::floor(uniform() * (i + 1)));
      std::swap(row[kOrder0 + i], row[kOrder0 + j]);
    }
    row[kBlur] = uniform() < config.p_blur ? 1.f : 0.f;
    row[kSigma] = static_cast<float>(between(config.blur_sigma_min, config.blur_sigma_max));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// Augmentation
// ---------------------------------------------------------------------------------------------------------------

AugmentedBatch augment_batch(const at::Tensor& tiles, const at::Tensor& params, const AugmentConfig& config,
                             const Normalization& teacher, const Normalization& student, at::ScalarType teacher_dtype) {
  if (tiles.dim() != 4 || tiles.size(3) != 3 || tiles.scalar_type() != at::kByte) {
    throw Error("augment_batch: expected uint8 tiles of shape (B,H,W,3), got " +
                std::string(c10::toString(tiles.scalar_type())) + " " + c10::str(tiles.sizes()));
  }
  if (teacher_dtype != at::kHalf && teacher_dtype != at::kBFloat16 && teacher_dtype != at::kFloat) {
    throw Error(std::string("augment_batch: teacher dtype must be float16, bfloat16 or float32, got ") +
                c10::toString(teacher_dtype));
  }
  check_norm(teacher, "teacher");
  check_norm(student, "student");
  const int64_t batch = tiles.size(0), tile_h = tiles.size(1), tile_w = tiles.size(2), c = config.crop;
  check_config(config, tile_h, tile_w);
  at::Tensor p = params.to(at::kCPU, at::kFloat).contiguous();
  check_params(p, batch, tile_h, tile_w, config);
  at::Tensor x = tiles.contiguous();

#ifdef G2L_WITH_CUDA
  if (x.is_cuda()) {
    auto opts = x.options();
    AugmentedBatch out{at::empty({batch, 3, c, c}, opts.dtype(teacher_dtype)),
                       at::empty({batch, 3, c, c}, opts.dtype(at::kFloat))};
    if (batch == 0) return out;
    bool any_blur = p.select(1, kBlur).ne(0).any().item<bool>();
    at::Tensor workspace = any_blur ? at::empty({batch, 3, c, c}, opts.dtype(at::kFloat)) : at::Tensor();
    at::Tensor p_dev = p.to(x.device(), /*non_blocking=*/false);
    cuda::AugmentNorm tn{{teacher.mean[0], teacher.mean[1], teacher.mean[2]},
                         {teacher.std[0], teacher.std[1], teacher.std[2]}};
    cuda::AugmentNorm sn{{student.mean[0], student.mean[1], student.mean[2]},
                         {student.std[0], student.std[1], student.std[2]}};
    int dtype_code = teacher_dtype == at::kHalf       ? cuda::kAugmentF16
                     : teacher_dtype == at::kBFloat16 ? cuda::kAugmentBF16
                                                      : cuda::kAugmentF32;
    cuda::augment_tiles(x.data_ptr<uint8_t>(), batch, tile_h, tile_w, p_dev.data_ptr<float>(), c, config.blur_kernel,
                        any_blur ? workspace.data_ptr<float>() : nullptr, out.teacher.data_ptr(), dtype_code,
                        out.student.data_ptr<float>(), tn, sn, c10::cuda::getCurrentCUDAStream().stream());
    return out;
  }
#endif
  if (!x.device().is_cpu()) throw Error("augment_batch: tiles must be on the CPU or a CUDA device");

  AugmentedBatch out{at::empty({batch, 3, c, c}, at::TensorOptions().dtype(teacher_dtype)),
                     at::empty({batch, 3, c, c}, at::TensorOptions().dtype(at::kFloat))};
  const float* prow = p.data_ptr<float>();
  // One sample after another, libtorch's ops single-threaded (c10::ParallelGuard): with 8 tiles of 256 px, 13-16 ms a
  // batch on the 2-core machine, against 17-31 ms split over two threads (runtime/parallel.h), whose fresh threads
  // pay for their own allocations each step.
  c10::ParallelGuard single(true);
  for (int64_t b = 0; b < batch; ++b) {
    at::Tensor img = augment_one(x[b], prow + b * kAugmentParamCount, config);
    out.teacher[b].copy_(normalize_chw(img, teacher));
    out.student[b].copy_(normalize_chw(img, student));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// HostTensor forms (g2l/augment.h)
// ---------------------------------------------------------------------------------------------------------------

HostTensor sample_augment_params(int64_t batch, int64_t tile_h, int64_t tile_w, const AugmentConfig& config,
                                 uint64_t seed) {
  return with_torch_errors([&] {
    at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
    return to_host(sample_augment_params(batch, tile_h, tile_w, config, gen));
  });
}

HostTensor alloc_tile_buffer(int64_t bytes, bool pinned) {
  return with_torch_errors([&] {
    if (bytes < 0) throw Error("alloc_tile_buffer: bytes must be non-negative");
    auto opts = at::TensorOptions().dtype(at::kByte);
    if (pinned && at::hasCUDA()) opts = opts.pinned_memory(true);
    return to_host(at::empty({bytes}, opts));
  });
}

HostAugmentedBatch augment_batch(const HostTensor& tiles, const HostTensor& params, const AugmentConfig& config,
                                 const Normalization& teacher, const Normalization& student, DType teacher_dtype,
                                 const std::string& device) {
  return with_torch_errors([&] {
    if (tiles.dtype != DType::U8)
      throw Error(std::string("augment_batch: tiles must be uint8, got ") + dtype_name(tiles.dtype));
    if (params.dtype != DType::F32)
      throw Error(std::string("augment_batch: params must be float32, got ") + dtype_name(params.dtype));
    at::Device dev = parse_device(device);
    at::Tensor x = view_as_aten(tiles);
    if (!dev.is_cpu()) x = x.to(dev);
    AugmentedBatch out =
        augment_batch(x, view_as_aten(params), config, teacher, student, to_scalar_type(teacher_dtype));
    return HostAugmentedBatch{to_host(out.teacher), to_host(out.student)};
  });
}

}  // namespace g2l
