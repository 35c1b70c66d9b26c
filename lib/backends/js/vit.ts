// The ViT of the timm and transformers DINOv2 families in plain JavaScript: forward, and the backward pass a
// distillation step needs. Same network as the engine's native/engine/models/vit.cpp (which follows timm 1.0
// vision_transformer.py and transformers 5 modeling_dinov2*.py line for line): class token, 0/4/8 registers,
// LayerScale, GELU or SwiGLU (timm packed fc1 / HF weights_in: silu(first half) * second half), fused or separate
// qkv, position embeddings with or without the class position, bicubic resampling of them for other input sizes
// (antialiased for timm and HF-with-registers, plain for HF dinov2), final norm, class token out.
// Weights are held by checkpoint key, in the folder's own layout, so loading, export and the optimiser's
// weight-decay groups need no key mapping.
import { UserError } from '../../errors.js';
import {
  attentionBackward,
  attentionForward,
  geluBackward,
  geluForward,
  layerNormBackward,
  layerNormForward,
  linearBackward,
  linearForward,
  newAttentionCache,
  swigluBackward,
  swigluForward,
  type AttentionCache,
  type LayerNormCache,
} from './kernels.js';
import { readModelWeights } from './safetensors.js';
import {
  describeSpec,
  dropPathRate,
  expectedShapes,
  isBufferKey,
  resolveVitSpec,
  type Regularization,
  type VitSpec,
} from '../../models/spec.js';

export interface Weight {
  shape: number[];
  data: Float32Array;
}

/**
 * Training randomness for one forward (the student in a distillation step): the rates (spec.ts Regularization) and
 * uniform draws in [0, 1). Dropout and drop path apply where timm / transformers apply them in training (see
 * native/engine/models/model.h Regularization); backward() multiplies by the same masks.
 */
export interface VitDrop {
  rates: Regularization;
  random: () => number;
}

/** n elements each kept with probability 1 - p, as 1 / (1 - p) (float32), else 0; null when p is 0. */
function dropoutMask(n: number, p: number, random: () => number): Float32Array | null {
  if (!(p > 0)) return null;
  const keep = 1 - p,
    kept = keep > 0 ? Math.fround(1 / keep) : 0;
  const m = new Float32Array(n);
  for (let i = 0; i < n; i++) m[i] = random() < keep ? kept : 0;
  return m;
}

/**
 * The multiplier of a residual branch (B*T rows of D): a dropout mask of rate pDrop times the per-sample drop-path
 * scale of rate pPath (timm drop_path: bernoulli(keep) / keep per sample, zero at keep 0); null when both are 0.
 */
function branchMask(
  B: number,
  T: number,
  D: number,
  pDrop: number,
  pPath: number,
  random: () => number,
): Float32Array | null {
  const m = dropoutMask(B * T * D, pDrop, random);
  if (!(pPath > 0)) return m;
  const keep = 1 - pPath,
    kept = keep > 0 ? Math.fround(1 / keep) : 0;
  const out = m ?? new Float32Array(B * T * D).fill(1);
  for (let b = 0; b < B; b++) {
    const s = random() < keep ? kept : 0;
    for (let j = b * T * D; j < (b + 1) * T * D; j++) out[j] = Math.fround(out[j] * s);
  }
  return out;
}

function mulInto(x: Float32Array, m: Float32Array | null): void {
  if (m) for (let i = 0; i < x.length; i++) x[i] *= m[i];
}

export class Vit {
  constructor(
    readonly spec: VitSpec,
    readonly weights: Map<string, Weight>,
  ) {}

  /** Keys of the trainable tensors (all but the unused checkpoint entries), in checkpoint order. */
  trainableKeys(): string[] {
    return [...this.weights.keys()].filter((k) => !isBufferKey(k));
  }

  parameterCount(): number {
    let n = 0;
    for (const w of this.weights.values()) n += w.data.length;
    return n;
  }

  private w(key: string): Float32Array {
    const t = this.weights.get(key);
    if (!t) throw new Error(`ViT: no weight '${key}'`);
    return t.data;
  }

  private keys(i: number) {
    const hf = this.spec.layout === 'hf';
    const s = hf ? `encoder.layer.${i}.` : `blocks.${i}.`;
    const sw = this.spec.mlp === 'swiglu_hf';
    return {
      norm1: `${s}norm1`,
      norm2: `${s}norm2`,
      proj: hf ? `${s}attention.output.dense` : `${s}attn.proj`,
      ls1: hf ? `${s}layer_scale1.lambda1` : `${s}ls1.gamma`,
      ls2: hf ? `${s}layer_scale2.lambda1` : `${s}ls2.gamma`,
      fc1: hf ? `${s}mlp.${sw ? 'weights_in' : 'fc1'}` : `${s}mlp.fc1`,
      fc2: hf ? `${s}mlp.${sw ? 'weights_out' : 'fc2'}` : `${s}mlp.fc2`,
      qkv: `${s}attn.qkv`,
      q: `${s}attention.attention.query`,
      k: `${s}attention.attention.key`,
      v: `${s}attention.attention.value`,
    };
  }

  private get prefixKeys() {
    const hf = this.spec.layout === 'hf';
    return hf
      ? {
          cls: 'embeddings.cls_token',
          reg: 'embeddings.register_tokens',
          pos: 'embeddings.position_embeddings',
          patch: 'embeddings.patch_embeddings.projection',
          norm: 'layernorm',
        }
      : {
          cls: 'cls_token',
          reg: 'reg_token',
          pos: 'pos_embed',
          patch: 'patch_embed.proj',
          norm: this.spec.fcNorm ? 'fc_norm' : 'norm',
        };
  }

  /** The fused qkv weight (3D,D) and bias (3D) of block i: timm's own, or HF's query/key/value stacked. */
  private qkv(i: number): { W: Float32Array; b: Float32Array | null } {
    const k = this.keys(i);
    if (this.spec.qkvFused)
      return { W: this.w(`${k.qkv}.weight`), b: this.spec.qkvBias ? this.w(`${k.qkv}.bias`) : null };
    const D = this.spec.embedDim;
    const W = new Float32Array(3 * D * D);
    const b = this.spec.qkvBias ? new Float32Array(3 * D) : null;
    [k.q, k.k, k.v].forEach((name, j) => {
      W.set(this.w(`${name}.weight`), j * D * D);
      if (b) b.set(this.w(`${name}.bias`), j * D);
    });
    return { W, b };
  }

  /** Rows of the position embedding before the patch grid. */
  private posPrefix(): number {
    const s = this.spec;
    return s.layout === 'hf' ? 1 : s.noEmbedClass ? 0 : 1 + s.numRegisters;
  }

  /**
   * The position embedding for a gh x gw grid (rows, D): the stored one, or its patch part resampled bicubically
   * as timm's resample_abs_pos_embed / transformers' interpolate_pos_encoding do. Also the resampling matrices,
   * which the backward pass transposes.
   */
  private positions(gh: number, gw: number, h: number, w: number): { pos: Float32Array; resample: Resample | null } {
    const s = this.spec;
    const D = s.embedDim;
    const stored = this.w(this.prefixKeys.pos);
    const prefix = this.posPrefix();
    const positions = stored.length / D - prefix;
    const old = s.imgSize / s.patchSize;
    const same = s.layout === 'hf' ? gh * gw === positions && h === w : gh === old && gw === old;
    if (same) return { pos: stored, resample: null };
    const side = s.layout === 'hf' ? Math.floor(Math.sqrt(positions)) : old;
    const ry = bicubicMatrix(side, gh, s.posAntialias);
    const rx = bicubicMatrix(side, gw, s.posAntialias);
    const out = new Float32Array((prefix + gh * gw) * D);
    out.set(stored.subarray(0, prefix * D));
    // grid (side,side,D) -> (gh,gw,D): out[y,x,:] = sum_{i,j} ry[y,i] rx[x,j] grid[i,j,:]
    const tmp = new Float64Array(side * gw * D); // rows resampled along x first
    for (let i = 0; i < side; i++) {
      for (let x = 0; x < gw; x++) {
        const o = (i * gw + x) * D;
        for (let j = 0; j < side; j++) {
          const c = rx[x * side + j];
          if (c === 0) continue;
          const g = (prefix + i * side + j) * D;
          for (let d = 0; d < D; d++) tmp[o + d] += c * stored[g + d];
        }
      }
    }
    for (let y = 0; y < gh; y++) {
      for (let i = 0; i < side; i++) {
        const c = ry[y * side + i];
        if (c === 0) continue;
        for (let x = 0; x < gw; x++) {
          const o = (prefix + y * gw + x) * D,
            t = (i * gw + x) * D;
          for (let d = 0; d < D; d++) out[o + d] += c * tmp[t + d];
        }
      }
    }
    return { pos: out, resample: { ry, rx, side, gh, gw, prefix } };
  }

  /**
   * images float32 (B,3,H,W), normalised -> the pooled embedding (B, D or 2D for cls+mean). With `train`, keeps what
   * backward() needs; with `train` and `drop`, applies the training-only dropout and drop path (VitDrop).
   */
  forward(
    images: Float32Array,
    B: number,
    H: number,
    W: number,
    train = false,
    drop: VitDrop | null = null,
  ): { embeddings: Float32Array; cache: VitCache | null } {
    const s = this.spec;
    const dr = train && drop ? drop : null;
    const hf = s.layout === 'hf';
    const D = s.embedDim,
      P = s.patchSize,
      NH = s.numHeads;
    if (H < P || W < P) throw new UserError(`ViT: images of ${H}x${W} px are smaller than one ${P} px patch`);
    const gh = Math.floor(H / P),
      gw = Math.floor(W / P),
      N = gh * gw;
    const R = s.numRegisters;
    const T = 1 + R + N;
    const pk = this.prefixKeys;

    // Patch embedding: a P x P stride-P convolution as a matmul over unfolded patches (B*N, 3*P*P), (c,kh,kw) order.
    const cols = im2col(images, B, H, W, P, gh, gw);
    const patches = linearForward(cols, this.w(`${pk.patch}.weight`), this.w(`${pk.patch}.bias`), B * N, 3 * P * P, D);
    const { pos, resample } = this.positions(gh, gw, H, W);
    const cls = this.w(pk.cls);
    const reg = R > 0 ? this.w(pk.reg) : null;
    const x = new Float32Array(B * T * D);
    for (let b = 0; b < B; b++) {
      const xb = b * T * D;
      if (s.layout === 'hf') {
        // Dinov2(WithRegisters)Embeddings: [cls, patches] + pos, then registers inserted after the class token.
        for (let d = 0; d < D; d++) x[xb + d] = cls[d] + pos[d];
        if (reg) x.set(reg, xb + D);
        for (let n = 0; n < N; n++) {
          const o = xb + (1 + R + n) * D,
            pp = (b * N + n) * D,
            po = (1 + n) * D;
          for (let d = 0; d < D; d++) x[o + d] = patches[pp + d] + pos[po + d];
        }
      } else {
        x.set(cls, xb);
        if (reg) x.set(reg, xb + D);
        const prefix = this.posPrefix(); // 0 (no_embed_class) or 1 + R
        if (prefix) for (let t = 0; t < 1 + R; t++) for (let d = 0; d < D; d++) x[xb + t * D + d] += pos[t * D + d];
        for (let n = 0; n < N; n++) {
          const o = xb + (1 + R + n) * D,
            pp = (b * N + n) * D,
            po = (prefix + n) * D;
          for (let d = 0; d < D; d++) x[o + d] = patches[pp + d] + pos[po + d];
        }
      }
    }

    const rows = B * T;
    // timm pos_drop (pos_drop_rate) at the end of _pos_embed; transformers' embeddings dropout (hidden_dropout_prob)
    // after the registers are inserted.
    const embMask = dr ? dropoutMask(rows * D, hf ? dr.rates.hiddenDrop : dr.rates.posDrop, dr.random) : null;
    mulInto(x, embMask);
    const blocks: BlockCache[] = [];
    let h = x;
    const mlpIn = s.mlp === 'gelu' ? s.mlpHidden : 2 * s.mlpHidden;
    for (let i = 0; i < s.depth; i++) {
      const k = this.keys(i);
      const c1: LayerNormCache = { mean: new Float32Array(rows), rstd: new Float32Array(rows) };
      const n1 = layerNormForward(h, this.w(`${k.norm1}.weight`), this.w(`${k.norm1}.bias`), rows, D, s.normEps, c1);
      const { W: qkvW, b: qkvB } = this.qkv(i);
      const qkv = linearForward(n1, qkvW, qkvB, rows, D, 3 * D);
      const ac = train ? newAttentionCache(B, T, D, NH) : null;
      const att = attentionForward(qkv, B, T, D, NH, ac, dr ? { p: dr.rates.attnDrop, random: dr.random } : null);
      const a = linearForward(att, this.w(`${k.proj}.weight`), this.w(`${k.proj}.bias`), rows, D, D);
      // timm proj_drop / transformers' attention output dropout, then drop path (the same rate for both branches).
      const dp = dr ? dropPathRate(s, dr.rates.dropPath, i) : 0;
      const aMask = dr ? branchMask(B, T, D, hf ? dr.rates.hiddenDrop : dr.rates.projDrop, dp, dr.random) : null;
      mulInto(a, aMask);
      const mid = new Float32Array(rows * D);
      const ls1 = s.layerScale ? this.w(k.ls1) : null;
      for (let r = 0; r < rows; r++)
        for (let d = 0; d < D; d++) mid[r * D + d] = h[r * D + d] + (ls1 ? a[r * D + d] * ls1[d] : a[r * D + d]);
      const c2: LayerNormCache = { mean: new Float32Array(rows), rstd: new Float32Array(rows) };
      const n2 = layerNormForward(mid, this.w(`${k.norm2}.weight`), this.w(`${k.norm2}.bias`), rows, D, s.normEps, c2);
      const f1 = linearForward(n2, this.w(`${k.fc1}.weight`), this.w(`${k.fc1}.bias`), rows, D, mlpIn);
      const g = s.mlp === 'gelu' ? geluForward(f1) : swigluForward(f1, rows, s.mlpHidden);
      // timm Mlp / GluMlp drop1 after the activation (and gate); transformers' MLP has no dropout.
      const gMask = dr && !hf ? dropoutMask(rows * s.mlpHidden, dr.rates.projDrop, dr.random) : null;
      mulInto(g, gMask);
      const m = linearForward(g, this.w(`${k.fc2}.weight`), this.w(`${k.fc2}.bias`), rows, s.mlpHidden, D);
      const mMask = dr ? branchMask(B, T, D, hf ? 0 : dr.rates.projDrop, dp, dr.random) : null;
      mulInto(m, mMask);
      const out = new Float32Array(rows * D);
      const ls2 = s.layerScale ? this.w(k.ls2) : null;
      for (let r = 0; r < rows; r++)
        for (let d = 0; d < D; d++) out[r * D + d] = mid[r * D + d] + (ls2 ? m[r * D + d] * ls2[d] : m[r * D + d]);
      if (train) blocks.push({ x: h, n1, c1, qkvW, att, ac: ac!, a, mid, n2, c2, f1, g, m, aMask, gMask, mMask });
      h = out;
    }
    // Final norm and pooling (the engine's VisionTransformerImpl::forward): timm forward_head pools (class token,
    // or the mean of the tokens after the class token and registers), then fc_norm when use_fc_norm (no final norm
    // on the tokens then), then head_drop; transformers reads the class token / patch tokens of the normalised
    // last_hidden_state. LayerNorm is per token: only the rows the pooling reads are normalised.
    const pooled = (src: Float32Array, rowsPerImage: number, first: number): Float32Array => {
      // src (B, rowsPerImage, D) -> (B, outD): row `first` of each image is its class token, its last N its patches.
      const out = new Float32Array(B * outD);
      for (let b = 0; b < B; b++) {
        const o = b * outD,
          base = b * rowsPerImage * D;
        if (s.pool !== 'mean') out.set(src.subarray(base + first * D, base + first * D + D), o);
        if (s.pool !== 'cls') {
          const m = o + (s.pool === 'cls+mean' ? D : 0);
          const p0 = rowsPerImage - N; // patch rows are the last N of each image
          for (let n = 0; n < N; n++) {
            const r = base + (p0 + n) * D;
            for (let d = 0; d < D; d++) out[m + d] += src[r + d];
          }
          for (let d = 0; d < D; d++) out[m + d] /= N;
        }
      }
      return out;
    };
    const outD = s.pool === 'cls+mean' ? 2 * D : D;
    let emb: Float32Array, normIn: Float32Array, normRows: number;
    if (s.fcNorm) {
      normIn = pooled(h, T, 0);
      normRows = B;
    } else {
      // cls: the class rows only; otherwise every token row (registers included; they get no gradient).
      const perImage = s.pool === 'cls' ? 1 : T;
      normIn = new Float32Array(B * perImage * D);
      for (let b = 0; b < B; b++) normIn.set(h.subarray(b * T * D, b * T * D + perImage * D), b * perImage * D);
      normRows = B * perImage;
    }
    const cf: LayerNormCache = { mean: new Float32Array(normRows), rstd: new Float32Array(normRows) };
    if (s.fcNorm)
      emb = layerNormForward(normIn, this.w(`${pk.norm}.weight`), this.w(`${pk.norm}.bias`), B, D, s.normEps, cf);
    else {
      const perImage = normRows / B;
      const normed = layerNormForward(
        normIn,
        this.w(`${pk.norm}.weight`),
        this.w(`${pk.norm}.bias`),
        normRows,
        D,
        s.normEps,
        cf,
      );
      emb = perImage === 1 ? normed : pooled(normed, perImage, 0);
    }
    // timm forward_head: head_drop (drop_rate) on the pooled features; transformers has none.
    const headMask = dr && !hf ? dropoutMask(B * outD, dr.rates.headDrop, dr.random) : null;
    mulInto(emb, headMask);
    const cache = train ? { B, T, N, gh, gw, cols, resample, blocks, normIn, normRows, cf, embMask, headMask } : null;
    return { embeddings: emb, cache };
  }

  /** Accumulates into `grads` (checkpoint key -> gradient) the gradients of sum(dEmb * embeddings). */
  backward(cache: VitCache, dEmb: Float32Array, grads: Map<string, Float32Array>): void {
    const s = this.spec;
    const D = s.embedDim,
      NH = s.numHeads,
      P = s.patchSize,
      R = s.numRegisters;
    const { B, T, N } = cache;
    const rows = B * T;
    const pk = this.prefixKeys;
    const g = (key: string): Float32Array => {
      let t = grads.get(key);
      if (!t) {
        t = new Float32Array(this.w(key).length);
        grads.set(key, t);
      }
      return t;
    };
    if (cache.headMask) {
      const masked = new Float32Array(dEmb.length);
      for (let j = 0; j < masked.length; j++) masked[j] = dEmb[j] * cache.headMask[j];
      dEmb = masked;
    }
    // The pooling's transpose: the class part to the class row, the mean part spread over the N patch rows.
    const outD = s.pool === 'cls+mean' ? 2 * D : D;
    const unpool = (dp: Float32Array, rowsPerImage: number, into: Float32Array): void => {
      for (let b = 0; b < B; b++) {
        const o = b * outD,
          base = b * rowsPerImage * D;
        if (s.pool !== 'mean') for (let d = 0; d < D; d++) into[base + d] += dp[o + d];
        if (s.pool !== 'cls') {
          const m = o + (s.pool === 'cls+mean' ? D : 0),
            p0 = rowsPerImage - N;
          for (let n = 0; n < N; n++) {
            const r = base + (p0 + n) * D;
            for (let d = 0; d < D; d++) into[r + d] += dp[m + d] / N;
          }
        }
      }
    };
    let dx: Float32Array = new Float32Array(rows * D);
    const nw = this.w(`${pk.norm}.weight`),
      gnw = g(`${pk.norm}.weight`),
      gnb = g(`${pk.norm}.bias`);
    if (s.fcNorm) {
      const dpool = layerNormBackward(dEmb, cache.normIn, nw, cache.cf, B, D, gnw, gnb);
      unpool(dpool, T, dx);
    } else {
      const perImage = cache.normRows / B;
      let dnormed = dEmb;
      if (perImage !== 1) {
        dnormed = new Float32Array(cache.normRows * D);
        unpool(dEmb, perImage, dnormed);
      }
      const dsel = layerNormBackward(dnormed, cache.normIn, nw, cache.cf, cache.normRows, D, gnw, gnb);
      for (let b = 0; b < B; b++) dx.set(dsel.subarray(b * perImage * D, (b + 1) * perImage * D), b * T * D);
    }
    const mlpIn = s.mlp === 'gelu' ? s.mlpHidden : 2 * s.mlpHidden;

    for (let i = s.depth - 1; i >= 0; i--) {
      const k = this.keys(i);
      const c = cache.blocks[i];
      // out = mid + ls2 * m
      const dm = new Float32Array(rows * D);
      if (s.layerScale) {
        const ls2 = this.w(k.ls2),
          dls2 = g(k.ls2);
        for (let r = 0; r < rows; r++)
          for (let d = 0; d < D; d++) {
            dm[r * D + d] = dx[r * D + d] * ls2[d];
            dls2[d] += dx[r * D + d] * c.m[r * D + d];
          }
      } else dm.set(dx);
      mulInto(dm, c.mMask); // m = fc2(...) * mMask
      const dg = linearBackward(
        dm,
        c.g,
        this.w(`${k.fc2}.weight`),
        rows,
        s.mlpHidden,
        D,
        g(`${k.fc2}.weight`),
        g(`${k.fc2}.bias`),
      )!;
      mulInto(dg, c.gMask); // fc2's input = act(f1) * gMask
      const df1 = s.mlp === 'gelu' ? geluBackward(dg, c.f1) : swigluBackward(dg, c.f1, rows, s.mlpHidden);
      const dn2 = linearBackward(
        df1,
        c.n2,
        this.w(`${k.fc1}.weight`),
        rows,
        D,
        mlpIn,
        g(`${k.fc1}.weight`),
        g(`${k.fc1}.bias`),
      )!;
      const dmid = layerNormBackward(
        dn2,
        c.mid,
        this.w(`${k.norm2}.weight`),
        c.c2,
        rows,
        D,
        g(`${k.norm2}.weight`),
        g(`${k.norm2}.bias`),
      );
      for (let j = 0; j < dmid.length; j++) dmid[j] += dx[j];
      // mid = x + ls1 * a
      const da = new Float32Array(rows * D);
      if (s.layerScale) {
        const ls1 = this.w(k.ls1),
          dls1 = g(k.ls1);
        for (let r = 0; r < rows; r++)
          for (let d = 0; d < D; d++) {
            da[r * D + d] = dmid[r * D + d] * ls1[d];
            dls1[d] += dmid[r * D + d] * c.a[r * D + d];
          }
      } else da.set(dmid);
      mulInto(da, c.aMask); // a = proj(...) * aMask
      const datt = linearBackward(
        da,
        c.att,
        this.w(`${k.proj}.weight`),
        rows,
        D,
        D,
        g(`${k.proj}.weight`),
        g(`${k.proj}.bias`),
      )!;
      const dqkv = attentionBackward(datt, c.ac, B, T, D, NH);
      let dn1: Float32Array;
      if (s.qkvFused) {
        dn1 = linearBackward(
          dqkv,
          c.n1,
          c.qkvW,
          rows,
          D,
          3 * D,
          g(`${k.qkv}.weight`),
          s.qkvBias ? g(`${k.qkv}.bias`) : null,
        )!;
      } else {
        const dW = new Float32Array(3 * D * D),
          db = new Float32Array(3 * D);
        dn1 = linearBackward(dqkv, c.n1, c.qkvW, rows, D, 3 * D, dW, db)!;
        [k.q, k.k, k.v].forEach((name, j) => {
          addInto(g(`${name}.weight`), dW.subarray(j * D * D, (j + 1) * D * D));
          if (s.qkvBias) addInto(g(`${name}.bias`), db.subarray(j * D, (j + 1) * D));
        });
      }
      const dxi = layerNormBackward(
        dn1,
        c.x,
        this.w(`${k.norm1}.weight`),
        c.c1,
        rows,
        D,
        g(`${k.norm1}.weight`),
        g(`${k.norm1}.bias`),
      );
      for (let j = 0; j < dxi.length; j++) dxi[j] += dmid[j];
      dx = dxi;
    }

    mulInto(dx, cache.embMask); // the tokens after pos_drop / the embeddings dropout
    // Embeddings: class token, registers, position embedding and the patch projection.
    const prefix = this.posPrefix();
    const posRows = prefix + N;
    const dpos = new Float64Array(posRows * D);
    const dclsTok = g(pk.cls);
    const dreg = R > 0 ? g(pk.reg) : null;
    const dpatch = new Float32Array(B * N * D);
    for (let b = 0; b < B; b++) {
      const xb = b * T * D;
      for (let d = 0; d < D; d++) dclsTok[d] += dx[xb + d];
      if (dreg) for (let j = 0; j < R * D; j++) dreg[j] += dx[xb + D + j];
      if (s.layout === 'hf') {
        for (let d = 0; d < D; d++) dpos[d] += dx[xb + d];
      } else if (prefix) {
        for (let j = 0; j < prefix * D; j++) dpos[j] += dx[xb + j];
      }
      for (let n = 0; n < N; n++) {
        const o = xb + (1 + R + n) * D;
        for (let d = 0; d < D; d++) {
          dpatch[(b * N + n) * D + d] = dx[o + d];
          dpos[(prefix + n) * D + d] += dx[o + d];
        }
      }
    }
    const dposStored = g(pk.pos);
    if (!cache.resample) {
      for (let j = 0; j < dpos.length; j++) dposStored[j] += dpos[j];
    } else {
      const { ry, rx, side, gh, gw } = cache.resample;
      for (let j = 0; j < prefix * D; j++) dposStored[j] += dpos[j];
      // transpose of the resampling: dgrid[i,j] = sum_{y,x} ry[y,i] rx[x,j] dout[y,x]
      const tmp = new Float64Array(side * gw * D);
      for (let y = 0; y < gh; y++)
        for (let i = 0; i < side; i++) {
          const cf = ry[y * side + i];
          if (cf === 0) continue;
          for (let x = 0; x < gw; x++) {
            const t = (i * gw + x) * D,
              o = (prefix + y * gw + x) * D;
            for (let d = 0; d < D; d++) tmp[t + d] += cf * dpos[o + d];
          }
        }
      for (let i = 0; i < side; i++)
        for (let x = 0; x < gw; x++)
          for (let j = 0; j < side; j++) {
            const cf = rx[x * side + j];
            if (cf === 0) continue;
            const t = (i * gw + x) * D,
              o = (prefix + i * side + j) * D;
            for (let d = 0; d < D; d++) dposStored[o + d] += cf * tmp[t + d];
          }
    }
    linearBackward(
      dpatch,
      cache.cols,
      this.w(`${pk.patch}.weight`),
      B * N,
      3 * P * P,
      D,
      g(`${pk.patch}.weight`),
      g(`${pk.patch}.bias`),
      false,
    );
  }
}

interface BlockCache {
  x: Float32Array;
  n1: Float32Array;
  c1: LayerNormCache;
  qkvW: Float32Array;
  att: Float32Array;
  ac: AttentionCache;
  a: Float32Array;
  mid: Float32Array;
  n2: Float32Array;
  c2: LayerNormCache;
  f1: Float32Array;
  g: Float32Array;
  m: Float32Array;
  /** Training-only multipliers (null when off): the attention branch (dropout x drop path), the MLP hidden
   *  activations (timm drop1), the MLP branch (timm drop2 x drop path). a, g, m above are after them. */
  aMask: Float32Array | null;
  gMask: Float32Array | null;
  mMask: Float32Array | null;
}

interface Resample {
  ry: Float64Array;
  rx: Float64Array;
  side: number;
  gh: number;
  gw: number;
  prefix: number;
}

export interface VitCache {
  B: number;
  T: number;
  N: number;
  gh: number;
  gw: number;
  cols: Float32Array;
  resample: Resample | null;
  blocks: BlockCache[];
  /** The final LayerNorm's input: the pooled vectors (fc_norm), or the token rows the pooling reads; its stats. */
  normIn: Float32Array;
  normRows: number;
  cf: LayerNormCache;
  /** Training-only masks (null when off): the tokens after the position embedding, the output features. */
  embMask: Float32Array | null;
  headMask: Float32Array | null;
}

function addInto(dst: Float32Array, src: Float32Array): void {
  for (let i = 0; i < dst.length; i++) dst[i] += src[i];
}

/** images (B,3,H,W) -> non-overlapping P x P patches (B*gh*gw, 3*P*P), each in (c, kh, kw) order as conv weights. */
function im2col(x: Float32Array, B: number, H: number, W: number, P: number, gh: number, gw: number): Float32Array {
  const K = 3 * P * P;
  const out = new Float32Array(B * gh * gw * K);
  for (let b = 0; b < B; b++)
    for (let py = 0; py < gh; py++)
      for (let px = 0; px < gw; px++) {
        let o = ((b * gh + py) * gw + px) * K;
        for (let c = 0; c < 3; c++)
          for (let ky = 0; ky < P; ky++) {
            const row = ((b * 3 + c) * H + py * P + ky) * W + px * P;
            for (let kx = 0; kx < P; kx++) out[o++] = x[row + kx];
          }
      }
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// Bicubic resampling as PyTorch's F.interpolate(mode='bicubic', align_corners=False) computes it, with and without
// antialias, written as a (out, in) weight matrix per axis
// ---------------------------------------------------------------------------------------------------------------

/**
 * antialias false: upsample_bicubic2d (Keys cubic, A = -0.75, source index scale (dst + 0.5) - 0.5, taps clamped to
 * the border). antialias true: _upsample_bicubic2d_aa (PIL's separable filter, a = -0.5, support 2 * max(scale, 1),
 * weights normalised to sum 1 over the taps inside the image).
 */
export function bicubicMatrix(inSize: number, outSize: number, antialias: boolean): Float64Array {
  const m = new Float64Array(outSize * inSize);
  const scale = inSize / outSize;
  if (!antialias) {
    const A = -0.75;
    for (let o = 0; o < outSize; o++) {
      const src = scale * (o + 0.5) - 0.5;
      const i0 = Math.floor(src);
      const t = src - i0;
      const c = [cubic2(t + 1, A), cubic1(t, A), cubic1(1 - t, A), cubic2(2 - t, A)];
      for (let k = 0; k < 4; k++) {
        const idx = Math.min(Math.max(i0 - 1 + k, 0), inSize - 1);
        m[o * inSize + idx] += c[k];
      }
    }
    return m;
  }
  const support = scale >= 1 ? 2 * scale : 2;
  const invscale = scale >= 1 ? 1 / scale : 1;
  for (let o = 0; o < outSize; o++) {
    const center = scale * (o + 0.5);
    const xmin = Math.max(Math.trunc(center - support + 0.5), 0);
    const xsize = Math.min(Math.trunc(center + support + 0.5), inSize) - xmin;
    let total = 0;
    const w = new Float64Array(xsize);
    for (let j = 0; j < xsize; j++) {
      w[j] = aaFilter((j + xmin - center + 0.5) * invscale);
      total += w[j];
    }
    for (let j = 0; j < xsize; j++) m[o * inSize + xmin + j] = total !== 0 ? w[j] / total : 0;
  }
  return m;
}

const cubic1 = (x: number, A: number): number => ((A + 2) * x - (A + 3)) * x * x + 1;
const cubic2 = (x: number, A: number): number => ((A * x - 5 * A) * x + 8 * A) * x - 4 * A;

function aaFilter(x: number): number {
  const a = -0.5;
  x = Math.abs(x);
  if (x < 1) return cubic1(x, a);
  if (x < 2) return cubic2(x, a);
  return 0;
}

/** (N,C,H,W) float -> (N,C,outH,outW) bicubic (see bicubicMatrix). */
export function resizeBicubic(
  x: Float32Array,
  N: number,
  C: number,
  H: number,
  W: number,
  outH: number,
  outW: number,
  antialias: boolean,
): Float32Array {
  const ry = bicubicMatrix(H, outH, antialias),
    rx = bicubicMatrix(W, outW, antialias);
  const out = new Float32Array(N * C * outH * outW);
  const tmp = new Float64Array(H * outW);
  for (let p = 0; p < N * C; p++) {
    const src = p * H * W;
    tmp.fill(0);
    for (let i = 0; i < H; i++)
      for (let ox = 0; ox < outW; ox++) {
        let acc = 0;
        for (let j = 0; j < W; j++) {
          const c = rx[ox * W + j];
          if (c !== 0) acc += c * x[src + i * W + j];
        }
        tmp[i * outW + ox] = acc;
      }
    const dst = p * outH * outW;
    for (let oy = 0; oy < outH; oy++)
      for (let ox = 0; ox < outW; ox++) {
        let acc = 0;
        for (let i = 0; i < H; i++) {
          const c = ry[oy * H + i];
          if (c !== 0) acc += c * tmp[i * outW + ox];
        }
        out[dst + oy * outW + ox] = acc;
      }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------------------------------

/**
 * A model folder (and/or preset) -> Vit with float32 weights, strict: every missing, unexpected and mis-shaped key
 * in one error before any work.
 */
export function loadVit(folder: string, preset = '', pool = ''): Vit {
  const spec = resolveVitSpec(folder, preset, pool);
  if (!folder)
    throw new UserError(
      `preset '${preset}' has no weights: pass preset:${preset}:<folder> with the model's safetensors`,
    );
  return new Vit(spec, checkWeights(spec, readModelWeights(folder), folder));
}

export function checkWeights(
  spec: VitSpec,
  stored: Map<string, { shape: number[]; data: Float32Array }>,
  where: string,
): Map<string, Weight> {
  const expected = expectedShapes(spec);
  const missing: string[] = [],
    unexpected: string[] = [],
    misshaped: string[] = [];
  for (const [k, shape] of expected) {
    const t = stored.get(k);
    if (!t) missing.push(k);
    else if (t.shape.join(',') !== shape.join(','))
      misshaped.push(`${k} (${t.shape.join(',')}) expected (${shape.join(',')})`);
  }
  for (const k of stored.keys()) if (!expected.has(k)) unexpected.push(k);
  if (missing.length || unexpected.length || misshaped.length) {
    const list = (name: string, xs: string[]) =>
      xs.length ? ` ${name} ${xs.length}: ${xs.slice(0, 8).join(', ')}${xs.length > 8 ? ', ...' : ''};` : '';
    throw new UserError(
      `the weights in ${where} do not match ${describeSpec(spec)}:${list('missing', missing)}${list('unexpected', unexpected)}${list('mis-shaped', misshaped)} check that config.json belongs to these weights`,
    );
  }
  const out = new Map<string, Weight>();
  for (const k of expected.keys()) out.set(k, { shape: stored.get(k)!.shape, data: stored.get(k)!.data });
  return out;
}
