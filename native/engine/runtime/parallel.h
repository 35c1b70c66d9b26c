// Splitting a range of independent work over the intra-op threads, for the engine's own loops.
//
// Not at::parallel_for: with libtorch's OpenMP build its body is a header template around `#pragma omp parallel`,
// and the engine is compiled without -fopenmp (libtorch brings its own libgomp; a second OpenMP runtime, or code
// compiled against another libgomp's ABI, is worse), so there it runs every chunk on the calling thread. Measured on
// the logistic probe (benchmarks/eval.mjs): one busy core instead of two.
#pragma once

#include <ATen/Parallel.h>
#include <c10/util/ParallelGuard.h>

#include <algorithm>
#include <cstdint>
#include <exception>
#include <thread>
#include <vector>

namespace g2l {

/**
 * Calls f(chunk_begin, chunk_end) over [begin, end) in at most at::get_num_threads() chunks of at least `grain`
 * items, one thread each (the caller runs the first chunk), and returns when all are done; the first exception
 * thrown is rethrown. Inside a chunk libtorch's ops run single-threaded, as inside at::parallel_for.
 */
template <class F>
void parallel_chunks(int64_t begin, int64_t end, int64_t grain, const F& f) {
  if (begin >= end) return;
  const int64_t items = end - begin;
  const int64_t chunks =
      std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), items / std::max<int64_t>(1, grain)));
  std::vector<std::exception_ptr> errors(chunks);
  auto run = [&](int64_t c) {
    c10::ParallelGuard guard(true);
    try {
      f(begin + c * items / chunks, begin + (c + 1) * items / chunks);
    } catch (...) {
      errors[c] = std::current_exception();
    }
  };
  std::vector<std::thread> threads;
  threads.reserve(chunks - 1);
  for (int64_t c = 1; c < chunks; ++c) threads.emplace_back(run, c);
  run(0);
  for (std::thread& t : threads) t.join();
  for (const std::exception_ptr& e : errors) {
    if (e) std::rethrow_exception(e);
  }
}

}  // namespace g2l
