// How the pure-JS backend's compute foundation was chosen: one ViT block, forward and backward of sum(output),
// with the backend's own kernels (lib/backends/js/kernels.ts) and with TensorFlow.js's CPU backend (autodiff).
// tfjs is not a dependency; to rerun:  npm install --no-save @tensorflow/tfjs@4.22.0 && npx tsc -p tsconfig.json &&
// node benchmarks/lib/foundation-choice.mjs [B,T,C,heads,hidden]   (default 8,197,128,4,512)
// (tfjs-core with tfjs-backend-cpu alone registers no gradients under Node: the union package is needed.)
import * as K from '../../dist/backends/js/kernels.js';

// @tensorflow/tfjs is not installed (nor typed) here: the little of its API this file calls, as it calls it.
/**
 * @typedef {{ dataSync(): Float32Array }} TfTensor
 * @typedef {TfTensor | number} TfOperand
 * @typedef {object} Tf
 * @property {(name: string) => Promise<boolean>} setBackend
 * @property {(values: Float32Array, shape?: number[]) => TfTensor} tensor
 * @property {(initial: TfTensor, trainable: boolean, name: string) => TfTensor} variable
 * @property {(x: TfTensor, axis: number, keepDims: boolean) => { mean: TfTensor, variance: TfTensor }} moments
 * @property {(a: TfOperand, b: TfOperand) => TfTensor} add
 * @property {(a: TfOperand, b: TfOperand) => TfTensor} sub
 * @property {(a: TfOperand, b: TfOperand) => TfTensor} mul
 * @property {(x: TfTensor) => TfTensor} rsqrt
 * @property {(x: TfTensor) => TfTensor} erf
 * @property {(x: TfTensor) => TfTensor} softmax
 * @property {(x: TfTensor) => TfTensor} sum
 * @property {(a: TfTensor, b: TfTensor, transposeA?: boolean, transposeB?: boolean) => TfTensor} matMul
 * @property {(x: TfTensor, shape: number[]) => TfTensor} reshape
 * @property {(x: TfTensor, perm: number[]) => TfTensor} transpose
 * @property {(x: TfTensor) => TfTensor[]} unstack
 * @property {<R>(fn: () => R) => R} tidy
 * @property {(f: () => TfTensor) => { value: TfTensor, grads: Record<string, TfTensor> }} variableGrads
 */

const [B, T, C, NH, HID] = (process.argv[2] ?? '8,197,128,4,512').split(',').map(Number);
/**
 * @param {number} n
 * @param {number} [s]
 */
const rnd = (n, s = 0.1) => {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = (Math.random() * 2 - 1) * s;
  return a;
};
/** @param {number} n */
const ones = (n) => new Float32Array(n).fill(1);
const W = {
  ln1w: ones(C),
  ln1b: rnd(C),
  qkvW: rnd(3 * C * C),
  qkvB: rnd(3 * C),
  projW: rnd(C * C),
  projB: rnd(C),
  ln2w: ones(C),
  ln2b: rnd(C),
  fc1W: rnd(HID * C),
  fc1B: rnd(HID),
  fc2W: rnd(C * HID),
  fc2B: rnd(C),
};
const x = rnd(B * T * C, 1);
const R = B * T;
/**
 * linearBackward's dx: it returns one unless asked not to (needDx false), which this file never does.
 * @param {Float32Array | null} dx
 */
const needDx = (dx) => {
  if (!dx) throw new Error('linearBackward returned no dx');
  return dx;
};
/** @returns {[Float32Array, Record<string, Float32Array>]} the block's output and its weights' gradients */
function own() {
  const c1 = { mean: new Float32Array(R), rstd: new Float32Array(R) },
    c2 = { mean: new Float32Array(R), rstd: new Float32Array(R) };
  const h1 = K.layerNormForward(x, W.ln1w, W.ln1b, R, C, 1e-6, c1);
  const qkv = K.linearForward(h1, W.qkvW, W.qkvB, R, C, 3 * C);
  const ac = K.newAttentionCache(B, T, C, NH);
  const a = K.attentionForward(qkv, B, T, C, NH, ac);
  const p = K.linearForward(a, W.projW, W.projB, R, C, C);
  const x1 = new Float32Array(R * C);
  for (let i = 0; i < x1.length; i++) x1[i] = x[i] + p[i];
  const h2 = K.layerNormForward(x1, W.ln2w, W.ln2b, R, C, 1e-6, c2);
  const f1 = K.linearForward(h2, W.fc1W, W.fc1B, R, C, HID);
  const g = K.geluForward(f1);
  const f2 = K.linearForward(g, W.fc2W, W.fc2B, R, HID, C);
  const y = new Float32Array(R * C);
  for (let i = 0; i < y.length; i++) y[i] = x1[i] + f2[i];
  // backward of sum(y * 1)
  const G = Object.fromEntries(Object.entries(W).map(([k, v]) => [k, new Float32Array(v.length)]));
  const dy = ones(R * C);
  const dg = needDx(K.linearBackward(dy, g, W.fc2W, R, HID, C, G.fc2W, G.fc2B));
  const df1 = K.geluBackward(dg, f1);
  const dh2 = needDx(K.linearBackward(df1, h2, W.fc1W, R, C, HID, G.fc1W, G.fc1B));
  const dx1 = K.layerNormBackward(dh2, x1, W.ln2w, c2, R, C, G.ln2w, G.ln2b);
  for (let i = 0; i < dx1.length; i++) dx1[i] += dy[i];
  const da = needDx(K.linearBackward(dx1, a, W.projW, R, C, C, G.projW, G.projB));
  const dqkv = K.attentionBackward(da, ac, B, T, C, NH);
  const dh1 = needDx(K.linearBackward(dqkv, h1, W.qkvW, R, C, 3 * C, G.qkvW, G.qkvB));
  const dx = K.layerNormBackward(dh1, x, W.ln1w, c1, R, C, G.ln1w, G.ln1b);
  for (let i = 0; i < dx.length; i++) dx[i] += dx1[i];
  return [y, G];
}
const req = (await import('node:module')).createRequire(new URL('../../package.json', import.meta.url));
/** @type {Tf} */
let tf;
try {
  tf = req('@tensorflow/tfjs');
} catch {
  console.error('@tensorflow/tfjs is not installed: see the header of this file');
  process.exit(1);
}
await tf.setBackend('cpu');
const V = Object.fromEntries(Object.entries(W).map(([k, v]) => [k, tf.variable(tf.tensor(v), true, k)]));
const xt = tf.tensor(x, [R, C]);
/**
 * @param {TfTensor} h
 * @param {TfTensor} w
 * @param {TfTensor} b
 */
function ln(h, w, b) {
  const { mean, variance } = tf.moments(h, -1, true);
  return tf.add(tf.mul(tf.mul(tf.sub(h, mean), tf.rsqrt(tf.add(variance, 1e-6))), w), b);
}
/**
 * @param {TfTensor} h
 * @param {TfTensor} Wt
 * @param {TfTensor} b
 * @param {number} n
 * @param {number} k
 */
function lin(h, Wt, b, n, k) {
  return tf.add(tf.matMul(h, tf.reshape(Wt, [n, k]), false, true), b);
}
function block() {
  const h1 = ln(xt, V.ln1w, V.ln1b);
  const qkv = tf.transpose(tf.reshape(lin(h1, V.qkvW, V.qkvB, 3 * C, C), [B, T, 3, NH, C / NH]), [2, 0, 3, 1, 4]);
  const [q, k, v] = tf.unstack(qkv);
  const att = tf.softmax(tf.matMul(tf.mul(q, 1 / Math.sqrt(C / NH)), k, false, true));
  const a = tf.reshape(tf.transpose(tf.matMul(att, v), [0, 2, 1, 3]), [R, C]);
  const x1 = tf.add(xt, lin(a, V.projW, V.projB, C, C));
  const f1 = lin(ln(x1, V.ln2w, V.ln2b), V.fc1W, V.fc1B, HID, C);
  const g = tf.mul(tf.mul(f1, 0.5), tf.add(tf.erf(tf.mul(f1, Math.SQRT1_2)), 1));
  return tf.sum(tf.add(x1, lin(g, V.fc2W, V.fc2B, C, HID)));
}
/** @returns {[Float32Array, Record<string, Float32Array>]} the block's output and its weights' gradients */
function tfjs() {
  return tf.tidy(() => {
    const { value, grads } = tf.variableGrads(block);
    return [value.dataSync(), Object.fromEntries(Object.entries(grads).map(([k, v]) => [k, v.dataSync()]))];
  });
}
/**
 * @param {() => unknown} f
 * @param {number} [n]
 */
function time(f, n = 3) {
  f();
  const ts = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    f();
    ts.push(performance.now() - t0);
  }
  ts.sort((a, b) => a - b);
  return ts[Math.floor(n / 2)];
}
// agreement on the weight gradients
const [, G1] = own();
const [, G2] = tfjs();
let worst = 0;
for (const k of Object.keys(G1)) {
  let m = 0,
    d = 0;
  for (let i = 0; i < G1[k].length; i++) {
    m = Math.max(m, Math.abs(G2[k][i]));
    d = Math.max(d, Math.abs(G1[k][i] - G2[k][i]));
  }
  worst = Math.max(worst, d / m);
}
const tOwn = time(own),
  tTf = time(tfjs);
const flops = 2 * R * C * (3 * C + C + 2 * HID) * 3 + 2 * B * NH * T * T * (C / NH) * 2 * 3;
console.log(
  JSON.stringify({
    B,
    T,
    C,
    NH,
    HID,
    ownMs: +tOwn.toFixed(1),
    tfjsMs: +tTf.toFixed(1),
    ownGflops: +(flops / tOwn / 1e6).toFixed(2),
    tfjsGflops: +(flops / tTf / 1e6).toFixed(2),
    maxRelGradDiff: worst,
  }),
);
