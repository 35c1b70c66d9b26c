// Precompiled header of the engine's translation units: libtorch's headers are heavy, so they are parsed once.
#pragma once
#include <ATen/ATen.h>
#include <torch/torch.h>
