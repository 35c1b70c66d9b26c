// Model loading and embedding (filled in by the models work).
#include "exports.h"

namespace g2l::addon {

void register_models(Napi::Env, Napi::Object) {}

}  // namespace g2l::addon
