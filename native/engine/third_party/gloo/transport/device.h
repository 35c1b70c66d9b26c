// Declarations only, for c10d's ProcessGroupGloo.hpp (see ../README.md): it holds these through smart pointers.
#pragma once

namespace gloo {
namespace transport {

class Device;
class UnboundBuffer;

}  // namespace transport
}  // namespace gloo
