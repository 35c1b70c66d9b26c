// Evaluation of frozen features on libtorch: the cosine top-k search of kNN and the robustness index, the
// logistic probe, and CKA's products (lib/eval; the js backend's twins are lib/eval/topk.ts, logistic.ts and cka.ts
// over the WebAssembly kernel, with the same results).
//
// cosine_topk: the k nearest base rows of every query row by cosine similarity. Features are L2-normalised (norms
// in float64, zero rows stay zero), the f32 products run in tiles of query_block x base_block rows on the device
// (CPU BLAS, or a CUDA GPU), so memory stays bounded (query_block x base_block f32 similarities, plus the normalised
// base on the device), and each tile's best k + 16 candidates are merged into a running list per query. The
// candidates are then rescored in float64 from the original features and sorted by similarity descending, then base
// index ascending, so order and similarities match a float64 NumPy computation, not f32 rounding. Groups (e.g. the
// slide of each row) exclude base rows in the query's own group; where a query has fewer than k allowed neighbours the
// rest of its row is index -1, similarity NaN.
//
// fit_logistic: scikit-learn's LogisticRegression objective, multinomial
//   Σ_i cross-entropy(softmax(W x_i + b), y_i) + 1/(2C) ‖W‖²   (intercept unpenalised),
// and for two classes the binomial objective with the same C (solved as the two-class softmax with C/2, the same
// problem exactly), by L-BFGS (10 pairs, strong-Wolfe line search, Hager-Zhang's approximate Wolfe near the
// optimum) in the parametrisation of centred, unit-scale features, until max |∇(objective / N)| <= gtol. The
// algorithm, constants and stopping rule are lib/eval/logistic.ts's; here the objective runs in float64 on libtorch,
// on the CPU in one fused pass over X per evaluation (row blocks converted to float64 in cache, logits and gradient
// products per block, one accumulator per thread), or on a CUDA device with X there in float64.
#pragma once

#include <cstdint>
#include <string>

#include "g2l/engine.h"

namespace g2l {

struct CosineTopKOptions {
  int64_t k = 20;
  /** Group code per query row and per base row (F64 or I64, integral); both left unset (no data): no groups. */
  HostTensor query_group;
  HostTensor base_group;
  /** "cpu", "cuda", "cuda:<i>". */
  std::string device = "cpu";
  /** Tile sizes (0: chosen so one tile's similarities stay near 128 MiB). */
  int64_t query_block = 0;
  int64_t base_block = 0;
};

struct CosineTopKResult {
  HostTensor idx;  // I64 [nq, k]
  HostTensor sim;  // F64 [nq, k]
};

/** query F32 [nq, d], base F32 [nb, d]; pass the same memory as both to search a set against itself. */
CosineTopKResult cosine_topk(const HostTensor& query, const HostTensor& base, const CosineTopKOptions& options);

struct LogisticOptions {
  /** scikit-learn's C. */
  double C = 1.0;
  double gtol = 1e-8;
  int64_t max_iter = 10000;
  std::string device = "cpu";
};

struct LogisticResult {
  HostTensor W;  // F64 [K, D]
  HostTensor b;  // F64 [K]
  int64_t iterations = 0;
  bool converged = false;
  double grad_max = 0.0;  // final max |∇(objective / N)|
  double loss = 0.0;      // final objective / N
};

/** X F32 [n, d]; y class per row (F64 or I64, integral, in [0, n_classes)). */
LogisticResult fit_logistic(const HostTensor& X, const HostTensor& y, int64_t n_classes,
                            const LogisticOptions& options);

/** Linear CKA and its debiased form (Kornblith et al. 2019; lib/eval/cka.ts linearCka): x F32 [n, dx], y F32 [n, dy].
 */
struct LinearCka {
  double linear = 0.0;
  double debiased = 0.0;
};
LinearCka linear_cka(const HostTensor& x, const HostTensor& y, const std::string& device);

/** RBF CKA with σ² the median squared distance over all n² pairs (lib/eval/cka.ts rbfCka); N x N float64 on `device`.
 */
double rbf_cka(const HostTensor& x, const HostTensor& y, const std::string& device);

}  // namespace g2l
