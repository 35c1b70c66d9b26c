// The log-sum distillation loss and its gradients in plain JavaScript, float64 throughout (the engine's math in
// native/engine/train/loss.h, written as loops): p = zs W^T + b; f_s = BN(p), f_t = BN(zt) (batch statistics, no affine);
// loss = log sum |f_s - f_t|^alpha ("batch") or mean_i log sum_j |f_s - f_t|_ij^alpha ("sample").
import { UserError } from '../../errors.js';
import type { FloatTensor, LogSumLossOptions, LogSumLossResult } from '../types.js';
import { LOSS_DEFAULTS } from '../../defaults.js';

type FloatArray = Float32Array | Float64Array;

function like(template: FloatArray, values: Float64Array): FloatArray {
  return template instanceof Float32Array ? Float32Array.from(values) : values;
}

function dims(t: FloatTensor, rank: number, name: string): number[] {
  if (t.shape.length !== rank)
    throw new UserError(`logSumLoss: ${name} must have ${rank} dimensions, got (${t.shape.join(',')})`);
  const n = t.shape.reduce((a, b) => a * b, 1);
  if (t.data.length !== n)
    throw new UserError(`logSumLoss: ${name}.data has ${t.data.length} values but its shape needs ${n}`);
  return t.shape;
}

// Per-column mean and 1/sqrt(biased variance + eps) of x (rows, cols): BatchNorm1d's training statistics.
function columnStats(
  x: Float64Array | FloatArray,
  rows: number,
  cols: number,
  eps: number,
): { mean: Float64Array; rstd: Float64Array } {
  const mean = new Float64Array(cols);
  const rstd = new Float64Array(cols);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) mean[j] += x[i * cols + j];
  for (let j = 0; j < cols; j++) mean[j] /= rows;
  for (let i = 0; i < rows; i++) {
    for (let j = 0; j < cols; j++) {
      const c = x[i * cols + j] - mean[j];
      rstd[j] += c * c;
    }
  }
  for (let j = 0; j < cols; j++) rstd[j] = 1 / Math.sqrt(rstd[j] / rows + eps);
  return { mean, rstd };
}

export function logSumLossJs(zs: FloatTensor, zt: FloatTensor, options: LogSumLossOptions): LogSumLossResult {
  const { W, b } = options;
  const alpha = options.alpha ?? LOSS_DEFAULTS.alpha;
  const reduction = options.reduction ?? LOSS_DEFAULTS.reduction;
  const eps = options.bnEps ?? LOSS_DEFAULTS.bnEps;
  const teacherBn = options.teacherBn ?? LOSS_DEFAULTS.teacherBn;
  if (reduction !== 'batch' && reduction !== 'sample') {
    throw new UserError(`logSumLoss: reduction must be "batch" or "sample", got "${String(reduction)}"`);
  }
  if (!(alpha >= 1)) throw new UserError(`logSumLoss: alpha must be >= 1, got ${alpha}`);
  const [B, Ds] = dims(zs, 2, 'zs');
  const [Bt, Dt] = dims(zt, 2, 'zt');
  const [Wr, Wc] = dims(W, 2, 'W');
  const [bn] = dims(b, 1, 'b');
  if (Bt !== B || Wr !== Dt || Wc !== Ds || bn !== Dt) {
    throw new UserError(
      `logSumLoss: expected zs (B,Ds), zt (B,Dt), W (Dt,Ds), b (Dt), got zs (${zs.shape}), zt (${zt.shape}), W (${W.shape}), b (${b.shape})`,
    );
  }
  if (B < 2) throw new UserError(`logSumLoss: batch statistics need at least 2 samples, got a batch of ${B}`);

  // Projector: p (B,Dt)
  const p = new Float64Array(B * Dt);
  for (let i = 0; i < B; i++) {
    for (let k = 0; k < Dt; k++) {
      let s = b.data[k];
      for (let j = 0; j < Ds; j++) s += zs.data[i * Ds + j] * W.data[k * Ds + j];
      p[i * Dt + k] = s;
    }
  }
  const sp = columnStats(p, B, Dt, eps);
  const st = teacherBn
    ? columnStats(zt.data, B, Dt, eps)
    : { mean: new Float64Array(Dt), rstd: new Float64Array(Dt).fill(1) };
  const f = new Float64Array(B * Dt); // f_s
  const diff = new Float64Array(B * Dt); // f_s - f_t
  const rowSum = new Float64Array(B);
  for (let i = 0; i < B; i++) {
    for (let k = 0; k < Dt; k++) {
      const o = i * Dt + k;
      f[o] = (p[o] - sp.mean[k]) * sp.rstd[k];
      diff[o] = f[o] - (zt.data[o] - st.mean[k]) * st.rstd[k];
      rowSum[i] += Math.abs(diff[o]) ** alpha;
    }
  }
  let total = 0;
  let loss: number;
  if (reduction === 'batch') {
    for (let i = 0; i < B; i++) total += rowSum[i];
    loss = Math.log(total);
  } else {
    let s = 0;
    for (let i = 0; i < B; i++) s += Math.log(rowSum[i]);
    loss = s / B;
  }

  // g = dL/df_s = alpha |d|^(alpha-1) sign(d) w_i, then the BN backward: dp = rstd (g - mean_i g - f mean_i(g f)).
  const g = new Float64Array(B * Dt);
  for (let i = 0; i < B; i++) {
    const w = reduction === 'batch' ? 1 / total : 1 / (B * rowSum[i]);
    for (let k = 0; k < Dt; k++) {
      const d = diff[i * Dt + k];
      g[i * Dt + k] = alpha * Math.abs(d) ** (alpha - 1) * Math.sign(d) * w;
    }
  }
  const dp = new Float64Array(B * Dt);
  for (let k = 0; k < Dt; k++) {
    let meanG = 0;
    let meanGF = 0;
    for (let i = 0; i < B; i++) {
      meanG += g[i * Dt + k];
      meanGF += g[i * Dt + k] * f[i * Dt + k];
    }
    meanG /= B;
    meanGF /= B;
    for (let i = 0; i < B; i++) {
      const o = i * Dt + k;
      dp[o] = sp.rstd[k] * (g[o] - meanG - f[o] * meanGF);
    }
  }
  // Through the projector: dzs = dp W, dW = dp^T zs, db = sum_i dp.
  const dzs = new Float64Array(B * Ds);
  const dW = new Float64Array(Dt * Ds);
  const db = new Float64Array(Dt);
  for (let i = 0; i < B; i++) {
    for (let k = 0; k < Dt; k++) {
      const v = dp[i * Dt + k];
      db[k] += v;
      for (let j = 0; j < Ds; j++) {
        dzs[i * Ds + j] += v * W.data[k * Ds + j];
        dW[k * Ds + j] += v * zs.data[i * Ds + j];
      }
    }
  }
  return {
    loss,
    grads: {
      zs: { data: like(zs.data, dzs), shape: [B, Ds] },
      W: { data: like(W.data, dW), shape: [Dt, Ds] },
      b: { data: like(b.data, db), shape: [Dt] },
    },
  };
}
