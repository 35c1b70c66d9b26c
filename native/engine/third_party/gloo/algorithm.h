// Declarations only, for c10d's ProcessGroupGloo.hpp (see README.md beside this file): it includes this header but
// uses nothing from it.
#pragma once
#include "gloo/context.h"
