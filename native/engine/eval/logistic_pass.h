// One pass of the multinomial logistic objective over float32 rows, in float64 (the CPU path of fit_logistic,
// eval_ops.cpp): loss, gradient of W and of b, accumulated for rows [r0, r1).
#pragma once

#include <cstdint>

namespace g2l {

/**
 * X: float32 (n, d) row-major; y: class of each row; W: float64 (K8, d), the K classes' rows then zero rows up to K8,
 * a multiple of 8; b: float64 (K). Adds to G (K8, d) the sum over rows of (softmax(z) - onehot(y)) x, to gb (K) its
 * sum, and returns the sum of the rows' losses (logsumexp(z) - z[y]), z = W x + b. Every product in float64; each
 * float32 value is widened once per use, never stored in float64 (the pass reads X once and keeps G in cache).
 */
double logistic_pass(const float* X, const int64_t* y, int64_t r0, int64_t r1, int64_t d, int64_t K, int64_t K8,
                     const double* W, const double* b, double* G, double* gb);

}  // namespace g2l
