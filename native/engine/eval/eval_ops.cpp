// Evaluation on libtorch: cosine top-k in tiles and the logistic probe in float64 (g2l/eval.h).
#include "g2l/eval.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <deque>
#include <limits>
#include <numeric>
#include <vector>

#include "eval/logistic_pass.h"
#include "runtime/parallel.h"
#include "runtime/tensor_bridge.h"

namespace g2l {

namespace {

constexpr int64_t kF32Margin = 16;                  // f32 candidates kept beyond k, rescored in float64
constexpr int64_t kTileBytes = int64_t{128} << 20;  // one tile's f32 similarities

at::Tensor matrix_f32(const HostTensor& t, const char* what) {
  if (t.dtype != DType::F32 || t.shape.size() != 2) {
    throw Error(std::string(what) + " must be a float32 (rows, features) matrix");
  }
  return view_as_aten(t);
}

/** Integral codes (F64 or I64) as an int64 tensor of `n` entries. */
at::Tensor codes_i64(const HostTensor& t, int64_t n, const char* what) {
  if ((t.dtype != DType::F64 && t.dtype != DType::I64) || t.numel() != n) {
    throw Error(std::string(what) + " must hold one integer per row (" + std::to_string(n) + "), as float64 or int64");
  }
  at::Tensor v = view_as_aten(t).reshape({n});
  if (t.dtype == DType::F64) {
    if (!at::equal(v, v.round())) throw Error(std::string(what) + " must hold integers");
    v = v.to(at::kLong);
  }
  return v.contiguous();
}

/** float64 L2 norms of the rows (sequential sums, as lib/eval/topk.ts rowNorms). */
std::vector<double> row_norms(const float* x, int64_t n, int64_t d) {
  std::vector<double> out(n);
  parallel_chunks(0, n, 256, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const float* r = x + i * d;
      double s = 0;
      for (int64_t j = 0; j < d; ++j) s += static_cast<double>(r[j]) * r[j];
      out[i] = std::sqrt(s);
    }
  });
  return out;
}

/** Rows scaled by 1/norm in float64, rounded to f32 (zero rows stay zero). */
at::Tensor normalised(const float* x, const std::vector<double>& norms, int64_t n, int64_t d) {
  at::Tensor out = at::empty({n, d}, at::kFloat);
  float* o = out.data_ptr<float>();
  parallel_chunks(0, n, 256, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const double inv = norms[i] > 0 ? 1.0 / norms[i] : 0.0;
      for (int64_t j = 0; j < d; ++j) o[i * d + j] = static_cast<float>(x[i * d + j] * inv);
    }
  });
  return out;
}

double dot64(const float* a, const float* b, int64_t d) {
  double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  int64_t j = 0;
  for (; j + 4 <= d; j += 4) {
    s0 += static_cast<double>(a[j]) * b[j];
    s1 += static_cast<double>(a[j + 1]) * b[j + 1];
    s2 += static_cast<double>(a[j + 2]) * b[j + 2];
    s3 += static_cast<double>(a[j + 3]) * b[j + 3];
  }
  for (; j < d; ++j) s0 += static_cast<double>(a[j]) * b[j];
  return (s0 + s1) + (s2 + s3);
}

}  // namespace

CosineTopKResult cosine_topk(const HostTensor& query, const HostTensor& base, const CosineTopKOptions& o) {
  return with_torch_errors([&] {
    at::NoGradGuard no_grad;
    at::Tensor Q = matrix_f32(query, "query"), B = matrix_f32(base, "base");
    const int64_t nq = Q.size(0), nb = B.size(0), d = Q.size(1);
    if (B.size(1) != d)
      throw Error("query and base have different feature counts (" + std::to_string(d) + " and " +
                  std::to_string(B.size(1)) + ")");
    if (o.k < 1) throw Error("k must be at least 1, got " + std::to_string(o.k));
    if (nb < 1) throw Error("the base has no rows");
    const bool grouped = o.query_group.data != nullptr || o.base_group.data != nullptr;
    at::Tensor qg, bg;
    if (grouped) {
      qg = codes_i64(o.query_group, nq, "queryGroup");
      bg = codes_i64(o.base_group, nb, "baseGroup");
    }
    const at::Device dev = parse_device(o.device);
    const bool self = query.data == base.data && nq == nb;
    const float* qx = Q.data_ptr<float>();
    const float* bx = B.data_ptr<float>();
    const std::vector<double> bnorm = row_norms(bx, nb, d);
    const std::vector<double> qnorm = self ? bnorm : row_norms(qx, nq, d);
    at::Tensor Bn = normalised(bx, bnorm, nb, d).to(dev);
    at::Tensor Qn = self ? Bn : normalised(qx, qnorm, nq, d);
    if (grouped) bg = bg.to(dev);

    const int64_t kk = std::min(o.k + kF32Margin, nb);
    int64_t qb = o.query_block > 0 ? o.query_block : 1024;
    int64_t bb = o.base_block > 0 ? o.base_block : std::max<int64_t>(kk, kTileBytes / (4 * qb));
    qb = std::min(qb, nq);
    bb = std::min(bb, nb);
    at::Tensor cand_v = at::empty({nq, kk}, at::kFloat), cand_i = at::empty({nq, kk}, at::kLong);
    at::Tensor sbuf = at::empty({qb * bb}, Bn.options());
    const float ninf = -std::numeric_limits<float>::infinity();
    for (int64_t q0 = 0; q0 < nq; q0 += qb) {
      const int64_t rows = std::min(qb, nq - q0);
      at::Tensor Qt = Qn.narrow(0, q0, rows).to(dev);
      at::Tensor qgt = grouped ? qg.narrow(0, q0, rows).to(dev).unsqueeze(1) : at::Tensor();
      at::Tensor run_v, run_i;
      for (int64_t b0 = 0; b0 < nb; b0 += bb) {
        const int64_t cols = std::min(bb, nb - b0);
        at::Tensor S = sbuf.narrow(0, 0, rows * cols).view({rows, cols});
        at::mm_out(S, Qt, Bn.narrow(0, b0, cols).t());
        if (grouped) S.masked_fill_(qgt == bg.narrow(0, b0, cols).unsqueeze(0), ninf);
        auto [v, i] = S.topk(std::min(kk, cols), 1, /*largest=*/true, /*sorted=*/false);
        i.add_(b0);
        if (run_v.defined()) {
          v = at::cat({run_v, v}, 1);
          i = at::cat({run_i, i}, 1);
          if (v.size(1) > kk) {
            auto [v2, sel] = v.topk(kk, 1, true, false);
            i = i.gather(1, sel);
            v = v2;
          }
        }
        run_v = v;
        run_i = i;
      }
      const int64_t got = run_v.size(1);
      cand_v.narrow(0, q0, rows).narrow(1, 0, got).copy_(run_v);
      cand_i.narrow(0, q0, rows).narrow(1, 0, got).copy_(run_i);
      if (got < kk) cand_v.narrow(0, q0, rows).narrow(1, got, kk - got).fill_(ninf);
    }

    // Float64 rescoring of the candidates from the original features; sort by similarity, then index.
    const int64_t k = o.k;
    at::Tensor idx = at::full({nq, k}, -1, at::kLong);
    at::Tensor sim = at::full({nq, k}, std::numeric_limits<double>::quiet_NaN(), at::kDouble);
    const float* cv = cand_v.data_ptr<float>();
    const int64_t* ci = cand_i.data_ptr<int64_t>();
    int64_t* oi = idx.data_ptr<int64_t>();
    double* os = sim.data_ptr<double>();
    parallel_chunks(0, nq, 64, [&](int64_t i0, int64_t i1) {
      std::vector<std::pair<double, int64_t>> r;
      r.reserve(kk);
      for (int64_t i = i0; i < i1; ++i) {
        r.clear();
        for (int64_t t = 0; t < kk; ++t) {
          if (!(cv[i * kk + t] > ninf)) continue;  // excluded (own group) or not filled
          const int64_t j = ci[i * kk + t];
          const double den = qnorm[i] * bnorm[j];
          r.emplace_back(den > 0 ? dot64(qx + i * d, bx + j * d, d) / den : 0.0, j);
        }
        std::sort(r.begin(), r.end(), [](const auto& a, const auto& b) {
          return a.first != b.first ? a.first > b.first : a.second < b.second;
        });
        const int64_t m = std::min<int64_t>(k, static_cast<int64_t>(r.size()));
        for (int64_t t = 0; t < m; ++t) {
          oi[i * k + t] = r[t].second;
          os[i * k + t] = r[t].first;
        }
      }
    });
    return CosineTopKResult{to_host(idx), to_host(sim)};
  });
}

namespace {

using Vec = std::vector<double>;

double dot(const Vec& a, const Vec& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

/** Minimiser of a cubic through (a, fa, da) and (b, fb, db), safeguarded into the interval; bisection otherwise. */
double cubic_min(double a, double fa, double da, double b, double fb, double db) {
  const double d1 = da + db - 3 * (fa - fb) / (a - b);
  const double disc = d1 * d1 - da * db;
  const double lo = std::min(a, b), hi = std::max(a, b);
  if (disc >= 0) {
    const double sgn = (b - a) > 0 ? 1.0 : ((b - a) < 0 ? -1.0 : 0.0);
    const double d2 = sgn * std::sqrt(disc);
    const double t = b - (b - a) * ((db + d2 - d1) / (db - da + 2 * d2));
    const double margin = 0.1 * (hi - lo);
    if (std::isfinite(t) && t > lo + margin && t < hi - margin) return t;
  }
  return (a + b) / 2;
}

struct LbfgsResult {
  double f;
  double gmax;
  int64_t iterations;
  bool converged;
};

struct Point {
  double a, f, d;
};

/** lib/eval/logistic.ts lbfgs, step for step. */
template <typename FG, typename Measure>
LbfgsResult lbfgs(FG&& fg, Vec& x, double gtol, int64_t max_iter, Measure&& measure, size_t m = 10) {
  const size_t n = x.size();
  Vec g(n);
  double f = fg(x, g);
  std::deque<Vec> S, Y;
  std::deque<double> rho;
  Vec p(n), xNew(n), gNew(n);
  std::vector<double> alphaH(m);
  const double c1 = 1e-4, c2 = 0.9;
  int64_t it = 0;
  double gmax = measure(g);
  while (gmax > gtol && it < max_iter) {
    for (size_t i = 0; i < n; ++i) p[i] = -g[i];
    for (int64_t h = static_cast<int64_t>(S.size()) - 1; h >= 0; --h) {
      const double a = rho[h] * dot(S[h], p);
      alphaH[h] = a;
      const Vec& yh = Y[h];
      for (size_t i = 0; i < n; ++i) p[i] -= a * yh[i];
    }
    if (!S.empty()) {
      const size_t last = S.size() - 1;
      const double gamma = dot(S[last], Y[last]) / dot(Y[last], Y[last]);
      for (size_t i = 0; i < n; ++i) p[i] *= gamma;
    }
    for (size_t h = 0; h < S.size(); ++h) {
      const double beta = rho[h] * dot(Y[h], p);
      const Vec& sh = S[h];
      for (size_t i = 0; i < n; ++i) p[i] += (alphaH[h] - beta) * sh[i];
    }
    double dphi0 = dot(g, p);
    if (!(dphi0 < 0)) {
      S.clear();
      Y.clear();
      rho.clear();
      for (size_t i = 0; i < n; ++i) p[i] = -g[i];
      dphi0 = dot(g, p);
    }
    const double f0 = f;
    const double epsF = 1e-12 * std::abs(f0);
    auto evalAt = [&](double alpha) {
      for (size_t i = 0; i < n; ++i) xNew[i] = x[i] + alpha * p[i];
      const double fa = fg(xNew, gNew);
      return Point{alpha, fa, dot(gNew, p)};
    };
    auto armijo = [&](const Point& s) {
      return s.f <= f0 + c1 * s.a * dphi0 || (s.f <= f0 + epsF && s.d <= (2 * c1 - 1) * dphi0);
    };
    auto curvature = [&](const Point& s) { return std::abs(s.d) <= -c2 * dphi0; };
    double alpha = S.empty() ? std::min(1.0, 1 / std::sqrt(dot(g, g))) : 1.0;
    Point prev{0, f0, dphi0};
    bool ok = false;
    Point accepted{};
    auto zoom = [&](Point lo, Point hi, Point& out) -> bool {
      for (int z = 0; z < 40; ++z) {
        const Point s = evalAt(cubic_min(lo.a, lo.f, lo.d, hi.a, hi.f, hi.d));
        if (!armijo(s) || s.f >= lo.f) {
          hi = s;
        } else {
          if (curvature(s)) {
            out = s;
            return true;
          }
          if (s.d * (hi.a - lo.a) >= 0) hi = lo;
          lo = s;
        }
        if (std::abs(hi.a - lo.a) < 1e-16 * std::max(1.0, lo.a)) break;
      }
      if (lo.a > 0) {
        out = evalAt(lo.a);
        return true;
      }
      return false;
    };
    for (int ls = 0; ls < 40; ++ls) {
      const Point s = evalAt(alpha);
      if (!armijo(s) || (ls > 0 && s.f >= prev.f)) {
        ok = zoom(prev, s, accepted);
        break;
      }
      if (curvature(s)) {
        accepted = s;
        ok = true;
        break;
      }
      if (s.d >= 0) {
        ok = zoom(s, prev, accepted);
        break;
      }
      prev = s;
      alpha *= 2;
    }
    if (!ok) break;  // no step decreases the objective: as converged as float64 allows
    Vec sVec(n), yVec(n);
    for (size_t i = 0; i < n; ++i) {
      sVec[i] = xNew[i] - x[i];
      yVec[i] = gNew[i] - g[i];
    }
    const double sy = dot(sVec, yVec);
    x = xNew;
    g = gNew;
    f = accepted.f;
    if (sy > 1e-300) {
      if (S.size() == m) {
        S.pop_front();
        Y.pop_front();
        rho.pop_front();
      }
      S.push_back(std::move(sVec));
      Y.push_back(std::move(yVec));
      rho.push_back(1 / sy);
    }
    ++it;
    gmax = measure(g);
  }
  return LbfgsResult{f, gmax, it, gmax <= gtol};
}

// The CPU pass is eval/logistic_pass.cpp (each float32 row read from cache per use, float64 arithmetic, vectors over
// the features). Measured on the probe of benchmarks/eval.mjs (8 classes, 1536 features, 2 threads): half the CPU time
// per iteration of the pass it replaced (40k rows: 0.088 against 0.178 CPU-seconds per iteration, same iterations
// and objective to 15 digits), which converted row blocks of X to float64 and called addmm twice (80k rows: 20.7 s
// at 256 rows a block, 13.7 at 2048). Also measured and not kept: a float64 copy of X held for the whole fit (17 s:
// twice the bytes streamed), a hand-written pass with vector lanes over the classes (14.6 s: one conversion and
// broadcast per value).
constexpr int64_t kRowsPerTask = 2048;

/** Objective / N and its gradient at theta = [W (K*D), b (K)] in the original parametrisation. */
class LogisticObjective {
 public:
  LogisticObjective(at::Tensor X32, at::Tensor y, int64_t K, double C, at::Device dev)
      : X32_(std::move(X32)), y_(std::move(y)), n_(X32_.size(0)), d_(X32_.size(1)), K_(K), C_(C), dev_(dev) {
    if (!dev_.is_cpu()) {
      X64_ = X32_.to(dev_, at::kDouble);
      yd_ = y_.to(dev_).unsqueeze(1);
    }
  }

  double operator()(const Vec& theta, Vec& grad) {
    const int64_t K = K_, d = d_, n = n_;
    at::Tensor th = at::from_blob(const_cast<double*>(theta.data()), {K * d + K}, at::kDouble);
    at::Tensor W = th.narrow(0, 0, K * d).view({K, d}), b = th.narrow(0, K * d, K);
    at::Tensor G, gb;
    double loss = 0;
    if (dev_.is_cpu()) {
      // W padded with zero rows to whole groups of 8 classes; one G per task, summed after.
      const int64_t K8 = (K + 7) / 8 * 8;
      at::Tensor Wp = at::zeros({K8, d}, at::kDouble);
      Wp.narrow(0, 0, K).copy_(W);
      const int64_t tasks =
          std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), (n + kRowsPerTask - 1) / kRowsPerTask));
      at::Tensor accG = at::zeros({tasks, K8, d}, at::kDouble), accB = at::zeros({tasks, K}, at::kDouble);
      std::vector<double> accL(tasks, 0.0);
      const float* X = X32_.data_ptr<float>();
      const int64_t* yp = y_.data_ptr<int64_t>();
      const double* Wpp = Wp.data_ptr<double>();
      const double* bp = b.data_ptr<double>();
      parallel_chunks(0, tasks, 1, [&](int64_t t0, int64_t t1) {
        for (int64_t t = t0; t < t1; ++t) {
          accL[t] = logistic_pass(X, yp, t * n / tasks, (t + 1) * n / tasks, d, K, K8, Wpp, bp,
                                  accG[t].data_ptr<double>(), accB[t].data_ptr<double>());
        }
      });
      G = accG.sum(0).narrow(0, 0, K);
      gb = accB.sum(0);
      for (double l : accL) loss += l;
    } else {
      at::Tensor Wd = W.to(dev_), bd = b.to(dev_);
      at::Tensor Z = at::addmm(bd, X64_, Wd.t());
      at::Tensor lse = Z.logsumexp(1, true);
      loss = (lse - Z.gather(1, yd_)).sum().item<double>();
      at::Tensor R = Z.sub_(lse).exp_();
      R.scatter_add_(1, yd_, at::full({n, 1}, -1.0, R.options()));
      G = at::mm(R.t(), X64_).cpu();
      gb = R.sum(0).cpu();
    }
    G = G.contiguous();
    gb = gb.contiguous();
    const double* gp = G.data_ptr<double>();
    const double* gbp = gb.data_ptr<double>();
    double pen = 0;
    for (int64_t t = 0; t < K * d; ++t) {
      pen += theta[t] * theta[t];
      grad[t] = gp[t] / n + theta[t] / (C_ * n);
    }
    for (int64_t c = 0; c < K; ++c) grad[K * d + c] = gbp[c] / n;
    return loss / n + pen / (2 * C_ * n);
  }

 private:
  at::Tensor X32_, y_, X64_, yd_;
  int64_t n_, d_, K_;
  double C_;
  at::Device dev_;
};

}  // namespace

LogisticResult fit_logistic(const HostTensor& Xh, const HostTensor& yh, int64_t n_classes, const LogisticOptions& o) {
  return with_torch_errors([&] {
    at::NoGradGuard no_grad;
    at::Tensor X = matrix_f32(Xh, "X");
    const int64_t n = X.size(0), d = X.size(1), K = n_classes;
    if (n < 1) throw Error("the linear probe needs at least one training row");
    if (K < 2) throw Error("the linear probe needs at least two classes, got " + std::to_string(K));
    if (!(o.C > 0)) throw Error("C must be positive, got " + std::to_string(o.C));
    at::Tensor y = codes_i64(yh, n, "labels");
    if (y.min().item<int64_t>() < 0 || y.max().item<int64_t>() >= K) {
      throw Error("labels must lie in [0, " + std::to_string(K) + ")");
    }
    const double C = K == 2 ? o.C / 2 : o.C;  // binary: the binomial model with o.C (see g2l/eval.h)
    LogisticObjective fg(X, y, K, C, parse_device(o.device));

    // Column means and the overall standard deviation, in float64 over row blocks.
    Vec mu(d, 0.0);
    {
      at::Tensor s = at::zeros({d}, at::kDouble);
      for (int64_t r0 = 0; r0 < n; r0 += 4096)
        s.add_(X.narrow(0, r0, std::min<int64_t>(4096, n - r0)).to(at::kDouble).sum(0));
      for (int64_t j = 0; j < d; ++j) mu[j] = s[j].item<double>() / n;
    }
    double ss = 0;
    {
      at::Tensor m = at::from_blob(mu.data(), {1, d}, at::kDouble);
      for (int64_t r0 = 0; r0 < n; r0 += 4096) {
        ss += (X.narrow(0, r0, std::min<int64_t>(4096, n - r0)).to(at::kDouble) - m).square().sum().item<double>();
      }
    }
    double scale = std::sqrt(ss / (static_cast<double>(n) * d));
    if (scale == 0 || std::isnan(scale)) scale = 1;  // as `|| 1` in logistic.ts
    const int64_t bOff = K * d;
    auto toOriginal = [&](const Vec& tp, Vec& out) {
      for (int64_t c = 0; c < K; ++c) {
        double shift = 0;
        for (int64_t j = 0; j < d; ++j) {
          const double w = tp[c * d + j] / scale;
          out[c * d + j] = w;
          shift += w * mu[j];
        }
        out[bOff + c] = tp[bOff + c] - shift;
      }
    };
    Vec thetaOrig(K * d + K), gradOrig(K * d + K);
    auto fgPrime = [&](const Vec& tp, Vec& gp) {
      toOriginal(tp, thetaOrig);
      const double f = fg(thetaOrig, gradOrig);
      for (int64_t c = 0; c < K; ++c) {
        const double gbv = gradOrig[bOff + c];
        for (int64_t j = 0; j < d; ++j) gp[c * d + j] = (gradOrig[c * d + j] - gbv * mu[j]) / scale;
        gp[bOff + c] = gbv;
      }
      return f;
    };
    auto originalGradMax = [&](const Vec& gp) {
      double m = 0;
      for (int64_t c = 0; c < K; ++c) {
        const double gbv = gp[bOff + c];
        m = std::max(m, std::abs(gbv));
        for (int64_t j = 0; j < d; ++j) m = std::max(m, std::abs(scale * gp[c * d + j] + gbv * mu[j]));
      }
      return m;
    };
    Vec theta(K * d + K, 0.0);
    const LbfgsResult res = lbfgs(fgPrime, theta, o.gtol, o.max_iter, originalGradMax);
    toOriginal(theta, thetaOrig);
    at::Tensor Wt = at::from_blob(thetaOrig.data(), {K, d}, at::kDouble).clone();
    at::Tensor bt = at::from_blob(thetaOrig.data() + bOff, {K}, at::kDouble).clone();
    LogisticResult out;
    out.W = to_host(Wt);
    out.b = to_host(bt);
    out.iterations = res.iterations;
    out.converged = res.converged;
    out.grad_max = res.gmax;
    out.loss = res.f;
    return out;
  });
}

LinearCka linear_cka(const HostTensor& xh, const HostTensor& yh, const std::string& device) {
  return with_torch_errors([&] {
    at::NoGradGuard no_grad;
    at::Tensor X = matrix_f32(xh, "x"), Y = matrix_f32(yh, "y");
    const int64_t n = X.size(0);
    if (Y.size(0) != n)
      throw Error("x and y must have the same rows (" + std::to_string(n) + " and " + std::to_string(Y.size(0)) + ")");
    const at::Device dev = parse_device(device);
    const int64_t dx = X.size(1), dy = Y.size(1), blk = 4096;
    auto f64 = at::TensorOptions().dtype(at::kDouble).device(dev);
    auto block = [&](const at::Tensor& t, int64_t r0) {
      return t.narrow(0, r0, std::min(blk, n - r0)).to(dev, at::kDouble);
    };
    at::Tensor mx = at::zeros({dx}, f64), my = at::zeros({dy}, f64);
    for (int64_t r0 = 0; r0 < n; r0 += blk) {
      mx.add_(block(X, r0).sum(0));
      my.add_(block(Y, r0).sum(0));
    }
    mx.div_(n);
    my.div_(n);
    at::Tensor gxx = at::zeros({dx, dx}, f64), gyy = at::zeros({dy, dy}, f64), gxy = at::zeros({dx, dy}, f64);
    at::Tensor sq = at::zeros({5}, f64);  // Σ rx, Σ ry, Σ rx ry, Σ rx², Σ ry² over the centred rows' squared norms
    for (int64_t r0 = 0; r0 < n; r0 += blk) {
      at::Tensor xc = block(X, r0).sub_(mx), yc = block(Y, r0).sub_(my);
      gxx.addmm_(xc.t(), xc);
      gyy.addmm_(yc.t(), yc);
      gxy.addmm_(xc.t(), yc);
      at::Tensor rx = xc.square().sum(1), ry = yc.square().sum(1);
      sq.add_(at::stack({rx.sum(), ry.sum(), (rx * ry).sum(), rx.square().sum(), ry.square().sum()}));
    }
    const double xty = gxy.square().sum().item<double>(), xtx = gxx.square().sum().item<double>(),
                 yty = gyy.square().sum().item<double>();
    at::Tensor s = sq.cpu();
    const double sx = s[0].item<double>(), sy = s[1].item<double>(), rxy = s[2].item<double>(),
                 rxx = s[3].item<double>(), ryy = s[4].item<double>();
    const double nn = static_cast<double>(n);
    auto unbiased = [&](double dot_sim, double row_dot, double nx, double ny) {
      return dot_sim - (nn / (nn - 2)) * row_dot + (nx * ny) / ((nn - 1) * (nn - 2));
    };
    LinearCka out;
    out.linear = xty / (std::sqrt(xtx) * std::sqrt(yty));
    out.debiased =
        unbiased(xty, rxy, sx, sy) / (std::sqrt(unbiased(xtx, rxx, sx, sx)) * std::sqrt(unbiased(yty, ryy, sy, sy)));
    return out;
  });
}

namespace {

/** Centred RBF Gram matrix of x's rows, σ² the median of all n² squared distances (diagonal zeros included). */
at::Tensor centred_rbf(const at::Tensor& x32, const at::Device& dev) {
  const int64_t n = x32.size(0);
  at::Tensor x = x32.to(dev, at::kDouble);
  at::Tensor g = at::mm(x, x.t());
  at::Tensor diag = g.diagonal().clone();
  at::Tensor d2 = (diag.unsqueeze(1) + diag.unsqueeze(0)).sub_(g.mul_(2));
  d2.fill_diagonal_(0);
  // NumPy's median of the n² entries: the mean of the middle two when n² is even.
  at::Tensor flat = d2.reshape({-1});
  const int64_t total = n * n;
  double sigma2;
  if (total % 2 == 1) {
    sigma2 = std::get<0>(flat.kthvalue((total + 1) / 2)).item<double>();
  } else {
    sigma2 = (std::get<0>(flat.kthvalue(total / 2)).item<double>() +
              std::get<0>(flat.kthvalue(total / 2 + 1)).item<double>()) /
             2;
  }
  at::Tensor K = d2.div_(-2 * sigma2).exp_();
  at::Tensor row = K.mean(1);
  at::Tensor all = K.mean();
  return K.add_(all).sub_(row.unsqueeze(1)).sub_(row.unsqueeze(0));
}

}  // namespace

double rbf_cka(const HostTensor& xh, const HostTensor& yh, const std::string& device) {
  return with_torch_errors([&] {
    at::NoGradGuard no_grad;
    at::Tensor X = matrix_f32(xh, "x"), Y = matrix_f32(yh, "y");
    if (Y.size(0) != X.size(0)) throw Error("x and y must have the same rows");
    const at::Device dev = parse_device(device);
    at::Tensor kx = centred_rbf(X, dev), ky = centred_rbf(Y, dev);
    const double xy = (kx * ky).sum().item<double>(), xx = kx.square().sum().item<double>(),
                 yy = ky.square().sum().item<double>();
    return xy / (std::sqrt(xx) * std::sqrt(yy));
  });
}

}  // namespace g2l
