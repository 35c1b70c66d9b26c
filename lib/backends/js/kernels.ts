// Dense float32 kernels of the pure-JS backend: the ViT's forward and hand-written backward (llm.c's CPU layers,
// in TypeScript). Plain loops over Float32Array, no WebAssembly: one matmul shape (C = A B^T, rows against rows)
// with 4x4 register blocking carries almost all of the work, and the backward passes reuse it on transposed copies.
// Shapes are written (rows,cols), row-major; B batch, T tokens, C channels, NH heads, hs head size.

/** C(M,N) (+)= A(M,K) B(N,K)^T (+ bias(N)). The one matmul; every linear layer forward and backward goes through it. */
export function gemmNT(
  A: Float32Array,
  B: Float32Array,
  M: number,
  N: number,
  K: number,
  out: Float32Array,
  bias: Float32Array | null = null,
  accumulate = false,
): Float32Array {
  const M4 = M - (M % 4);
  const N4 = N - (N % 4);
  for (let i = 0; i < M4; i += 4) {
    const a0 = i * K,
      a1 = a0 + K,
      a2 = a1 + K,
      a3 = a2 + K;
    for (let j = 0; j < N4; j += 4) {
      const b0 = j * K,
        b1 = b0 + K,
        b2 = b1 + K,
        b3 = b2 + K;
      let c00 = 0,
        c01 = 0,
        c02 = 0,
        c03 = 0,
        c10 = 0,
        c11 = 0,
        c12 = 0,
        c13 = 0;
      let c20 = 0,
        c21 = 0,
        c22 = 0,
        c23 = 0,
        c30 = 0,
        c31 = 0,
        c32 = 0,
        c33 = 0;
      for (let k = 0; k < K; k++) {
        const x0 = A[a0 + k],
          x1 = A[a1 + k],
          x2 = A[a2 + k],
          x3 = A[a3 + k];
        const y0 = B[b0 + k],
          y1 = B[b1 + k],
          y2 = B[b2 + k],
          y3 = B[b3 + k];
        c00 += x0 * y0;
        c01 += x0 * y1;
        c02 += x0 * y2;
        c03 += x0 * y3;
        c10 += x1 * y0;
        c11 += x1 * y1;
        c12 += x1 * y2;
        c13 += x1 * y3;
        c20 += x2 * y0;
        c21 += x2 * y1;
        c22 += x2 * y2;
        c23 += x2 * y3;
        c30 += x3 * y0;
        c31 += x3 * y1;
        c32 += x3 * y2;
        c33 += x3 * y3;
      }
      store4(out, i * N + j, c00, c01, c02, c03, bias, j, accumulate);
      store4(out, (i + 1) * N + j, c10, c11, c12, c13, bias, j, accumulate);
      store4(out, (i + 2) * N + j, c20, c21, c22, c23, bias, j, accumulate);
      store4(out, (i + 3) * N + j, c30, c31, c32, c33, bias, j, accumulate);
    }
    for (let j = N4; j < N; j++) {
      for (let r = 0; r < 4; r++)
        out[(i + r) * N + j] = finish(dot(A, (i + r) * K, B, j * K, K), out[(i + r) * N + j], bias, j, accumulate);
    }
  }
  for (let i = M4; i < M; i++) {
    for (let j = 0; j < N; j++)
      out[i * N + j] = finish(dot(A, i * K, B, j * K, K), out[i * N + j], bias, j, accumulate);
  }
  return out;
}

function store4(
  out: Float32Array,
  o: number,
  c0: number,
  c1: number,
  c2: number,
  c3: number,
  bias: Float32Array | null,
  j: number,
  accumulate: boolean,
): void {
  if (bias) {
    c0 += bias[j];
    c1 += bias[j + 1];
    c2 += bias[j + 2];
    c3 += bias[j + 3];
  }
  if (accumulate) {
    out[o] += c0;
    out[o + 1] += c1;
    out[o + 2] += c2;
    out[o + 3] += c3;
  } else {
    out[o] = c0;
    out[o + 1] = c1;
    out[o + 2] = c2;
    out[o + 3] = c3;
  }
}

function finish(v: number, old: number, bias: Float32Array | null, j: number, accumulate: boolean): number {
  if (bias) v += bias[j];
  return accumulate ? old + v : v;
}

function dot(A: Float32Array, a: number, B: Float32Array, b: number, K: number): number {
  let s = 0;
  for (let k = 0; k < K; k++) s += A[a + k] * B[b + k];
  return s;
}

/** (R,C) -> (C,R). */
export function transpose(x: Float32Array, R: number, C: number, out = new Float32Array(R * C)): Float32Array {
  const T = 32;
  for (let r0 = 0; r0 < R; r0 += T) {
    const r1 = Math.min(R, r0 + T);
    for (let c0 = 0; c0 < C; c0 += T) {
      const c1 = Math.min(C, c0 + T);
      for (let r = r0; r < r1; r++) for (let c = c0; c < c1; c++) out[c * R + r] = x[r * C + c];
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// Linear: y(M,N) = x(M,K) W(N,K)^T + b(N), PyTorch's weight layout
// ---------------------------------------------------------------------------------------------------------------

export function linearForward(
  x: Float32Array,
  W: Float32Array,
  b: Float32Array | null,
  M: number,
  K: number,
  N: number,
): Float32Array {
  return gemmNT(x, W, M, N, K, new Float32Array(M * N), b);
}

/**
 * Given dy(M,N): accumulates dW(N,K) += dy^T x and db(N) += sum_rows dy; returns dx(M,K) = dy W (or null when
 * `needDx` is false, for the first layer).
 */
export function linearBackward(
  dy: Float32Array,
  x: Float32Array,
  W: Float32Array,
  M: number,
  K: number,
  N: number,
  dW: Float32Array | null,
  db: Float32Array | null,
  needDx = true,
): Float32Array | null {
  if (db) {
    for (let i = 0; i < M; i++) for (let j = 0; j < N; j++) db[j] += dy[i * N + j];
  }
  if (dW) {
    const dyT = transpose(dy, M, N);
    const xT = transpose(x, M, K);
    gemmNT(dyT, xT, N, K, M, dW, null, true);
  }
  if (!needDx) return null;
  const WT = transpose(W, N, K);
  return gemmNT(dy, WT, M, K, N, new Float32Array(M * K));
}

// ---------------------------------------------------------------------------------------------------------------
// LayerNorm over the last dimension (biased variance, as torch.nn.LayerNorm)
// ---------------------------------------------------------------------------------------------------------------

export interface LayerNormCache {
  mean: Float32Array;
  rstd: Float32Array;
}

export function layerNormForward(
  x: Float32Array,
  w: Float32Array,
  b: Float32Array,
  rows: number,
  C: number,
  eps: number,
  cache: LayerNormCache | null = null,
): Float32Array {
  const out = new Float32Array(rows * C);
  for (let r = 0; r < rows; r++) {
    const o = r * C;
    let m = 0;
    for (let c = 0; c < C; c++) m += x[o + c];
    m /= C;
    let v = 0;
    for (let c = 0; c < C; c++) {
      const d = x[o + c] - m;
      v += d * d;
    }
    v /= C;
    const s = 1 / Math.sqrt(v + eps);
    for (let c = 0; c < C; c++) out[o + c] = (x[o + c] - m) * s * w[c] + b[c];
    if (cache) {
      cache.mean[r] = m;
      cache.rstd[r] = s;
    }
  }
  return out;
}

/** Returns dx; accumulates dw, db. */
export function layerNormBackward(
  dy: Float32Array,
  x: Float32Array,
  w: Float32Array,
  cache: LayerNormCache,
  rows: number,
  C: number,
  dw: Float32Array,
  db: Float32Array,
): Float32Array {
  const dx = new Float32Array(rows * C);
  for (let r = 0; r < rows; r++) {
    const o = r * C;
    const m = cache.mean[r],
      s = cache.rstd[r];
    let sumG = 0,
      sumGX = 0;
    for (let c = 0; c < C; c++) {
      const xh = (x[o + c] - m) * s;
      const g = dy[o + c] * w[c];
      sumG += g;
      sumGX += g * xh;
      dw[c] += dy[o + c] * xh;
      db[c] += dy[o + c];
    }
    sumG /= C;
    sumGX /= C;
    for (let c = 0; c < C; c++) {
      const xh = (x[o + c] - m) * s;
      dx[o + c] = s * (dy[o + c] * w[c] - sumG - xh * sumGX);
    }
  }
  return dx;
}

// ---------------------------------------------------------------------------------------------------------------
// Activations
// ---------------------------------------------------------------------------------------------------------------

/** erf(x) in double precision: the Chebyshev-fitted erfc of Numerical Recipes 3rd ed. (section 6.2, erfccheb). */
export function erf(x: number): number {
  return x >= 0 ? 1 - erfccheb(x) : erfccheb(-x) - 1;
}

const ERF_COF = [
  -1.3026537197817094, 0.6419697923564902, 1.9476473204185836e-2, -9.561514786808631e-3, -9.46595344482036e-4,
  3.66839497852761e-4, 4.2523324806907e-5, -2.0278578112534e-5, -1.624290004647e-6, 1.30365583558e-6, 1.5626441722e-8,
  -8.5238095915e-8, 6.529054439e-9, 5.059343495e-9, -9.91364156e-10, -2.27365122e-10, 9.6467911e-11, 2.394038e-12,
  -6.886027e-12, 8.94487e-13, 3.13092e-13, -1.12708e-13, 3.81e-16, 7.106e-15, -1.523e-15, -9.4e-17, 1.21e-16, -2.8e-17,
];

function erfccheb(z: number): number {
  let d = 0,
    dd = 0;
  const t = 2 / (2 + z);
  const ty = 4 * t - 2;
  for (let j = ERF_COF.length - 1; j > 0; j--) {
    const tmp = d;
    d = ty * d - dd + ERF_COF[j];
    dd = tmp;
  }
  return t * Math.exp(-z * z + 0.5 * (ERF_COF[0] + ty * d) - dd);
}

const INV_SQRT2 = Math.SQRT1_2;
const INV_SQRT_2PI = 1 / Math.sqrt(2 * Math.PI);

/** Exact (erf) GELU, torch.nn.GELU() and transformers' "gelu". */
export function geluForward(x: Float32Array): Float32Array {
  const y = new Float32Array(x.length);
  for (let i = 0; i < x.length; i++) y[i] = 0.5 * x[i] * (1 + erf(x[i] * INV_SQRT2));
  return y;
}

export function geluBackward(dy: Float32Array, x: Float32Array): Float32Array {
  const dx = new Float32Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const v = x[i];
    const cdf = 0.5 * (1 + erf(v * INV_SQRT2));
    dx[i] = dy[i] * (cdf + v * INV_SQRT_2PI * Math.exp(-0.5 * v * v));
  }
  return dx;
}

/** SwiGLU: h(rows,2H) = [x1 | x2] -> silu(x1) * x2 (rows,H). timm's packed fc1 and HF's weights_in share this order. */
export function swigluForward(h: Float32Array, rows: number, H: number): Float32Array {
  const y = new Float32Array(rows * H);
  for (let r = 0; r < rows; r++) {
    const o = r * 2 * H;
    for (let c = 0; c < H; c++) {
      const a = h[o + c];
      y[r * H + c] = (a / (1 + Math.exp(-a))) * h[o + H + c];
    }
  }
  return y;
}

export function swigluBackward(dy: Float32Array, h: Float32Array, rows: number, H: number): Float32Array {
  const dh = new Float32Array(rows * 2 * H);
  for (let r = 0; r < rows; r++) {
    const o = r * 2 * H;
    for (let c = 0; c < H; c++) {
      const a = h[o + c];
      const sg = 1 / (1 + Math.exp(-a));
      const g = dy[r * H + c];
      dh[o + c] = g * h[o + H + c] * sg * (1 + a * (1 - sg));
      dh[o + H + c] = g * a * sg;
    }
  }
  return dh;
}

// ---------------------------------------------------------------------------------------------------------------
// Multi-head self-attention core: qkv(B*T, 3C) packed [q | k | v], heads contiguous within each -> (B*T, C)
// ---------------------------------------------------------------------------------------------------------------

/** p: the probabilities before dropout; mask (with attention dropout): 0 or 1 / keep per probability, (B,NH,T,T). */
export interface AttentionCache {
  q: Float32Array;
  k: Float32Array;
  v: Float32Array;
  p: Float32Array;
  mask?: Float32Array;
}

/**
 * softmax(q k^T / sqrt(hs)) v per (batch, head); q, k, v and the probabilities kept in `cache` for backward. With
 * `dropout` (training): the probabilities multiplied by a mask, each kept with probability 1 - p and scaled by
 * 1 / (1 - p) (zero at p 1), as timm's attn_drop and transformers' attention dropout do; the mask goes in the cache.
 */
export function attentionForward(
  qkv: Float32Array,
  B: number,
  T: number,
  C: number,
  NH: number,
  cache: AttentionCache | null,
  dropout: { p: number; random: () => number } | null = null,
): Float32Array {
  const drop = dropout && dropout.p > 0 ? dropout : null;
  if (drop && cache && !cache.mask) cache.mask = new Float32Array(B * NH * T * T);
  const hs = C / NH;
  const scale = 1 / Math.sqrt(hs);
  const out = new Float32Array(B * T * C);
  const q = new Float32Array(T * hs),
    k = new Float32Array(T * hs),
    vT = new Float32Array(hs * T);
  const s = new Float32Array(T * T),
    o = new Float32Array(T * hs);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < NH; h++) {
      for (let t = 0; t < T; t++) {
        const base = (b * T + t) * 3 * C + h * hs;
        for (let d = 0; d < hs; d++) {
          q[t * hs + d] = qkv[base + d] * scale;
          k[t * hs + d] = qkv[base + C + d];
          vT[d * T + t] = qkv[base + 2 * C + d];
        }
      }
      gemmNT(q, k, T, T, hs, s);
      softmaxRows(s, T, T);
      const bh = b * NH + h;
      if (cache) cache.p.set(s, bh * T * T);
      if (drop) {
        const keep = 1 - drop.p,
          kept = keep > 0 ? Math.fround(1 / keep) : 0;
        for (let j = 0; j < T * T; j++) {
          const m = drop.random() < keep ? kept : 0;
          s[j] *= m;
          if (cache) cache.mask![bh * T * T + j] = m;
        }
      }
      gemmNT(s, vT, T, hs, T, o);
      for (let t = 0; t < T; t++) out.set(o.subarray(t * hs, t * hs + hs), (b * T + t) * C + h * hs);
      if (cache) {
        cache.q.set(q, bh * T * hs);
        cache.k.set(k, bh * T * hs);
        transposeInto(vT, hs, T, cache.v, bh * T * hs);
      }
    }
  }
  return out;
}

export function newAttentionCache(B: number, T: number, C: number, NH: number): AttentionCache {
  return {
    q: new Float32Array(B * T * C),
    k: new Float32Array(B * T * C),
    v: new Float32Array(B * T * C),
    p: new Float32Array(B * NH * T * T),
  };
}

/** dout(B*T, C) -> dqkv(B*T, 3C). */
export function attentionBackward(
  dout: Float32Array,
  cache: AttentionCache,
  B: number,
  T: number,
  C: number,
  NH: number,
): Float32Array {
  const hs = C / NH;
  const scale = 1 / Math.sqrt(hs);
  const dqkv = new Float32Array(B * T * 3 * C);
  const dO = new Float32Array(T * hs),
    dOT = new Float32Array(hs * T);
  const dP = new Float32Array(T * T),
    PT = new Float32Array(T * T);
  const dV = new Float32Array(T * hs),
    dQ = new Float32Array(T * hs),
    dK = new Float32Array(T * hs);
  const kT = new Float32Array(hs * T),
    qT = new Float32Array(hs * T);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < NH; h++) {
      const bh = b * NH + h;
      const P = cache.p.subarray(bh * T * T, (bh + 1) * T * T);
      const q = cache.q.subarray(bh * T * hs, (bh + 1) * T * hs);
      const k = cache.k.subarray(bh * T * hs, (bh + 1) * T * hs);
      const v = cache.v.subarray(bh * T * hs, (bh + 1) * T * hs);
      const M = cache.mask ? cache.mask.subarray(bh * T * T, (bh + 1) * T * T) : null;
      for (let t = 0; t < T; t++)
        dO.set(dout.subarray((b * T + t) * C + h * hs, (b * T + t) * C + h * hs + hs), t * hs);
      // dP' = dO v^T; dV = P'^T dO with P' = P * M (M: the dropout mask, 1 without dropout); dP = dP' * M
      gemmNT(dO, v, T, T, hs, dP);
      transpose(P, T, T, PT);
      if (M) {
        for (let i = 0; i < T; i++) for (let j = 0; j < T; j++) PT[j * T + i] *= M[i * T + j];
        for (let j = 0; j < T * T; j++) dP[j] *= M[j];
      }
      transpose(dO, T, hs, dOT);
      gemmNT(PT, dOT, T, hs, T, dV);
      // softmax backward in place: dS = P * (dP - rowsum(dP * P))
      for (let i = 0; i < T; i++) {
        const r = i * T;
        let acc = 0;
        for (let j = 0; j < T; j++) acc += dP[r + j] * P[r + j];
        for (let j = 0; j < T; j++) dP[r + j] = P[r + j] * (dP[r + j] - acc);
      }
      // q was pre-scaled: S = (scale q) k^T, so dq = scale dS k, dk = dS^T (scale q)
      transpose(k, T, hs, kT);
      gemmNT(dP, kT, T, hs, T, dQ);
      transpose(dP, T, T, PT);
      transpose(q, T, hs, qT);
      gemmNT(PT, qT, T, hs, T, dK);
      for (let t = 0; t < T; t++) {
        const base = (b * T + t) * 3 * C + h * hs;
        for (let d = 0; d < hs; d++) {
          dqkv[base + d] = dQ[t * hs + d] * scale;
          dqkv[base + C + d] = dK[t * hs + d];
          dqkv[base + 2 * C + d] = dV[t * hs + d];
        }
      }
    }
  }
  return dqkv;
}

function softmaxRows(s: Float32Array, R: number, C: number): void {
  for (let r = 0; r < R; r++) {
    const o = r * C;
    let m = -Infinity;
    for (let c = 0; c < C; c++) if (s[o + c] > m) m = s[o + c];
    let sum = 0;
    for (let c = 0; c < C; c++) {
      const e = Math.exp(s[o + c] - m);
      s[o + c] = e;
      sum += e;
    }
    const inv = 1 / sum;
    for (let c = 0; c < C; c++) s[o + c] *= inv;
  }
}

function transposeInto(x: Float32Array, R: number, C: number, out: Float32Array, offset: number): void {
  for (let r = 0; r < R; r++) for (let c = 0; c < C; c++) out[offset + c * R + r] = x[r * C + c];
}
