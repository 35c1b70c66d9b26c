// Registration of the addon's functions, one function per area of the engine (models, distillation...), each
// defined in its own .cpp file of native/addon.
#pragma once

#include <napi.h>

namespace g2l::addon {

void register_models(Napi::Env env, Napi::Object exports);   // models.cpp: load, embed, dispose
void register_distill(Napi::Env env, Napi::Object exports);  // distill.cpp: logSumLoss, Distiller
void register_augment(Napi::Env env, Napi::Object exports);  // augment.cpp: the fused tile augmentation
void register_mil(Napi::Env env, Napi::Object exports);      // mil.cpp: ABMIL for slide-level tasks
void register_eval(Napi::Env env, Napi::Object exports);     // eval.cpp: kNN search and the linear probe

}  // namespace g2l::addon
