// Tile augmentation in one fused kernel per batch (contract: native/engine/train/augment.h; CPU twin: augment.cpp).
//
// One thread block per sample. Each pixel of the crop is read once from the uint8 tile (flips folded into the
// read address) and carried through colour jitter in the sample's random order with torchvision's formulas; the
// only whole-image quantity, the grayscale mean that adjust_contrast blends towards, is a block reduction over the
// pixels after the ops that precede contrast (pass 1). Pass 2 runs the full chain and writes both normalised
// outputs (teacher fp16/bf16/fp32, student fp32), or, for a blurred sample, the jittered image to a scratch
// buffer that pass 3 convolves (9x9, reflect padding) before writing. No torch headers: plain pointers in; and no
// cuda_fp16.h either (it needs CCCL headers the pip toolkit lacks): half and bfloat16 are written as their bits by
// the cvt.rn PTX instructions (round to nearest even, as __float2half_rn / __float2bfloat16_rn; bf16 needs sm_80).
#include <cuda_runtime.h>

#include <cmath>
#include <stdexcept>
#include <string>

#include "kernels/cuda/device.cuh"
#include "kernels/cuda/kernels.h"

namespace g2l::cuda {

namespace {

constexpr int kThreads = 512;
constexpr int kMaxBlurKernel = 63;
constexpr int kParamCount = 15;  // g2l/augment.h kAugmentParamCount; columns below follow AugmentParamColumn

struct SampleParams {
  int crop_x, crop_y;
  bool hflip, vflip, jitter, blur;
  float brightness, contrast, saturation, hue, sigma;
  int order[4];
  int contrast_pos;  // index of contrast (1) in order
};

__device__ SampleParams load_params(const float* p) {
  SampleParams s;
  s.crop_x = static_cast<int>(p[0]);
  s.crop_y = static_cast<int>(p[1]);
  s.hflip = p[2] != 0.f;
  s.vflip = p[3] != 0.f;
  s.jitter = p[4] != 0.f;
  s.brightness = p[5];
  s.contrast = p[6];
  s.saturation = p[7];
  s.hue = p[8];
  s.contrast_pos = 4;
  for (int k = 0; k < 4; ++k) {
    s.order[k] = static_cast<int>(p[9 + k]);
    if (s.order[k] == 1) s.contrast_pos = k;
  }
  s.blur = p[13] != 0.f;
  s.sigma = p[14];
  return s;
}

__device__ __forceinline__ float clamp01(float v) { return fminf(fmaxf(v, 0.f), 1.f); }

// torchvision _rgb_to_grayscale_image: 0.2989 r + 0.587 g + 0.114 b
__device__ __forceinline__ float gray(float3 x) { return x.x * 0.2989f + x.y * 0.587f + x.z * 0.114f; }

// torchvision _blend: clamp(ratio a + (1 - ratio) b, 0, 1)
__device__ __forceinline__ float3 blend(float3 a, float3 b, float ratio) {
  float r = 1.f - ratio;
  return make_float3(clamp01(a.x * ratio + b.x * r), clamp01(a.y * ratio + b.y * r), clamp01(a.z * ratio + b.z * r));
}

// torchvision adjust_hue_image: _rgb_to_hsv, h = (h + f) mod 1, _hsv_to_rgb
__device__ float3 adjust_hue(float3 x, float f) {
  float maxc = fmaxf(x.x, fmaxf(x.y, x.z));
  float minc = fminf(x.x, fminf(x.y, x.z));
  bool eqc = maxc == minc;
  float range = maxc - minc;
  float s = range / (eqc ? 1.f : maxc);
  float div = eqc ? 1.f : range;
  float rc = (maxc - x.x) / div, gc = (maxc - x.y) / div, bc = (maxc - x.z) / div;
  float h;
  if (maxc == x.x)
    h = bc - gc;
  else if (maxc == x.y)
    h = 2.f + rc - bc;
  else
    h = 4.f + gc - rc;
  h = fmodf(h * (1.f / 6.f) + 1.f, 1.f);
  h += f;
  h -= floorf(h);  // Python-style remainder by 1
  float v = maxc;
  float h6 = h * 6.f;
  float i = floorf(h6);
  float fr = h6 - i;
  int sector = static_cast<int>(i) % 6;
  if (sector < 0) sector += 6;
  float sxf = s * fr;
  float q = clamp01((1.f - sxf) * v);
  float t = clamp01((sxf + (1.f - s)) * v);
  float p = clamp01((1.f - s) * v);
  switch (sector) {
    case 0:
      return make_float3(v, t, p);
    case 1:
      return make_float3(q, v, p);
    case 2:
      return make_float3(p, v, t);
    case 3:
      return make_float3(p, q, v);
    case 4:
      return make_float3(t, p, v);
    default:
      return make_float3(v, p, q);
  }
}

/** Applies the first `steps` ops of the sample's jitter order; `mean` is the contrast target. */
__device__ float3 jitter(float3 x, const SampleParams& P, float mean, int steps) {
  for (int k = 0; k < steps; ++k) {
    switch (P.order[k]) {
      case 0:
        x = make_float3(clamp01(x.x * P.brightness), clamp01(x.y * P.brightness), clamp01(x.z * P.brightness));
        break;
      case 1:
        x = blend(x, make_float3(mean, mean, mean), P.contrast);
        break;
      case 2: {
        float g = gray(x);
        x = blend(x, make_float3(g, g, g), P.saturation);
        break;
      }
      default:
        x = adjust_hue(x, P.hue);
        break;
    }
  }
  return x;
}

__device__ __forceinline__ int reflect(int i, int n) { return i < 0 ? -i : (i >= n ? 2 * n - 2 - i : i); }

__device__ float block_sum(float v, float* scratch) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < (blockDim.x >> 5) ? scratch[lane] : 0.f;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    if (lane == 0) scratch[0] = v;
  }
  __syncthreads();
  float total = scratch[0];
  __syncthreads();
  return total;
}

// tiles (B,H,W,3) u8, params (B,15) -> teacher (B,3,C,C) T, student (B,3,C,C) f32; grid B, block kThreads
template <typename T>
__global__ void __launch_bounds__(kThreads)
    augment_kernel(const uint8_t* __restrict__ tiles, int64_t tile_h, int64_t tile_w, const float* __restrict__ params,
                   int crop, int blur_kernel, float* __restrict__ workspace, T* __restrict__ teacher,
                   float* __restrict__ student, AugmentNorm tn, AugmentNorm sn) {
  __shared__ float s_scratch[32];
  __shared__ float s_weights[kMaxBlurKernel];
  const int64_t b = blockIdx.x;
  const SampleParams P = load_params(params + b * kParamCount);
  const uint8_t* tile = tiles + b * tile_h * tile_w * 3;
  const int npx = crop * crop;
  const int64_t out_base = b * 3 * static_cast<int64_t>(npx);

  auto load = [&](int i) {
    int y = i / crop, x = i - (i / crop) * crop;
    int64_t sy = P.crop_y + (P.vflip ? crop - 1 - y : y);
    int64_t sx = P.crop_x + (P.hflip ? crop - 1 - x : x);
    const uint8_t* px = tile + (sy * tile_w + sx) * 3;
    return make_float3(px[0] / 255.f, px[1] / 255.f, px[2] / 255.f);
  };
  auto store = [&](int i, float3 v) {
    float c[3] = {v.x, v.y, v.z};
    for (int ch = 0; ch < 3; ++ch) {
      teacher[out_base + ch * npx + i] = from_float<T>((c[ch] - tn.mean[ch]) / tn.std[ch]);
      student[out_base + ch * npx + i] = (c[ch] - sn.mean[ch]) / sn.std[ch];
    }
  };

  // Pass 1: the grayscale mean of the image as adjust_contrast sees it (after the ops ordered before it).
  float mean = 0.f;
  if (P.jitter) {
    float partial = 0.f;
    for (int i = threadIdx.x; i < npx; i += blockDim.x) partial += gray(jitter(load(i), P, 0.f, P.contrast_pos));
    mean = block_sum(partial, s_scratch) / static_cast<float>(npx);
  }

  // Pass 2: the full chain; straight to the outputs unless the sample is blurred.
  float* ws = P.blur ? workspace + out_base : nullptr;
  for (int i = threadIdx.x; i < npx; i += blockDim.x) {
    float3 v = load(i);
    if (P.jitter) v = jitter(v, P, mean, 4);
    if (ws) {
      ws[i] = v.x;
      ws[npx + i] = v.y;
      ws[2 * npx + i] = v.z;
    } else {
      store(i, v);
    }
  }
  if (!P.blur) return;

  // Pass 3: Gaussian blur. torchvision: softmax(-(x/sigma)^2) over linspace(-lim, lim, k), lim = (k-1)/(2 sqrt 2).
  const int r = blur_kernel / 2;
  if (threadIdx.x == 0) {
    float lim = (blur_kernel - 1) / (2.f * sqrtf(2.f));
    float step = blur_kernel > 1 ? 2.f * lim / (blur_kernel - 1) : 0.f;
    float sum = 0.f;
    for (int j = 0; j < blur_kernel; ++j) {
      float x = (j < blur_kernel / 2 ? -lim + j * step : lim - (blur_kernel - 1 - j) * step) / P.sigma;
      s_weights[j] = expf(-x * x);
      sum += s_weights[j];
    }
    for (int j = 0; j < blur_kernel; ++j) s_weights[j] /= sum;
  }
  __syncthreads();  // the scratch image and the weights are complete
  for (int i = threadIdx.x; i < npx; i += blockDim.x) {
    int y = i / crop, x = i - (i / crop) * crop;
    float acc[3] = {0.f, 0.f, 0.f};
    for (int dy = 0; dy < blur_kernel; ++dy) {
      int yy = reflect(y + dy - r, crop);
      float wy = s_weights[dy];
      for (int dx = 0; dx < blur_kernel; ++dx) {
        int xx = reflect(x + dx - r, crop);
        float w = wy * s_weights[dx];
        int j = yy * crop + xx;
        acc[0] += w * ws[j];
        acc[1] += w * ws[npx + j];
        acc[2] += w * ws[2 * npx + j];
      }
    }
    store(i, make_float3(acc[0], acc[1], acc[2]));
  }
}

}  // namespace

void augment_tiles(const uint8_t* tiles, int64_t batch, int64_t tile_h, int64_t tile_w, const float* params,
                   int64_t crop, int64_t blur_kernel, float* workspace, void* teacher, int teacher_dtype,
                   float* student, AugmentNorm teacher_norm, AugmentNorm student_norm, cudaStream_t stream) {
  if (batch == 0) return;
  if (blur_kernel > kMaxBlurKernel) {
    throw std::runtime_error("augment_tiles: blur kernel " + std::to_string(blur_kernel) + " exceeds " +
                             std::to_string(kMaxBlurKernel));
  }
  dim3 grid(static_cast<unsigned>(batch)), block(kThreads);
  int c = static_cast<int>(crop), k = static_cast<int>(blur_kernel);
  switch (teacher_dtype) {
    case kAugmentF16:
      augment_kernel<Half><<<grid, block, 0, stream>>>(tiles, tile_h, tile_w, params, c, k, workspace,
                                                       static_cast<Half*>(teacher), student, teacher_norm,
                                                       student_norm);
      break;
    case kAugmentBF16:
      augment_kernel<BFloat16><<<grid, block, 0, stream>>>(tiles, tile_h, tile_w, params, c, k, workspace,
                                                           static_cast<BFloat16*>(teacher), student, teacher_norm,
                                                           student_norm);
      break;
    default:
      augment_kernel<float><<<grid, block, 0, stream>>>(tiles, tile_h, tile_w, params, c, k, workspace,
                                                        static_cast<float*>(teacher), student, teacher_norm,
                                                        student_norm);
  }
  check_launch("augment_tiles");
}

}  // namespace g2l::cuda
