// Tile augmentation (filled in by the slides work).
#include "exports.h"

namespace g2l::addon {

void register_augment(Napi::Env, Napi::Object) {}

}  // namespace g2l::addon
