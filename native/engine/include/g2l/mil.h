// Gated-attention multiple-instance learning (ABMIL; Ilse, Tomczak & Welling 2018, the gated variant CLAM and UNI's
// slide benchmarks use) for slide-level tasks: a slide is a bag of tile features, the model weighs its tiles and
// classifies their weighted mean.
//
//   h = ReLU(x W1^T + b1)                          (N, L)    per tile
//   a = tanh(h V^T + bV),  g = sigmoid(h U^T + bU) (N, A)
//   s = (a * g) w^T + bw,  alpha = softmax over the bag's N tiles of s
//   z = sum_i alpha_i h_i                          (L)
//   logits = z Wc^T + bc                           (K)      loss: cross-entropy, the mean over the bags of a step
//
// Training follows a plan the caller computes (so that every backend trains identically): epochs of steps, each step
// a list of bags whose mean loss is one AdamW update (betas 0.9/0.999, eps 1e-8, decoupled weight decay on every
// parameter, as torch.optim.AdamW), the step's learning rate given; after each epoch the validation bags' mean loss,
// and training stops when it has not improved for `patience` epochs, returning the weights of the best epoch (the last
// epoch's without validation bags). Parameters: "fc.weight" (L,D), "fc.bias", "attention_a.weight" (A,L) = V,
// "attention_a.bias", "attention_b.weight" (A,L) = U, "attention_b.bias", "attention_c.weight" (1,A) = w,
// "attention_c.bias", "classifier.weight" (K,L), "classifier.bias".
#pragma once

#include <map>
#include <string>
#include <vector>

#include "g2l/engine.h"

namespace g2l {

/** Bags as one (sum of N, D) float array and offsets (B+1): bag b is rows offsets[b] .. offsets[b+1]. */
struct Bags {
  HostTensor features;
  std::vector<int64_t> offsets;
  std::vector<int64_t> labels;  // class per bag (may be empty for prediction)
};

using MilParams = std::map<std::string, HostTensor>;

struct MilTrainPlan {
  /** epochs[e][s] = the bags (indices into the training bags) of step s of epoch e. */
  std::vector<std::vector<std::vector<int64_t>>> epochs;
  /** Learning rate of each step, in order over all epochs. */
  std::vector<double> lr;
  double weight_decay = 0.0;
  /** Epochs without a better validation loss before stopping (0: never stop early). */
  int64_t patience = 0;
};

struct MilTrainResult {
  MilParams params;                // the best epoch's (or the last, without validation bags)
  std::vector<double> train_loss;  // mean over each epoch's steps
  std::vector<double> val_loss;    // after each epoch (empty without validation bags)
  int64_t best_epoch = -1;         // 0-based
  int64_t epochs_run = 0;
};

struct MilLossResult {
  double loss = 0.0;  // mean cross-entropy over the bags
  MilParams grads;
};

/** Trains from `init` (float32 or float64 parameters: the computation runs in that dtype) on `device`. */
MilTrainResult abmil_train(const MilParams& init, const Bags& train, const Bags& val, const MilTrainPlan& plan,
                           const std::string& device);

/** Class probabilities (B, K) of the bags. */
HostTensor abmil_predict(const MilParams& params, const Bags& bags, const std::string& device);

/** The mean loss over the bags and its gradient with respect to every parameter (tests; no update). */
MilLossResult abmil_loss(const MilParams& params, const Bags& bags, const std::string& device);

}  // namespace g2l
