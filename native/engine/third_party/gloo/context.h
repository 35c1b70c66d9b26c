// Declarations only, for c10d's ProcessGroupGloo.hpp (see README.md beside this file). The real gloo::Context is
// compiled into libtorch_cpu; the engine never constructs or calls one.
#pragma once

#include <chrono>

namespace gloo {

class Context {
 public:
  // Named by ProcessGroupGloo::setTimeout (inline in the header, never called by the engine).
  void setTimeout(std::chrono::milliseconds timeout);
};

}  // namespace gloo
