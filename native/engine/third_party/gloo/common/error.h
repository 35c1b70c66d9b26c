// Declarations only, for c10d's ProcessGroupGloo.hpp (see ../README.md): it includes this header but uses nothing
// from it.
#pragma once
