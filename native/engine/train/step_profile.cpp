// G2L_PROFILE: see step_profile.h.
#include "train/step_profile.h"

#include <torch/csrc/autograd/profiler_kineto.h>
#ifdef G2L_WITH_CUDA
#include <c10/cuda/CUDAFunctions.h>
#endif

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <utility>
#include <vector>

#include "g2l/engine.h"
#include "runtime/instrument.h"

namespace g2l {

namespace {

namespace kineto = torch::autograd::profiler;
namespace impl = torch::profiler::impl;

int64_t profile_step() {
  const std::string v = instrument_value("G2L_PROFILE_STEP");
  if (v.empty()) return 2;
  char* end = nullptr;
  const long long n = std::strtoll(v.c_str(), &end, 10);
  if (*end != '\0' || n < 0) throw Error("G2L_PROFILE_STEP must be a step number >= 0, got '" + v + "'");
  return n;
}

void rename_into_place(const std::string& tmp, const std::string& path) {
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) throw Error("G2L_PROFILE: could not write " + path + ": " + ec.message());
}

struct Row {
  int64_t calls = 0;
  uint64_t ns = 0;
};

}  // namespace

StepProfiler::StepProfiler(const at::Device& device, int64_t call) : cuda_(device.is_cuda()) {
  const std::string prefix = instrument_value("G2L_PROFILE");
  if (prefix.empty() || call != profile_step()) return;
  prefix_ = prefix;
  std::set<impl::ActivityType> activities{impl::ActivityType::CPU};
  if (cuda_) activities.insert(impl::ActivityType::CUDA);
  const impl::ProfilerConfig config(impl::ProfilerState::KINETO);
  kineto::prepareProfiler(config, activities);
  kineto::enableProfiler(config, activities);
  on_ = true;
}

StepProfiler::~StepProfiler() {
  if (!on_) return;
  try {
    kineto::disableProfiler();  // the step failed before finish(): stop without writing
  } catch (...) {
  }
}

void StepProfiler::finish() {
  if (!on_) return;
#ifdef G2L_WITH_CUDA
  if (cuda_) c10::cuda::device_synchronize();
#endif
  on_ = false;
  std::unique_ptr<kineto::ProfilerResult> result = kineto::disableProfiler();
  if (!result) throw Error("G2L_PROFILE: the profiler returned no result");
  const std::string trace = prefix_ + ".trace.json", table = prefix_ + ".kernels.tsv";
  std::filesystem::path dir = std::filesystem::path(trace).parent_path();
  if (!dir.empty()) std::filesystem::create_directories(dir);

  result->save(trace + ".tmp");
  rename_into_place(trace + ".tmp", trace);

  std::map<std::pair<std::string, std::string>, Row> rows;
  std::map<std::string, uint64_t> device_total;
  for (const auto& e : result->events()) {
    const std::string device = e.deviceType() == c10::DeviceType::CUDA ? "cuda" : "cpu";
    Row& r = rows[{device, e.name()}];
    r.calls += 1;
    r.ns += e.durationNs();
    device_total[device] += e.durationNs();
  }
  std::vector<std::pair<std::pair<std::string, std::string>, Row>> sorted(rows.begin(), rows.end());
  std::stable_sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) {
    if (a.first.first != b.first.first) return a.first.first > b.first.first;  // cuda before cpu
    return a.second.ns > b.second.ns;
  });
  {
    std::ofstream out(table + ".tmp", std::ios::trunc);
    out << "device\tname\tcalls\ttotal_ms\tmean_us\tshare\n";
    for (const auto& [key, r] : sorted) {
      const uint64_t total = device_total[key.first];
      std::string name = key.second;
      std::replace(name.begin(), name.end(), '\t', ' ');
      std::replace(name.begin(), name.end(), '\n', ' ');
      char buf[128];
      std::snprintf(buf, sizeof buf, "\t%lld\t%.4f\t%.2f\t%.4f\n", static_cast<long long>(r.calls), r.ns / 1e6,
                    r.ns / 1e3 / static_cast<double>(r.calls), total ? static_cast<double>(r.ns) / total : 0.0);
      out << key.first << '\t' << name << buf;
    }
    out.close();
    if (!out) throw Error("G2L_PROFILE: could not write " + table + ": check free space and permissions");
  }
  rename_into_place(table + ".tmp", table);
}

}  // namespace g2l
