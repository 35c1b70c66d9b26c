// logSumLoss: the G2L distillation loss (log-sum of |BN(zs W^T + b) - BN(zt)|^alpha, Miles & Mikolajczyk, AAAI 2024)
// and its gradients for any two feature sets, computed by the engine (or the pure-JS backend) in the dtype given.
import { getBackend } from '../backends/index.js';
import type { BackendName, FloatTensor, LogSumLossOptions, LogSumLossResult } from '../backends/index.js';

export type { LogSumLossOptions, LogSumLossResult } from '../backends/index.js';

/**
 * zs (B,Ds) student features, zt (B,Dt) teacher features, options.W (Dt,Ds) and options.b (Dt) the projector.
 * Returns the loss and its gradients with respect to zs, W and b, in the inputs' form (Float32Array or Float64Array).
 */
export function logSumLoss(
  zs: FloatTensor,
  zt: FloatTensor,
  options: LogSumLossOptions & { backend?: BackendName },
): Promise<LogSumLossResult> {
  const { backend, ...rest } = options;
  return getBackend({ backend }).logSumLoss(zs, zt, rest);
}
