// The logistic probe's CPU pass (logistic_pass.h), written by hand because no library call does it without
// materialising a float64 copy of X: libtorch's products need both operands in one dtype, and with a handful of
// classes both products are thin (K columns), so the pass is bound by memory traffic, not by arithmetic. Converting
// a block of X to float64 and calling addmm twice streams X three times over at twice its width; this pass reads
// each float32 row once per use from cache and keeps the gradient block in registers across a block of rows
// (benchmarks/eval.mjs measures it against the js backend).
//
// Vector code through GCC/Clang vector extensions (8 doubles per vector), compiled for AVX-512, AVX2 and the baseline
// by target_clones where the compiler supports it on x86-64; elsewhere the same code for the baseline target.
#include "eval/logistic_pass.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

namespace g2l {

namespace {

typedef double V8d __attribute__((vector_size(64)));
typedef float V8f __attribute__((vector_size(32)));

constexpr int64_t kClassGroup = 8;  // classes per group of accumulators (W padded to a multiple)
constexpr int64_t kRows = 16;       // rows per block: the gradient block stays in registers across them

[[gnu::always_inline]] inline V8d load8(const float* p) {
  V8f f;
  std::memcpy(&f, p, sizeof f);
  return __builtin_convertvector(f, V8d);
}

[[gnu::always_inline]] inline V8d load8(const double* p) {
  V8d v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

[[gnu::always_inline]] inline void store8(double* p, V8d v) { std::memcpy(p, &v, sizeof v); }

[[gnu::always_inline]] inline double hsum(V8d v) {
  return ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7]));
}

// z[c] = W[k0 + c] . x for the 8 classes of a group (d8: d rounded down to a multiple of 8; the tail in scalars).
[[gnu::always_inline]] inline void dot_group(const float* x, const double* W, int64_t d, int64_t d8, double* z) {
  V8d acc[kClassGroup] = {};
  for (int64_t j = 0; j < d8; j += 8) {
    const V8d xv = load8(x + j);
    for (int64_t c = 0; c < kClassGroup; ++c) acc[c] += xv * load8(W + c * d + j);
  }
  for (int64_t c = 0; c < kClassGroup; ++c) {
    double s = hsum(acc[c]);
    for (int64_t j = d8; j < d; ++j) s += static_cast<double>(x[j]) * W[c * d + j];
    z[c] = s;
  }
}

// G[k0 + c] += sum over the block's rows of r[row][c] x[row] for the 8 classes of a group.
[[gnu::always_inline]] inline void grad_group(const float* X, int64_t rows, const double* r, int64_t K8, double* G,
                                              int64_t d, int64_t d8) {
  for (int64_t j = 0; j < d8; j += 8) {
    V8d g[kClassGroup];
    for (int64_t c = 0; c < kClassGroup; ++c) g[c] = load8(G + c * d + j);
    for (int64_t i = 0; i < rows; ++i) {
      const V8d xv = load8(X + i * d + j);
      const double* ri = r + i * K8;
      for (int64_t c = 0; c < kClassGroup; ++c) g[c] += ri[c] * xv;
    }
    for (int64_t c = 0; c < kClassGroup; ++c) store8(G + c * d + j, g[c]);
  }
  for (int64_t j = d8; j < d; ++j) {
    for (int64_t i = 0; i < rows; ++i) {
      const double xj = X[i * d + j];
      for (int64_t c = 0; c < kClassGroup; ++c) G[c * d + j] += r[i * K8 + c] * xj;
    }
  }
}

}  // namespace

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define G2L_PASS_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define G2L_PASS_CLONES
#endif

G2L_PASS_CLONES
double logistic_pass(const float* X, const int64_t* y, int64_t r0, int64_t r1, int64_t d, int64_t K, int64_t K8,
                     const double* W, const double* b, double* G, double* gb) {
  const int64_t d8 = d - d % 8;
  double loss = 0;
  std::vector<double> rbuf(kRows * K8), zbuf(K8);  // r[row][class] of a block (softmax - onehot), z of a row
  double* r = rbuf.data();
  double* z = zbuf.data();
  for (int64_t i0 = r0; i0 < r1; i0 += kRows) {
    const int64_t rows = std::min(kRows, r1 - i0);
    for (int64_t i = 0; i < rows; ++i) {
      const float* x = X + (i0 + i) * d;
      for (int64_t k0 = 0; k0 < K8; k0 += kClassGroup) dot_group(x, W + k0 * d, d, d8, z + k0);
      double m = -std::numeric_limits<double>::infinity();
      for (int64_t c = 0; c < K; ++c) m = std::max(m, z[c] += b[c]);
      double s = 0;
      for (int64_t c = 0; c < K; ++c) s += std::exp(z[c] - m);
      const double lse = m + std::log(s);
      const int64_t yi = y[i0 + i];
      loss += lse - z[yi];
      double* ri = r + i * K8;
      for (int64_t c = 0; c < K; ++c) {
        ri[c] = std::exp(z[c] - lse) - (c == yi ? 1.0 : 0.0);
        gb[c] += ri[c];
      }
      for (int64_t c = K; c < K8; ++c) ri[c] = 0;
    }
    for (int64_t k0 = 0; k0 < K8; k0 += kClassGroup) grad_group(X + i0 * d, rows, r + k0, K8, G + k0 * d, d, d8);
  }
  return loss;
}

}  // namespace g2l
