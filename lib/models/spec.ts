// The one model registry: a model folder and/or a preset -> a fully resolved ViT spec (timm registry defaults + hub
// config.json model_args, transformers config.json + preprocessor_config.json, presets for what an official
// config.json leaves to code, the pooling). Both backends build from the spec: the js backend directly, the native
// engine from the plain object nativeModelSpec() makes (native/addon convert.cpp), which it checks but does not
// interpret further; export writes the files exportJson() says.
import { existsSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { UserError } from '../errors.js';

export interface VitSpec {
  family: string;
  layout: 'timm' | 'hf';
  preset: string;
  folder: string;
  /** Size the position embeddings were trained at (grid * patch). */
  imgSize: number;
  /** Size images are resized to before embedding. */
  inputSize: number;
  patchSize: number;
  embedDim: number;
  depth: number;
  numHeads: number;
  numRegisters: number;
  /** Width of the MLP hidden layer (SwiGLU: of each half). */
  mlpHidden: number;
  mlp: 'gelu' | 'swiglu_packed' | 'swiglu_hf';
  initValues: number;
  layerScale: boolean;
  /** timm: pos_embed covers the patches only. */
  noEmbedClass: boolean;
  qkvFused: boolean;
  qkvBias: boolean;
  normEps: number;
  /** Resample position embeddings with antialiased bicubic (timm, HF with registers) or plain bicubic (HF dinov2). */
  posAntialias: boolean;
  /** HF: embeddings.mask_token is in the checkpoint (unused). */
  maskToken: boolean;
  /** timm: a classifier head in the checkpoint (kept, unused). */
  numClasses: number;
  /** How the final tokens become the embedding: the class token, the mean of the patch tokens (class and register
   *  tokens excluded), or both concatenated (2 * embedDim); the engine's ModelSpec::pool. */
  pool: Pool;
  /** timm use_fc_norm: no final norm on the tokens; fc_norm normalises the pooled vector (keys fc_norm.*). */
  fcNorm: boolean;
  mean: [number, number, number];
  std: [number, number, number];
  /** Training-only dropout / drop-path rates from config.json (the engine's g2l/models.h Regularization). */
  drop: Regularization;
}

/**
 * Training-only regularisation in the names of the model's library (zero = off); see native/engine/include/g2l/models.h
 * Regularization for where each applies. Used by the js distiller for the student inside a training step only.
 */
export interface Regularization {
  /** timm drop_path_rate (the last block's, linear from 0); HF drop_path_rate (every layer). */
  dropPath: number;
  /** timm attn_drop_rate, HF attention_probs_dropout_prob. */
  attnDrop: number;
  /** timm proj_drop_rate: after attn.proj, after the MLP activation (and gate), after fc2. */
  projDrop: number;
  /** timm pos_drop_rate: the tokens after the position embedding. */
  posDrop: number;
  /** timm drop_rate: the class-token features. */
  headDrop: number;
  /** HF hidden_dropout_prob: the embeddings (after registers), the attention output dense. */
  hiddenDrop: number;
  /** timm patch_drop_rate (PatchDropout): not supported when non-zero. */
  patchDrop: number;
}

export const NO_DROP: Readonly<Regularization> = Object.freeze({
  dropPath: 0,
  attnDrop: 0,
  projDrop: 0,
  posDrop: 0,
  headDrop: 0,
  hiddenDrop: 0,
  patchDrop: 0,
});

export const POOLS = ['cls', 'mean', 'cls+mean'] as const;
export type Pool = (typeof POOLS)[number];

/** Width of the embedding: D, or 2 * D for cls+mean. */
export const outDim = (s: Pick<VitSpec, 'pool' | 'embedDim'>): number =>
  s.pool === 'cls+mean' ? 2 * s.embedDim : s.embedDim;

/** A rate in [0, 1] from a config (0 when absent or null). */
function rate(r: Reader, key: string): number {
  if (r.get(key) === undefined) return 0;
  const x = r.number(key, 0);
  if (!(x >= 0 && x <= 1)) throw new UserError(`${r.where}: '${key}' must be a rate in [0, 1], got ${x}`);
  return x;
}

type Json = Record<string, unknown>;

const IMAGENET: [number[], number[]] = [
  [0.485, 0.456, 0.406],
  [0.229, 0.224, 0.225],
];
const INCEPTION: [number[], number[]] = [
  [0.5, 0.5, 0.5],
  [0.5, 0.5, 0.5],
];
// docs/method.md, "Constants": the official model cards' normalisations.
const HOPTIMUS: [number[], number[]] = [
  [0.707223, 0.578729, 0.703617],
  [0.211883, 0.230117, 0.177517],
];
const HIBOU: [number[], number[]] = [
  [0.7068, 0.5755, 0.722],
  [0.195, 0.2316, 0.1816],
];

/** timm registered architectures: the model_args of their entry functions (timm/models/vision_transformer.py). */
const TIMM: Record<
  string,
  {
    patch: number;
    dim: number;
    depth: number;
    heads: number;
    mlpRatio: number;
    mlpLayer: string;
    initValues: number;
    reg: number;
    noEmbedClass: boolean;
    imgSize: number;
    imagenet: boolean;
  }
> = {};
for (const [name, patch, dim, depth, heads, mlpRatio, mlpLayer, initValues, reg, noEmbedClass, imgSize, imagenet] of [
  ['vit_small_patch14_dinov2', 14, 384, 12, 6, 4.0, 'mlp', 1e-5, 0, false, 518, true],
  ['vit_base_patch14_dinov2', 14, 768, 12, 12, 4.0, 'mlp', 1e-5, 0, false, 518, true],
  ['vit_large_patch14_dinov2', 14, 1024, 24, 16, 4.0, 'mlp', 1e-5, 0, false, 518, true],
  ['vit_giant_patch14_dinov2', 14, 1536, 40, 24, 2.66667 * 2, 'swiglu_packed', 1e-5, 0, false, 518, true],
  ['vit_small_patch14_reg4_dinov2', 14, 384, 12, 6, 4.0, 'mlp', 1e-5, 4, true, 518, true],
  ['vit_base_patch14_reg4_dinov2', 14, 768, 12, 12, 4.0, 'mlp', 1e-5, 4, true, 518, true],
  ['vit_large_patch14_reg4_dinov2', 14, 1024, 24, 16, 4.0, 'mlp', 1e-5, 4, true, 518, true],
  ['vit_giant_patch14_reg4_dinov2', 14, 1536, 40, 24, 2.66667 * 2, 'swiglu_packed', 1e-5, 4, true, 518, true],
  ['vit_small_patch16_224', 16, 384, 12, 6, 4.0, 'mlp', 0, 0, false, 224, false],
  ['vit_base_patch16_224', 16, 768, 12, 12, 4.0, 'mlp', 0, 0, false, 224, false],
  ['vit_large_patch16_224', 16, 1024, 24, 16, 4.0, 'mlp', 0, 0, false, 224, false],
  ['vit_huge_patch14_224', 14, 1280, 32, 16, 4.0, 'mlp', 0, 0, false, 224, false],
  ['vit_giant_patch14_224', 14, 1408, 40, 16, 48.0 / 11.0, 'mlp', 0, 0, false, 224, false],
] as const) {
  TIMM[name] = { patch, dim, depth, heads, mlpRatio, mlpLayer, initValues, reg, noEmbedClass, imgSize, imagenet };
}

const PRESETS: Record<string, { layout: 'timm' | 'hf'; config: Json; norm: [number[], number[]]; pool: Pool }> = {
  'h-optimus-0': {
    layout: 'timm',
    norm: HOPTIMUS,
    pool: 'cls',
    config: {
      architecture: 'vit_giant_patch14_reg4_dinov2',
      num_classes: 0,
      model_args: { img_size: 224, init_values: 1e-5, dynamic_img_size: false },
    },
  },
  'uni2-h': {
    // The model card's timm_kwargs: its config.json names vit_giant_patch14_224 but not the SwiGLU layer.
    layout: 'timm',
    norm: IMAGENET,
    pool: 'cls',
    config: {
      architecture: 'vit_giant_patch14_224',
      num_classes: 0,
      model_args: {
        img_size: 224,
        patch_size: 14,
        depth: 24,
        num_heads: 24,
        init_values: 1e-5,
        embed_dim: 1536,
        mlp_ratio: 2.66667 * 2,
        no_embed_class: true,
        mlp_layer: 'swiglu_packed',
        act_layer: 'silu',
        reg_tokens: 8,
        dynamic_img_size: true,
      },
    },
  },
  'hibou-l': {
    layout: 'hf',
    norm: HIBOU,
    pool: 'cls',
    config: {
      model_type: 'dinov2_with_registers',
      hidden_size: 1024,
      num_hidden_layers: 24,
      num_attention_heads: 16,
      mlp_ratio: 4,
      use_swiglu_ffn: true,
      num_register_tokens: 4,
      image_size: 224,
      patch_size: 14,
      layer_norm_eps: 1e-6,
      layerscale_value: 1e-5,
    },
  },
  'hibou-b': {
    layout: 'hf',
    norm: HIBOU,
    pool: 'cls',
    config: {
      model_type: 'dinov2_with_registers',
      hidden_size: 768,
      num_hidden_layers: 12,
      num_attention_heads: 12,
      mlp_ratio: 4,
      use_swiglu_ffn: true,
      num_register_tokens: 4,
      image_size: 224,
      patch_size: 14,
      layer_norm_eps: 1e-6,
      layerscale_value: 1e-5,
    },
  },
};

// TRIDENT's names (mahmoodlab/TRIDENT trident/patch_encoder_models/load.py, commit 5f53f476: each *InferenceEncoder's
// timm_kwargs, Normalize constants and forward pooling).
PRESETS.uni_v1 = {
  layout: 'timm',
  norm: IMAGENET,
  pool: 'cls',
  config: {
    architecture: 'vit_large_patch16_224',
    num_classes: 0,
    model_args: { img_size: 224, patch_size: 16, init_values: 1e-5, dynamic_img_size: true },
  },
};
PRESETS.virchow2 = {
  layout: 'timm',
  norm: IMAGENET,
  pool: 'cls+mean',
  config: {
    architecture: 'vit_huge_patch14_224',
    num_classes: 0,
    model_args: {
      img_size: 224,
      init_values: 1e-5,
      reg_tokens: 4,
      mlp_ratio: 5.3375,
      global_pool: '',
      dynamic_img_size: true,
      mlp_layer: 'swiglu_packed',
      act_layer: 'silu',
    },
  },
};
PRESETS.hoptimus1 = {
  layout: 'timm',
  norm: HOPTIMUS,
  pool: 'cls',
  config: {
    architecture: 'vit_giant_patch14_reg4_dinov2',
    num_classes: 0,
    model_args: { img_size: 224, init_values: 1e-5, global_pool: 'token', dynamic_img_size: false },
  },
};
PRESETS.gigapath = {
  layout: 'timm',
  norm: IMAGENET,
  pool: 'cls',
  config: {
    architecture: 'vit_giant_patch14_dinov2',
    num_classes: 0,
    model_args: {
      img_size: 224,
      in_chans: 3,
      patch_size: 16,
      embed_dim: 1536,
      depth: 40,
      num_heads: 24,
      mlp_ratio: 5.33334,
    },
  },
};
// H0MiniInferenceEncoder (TRIDENT's later load.py; the model card bioptimus/H0-mini): vit_base_patch14_reg4_dinov2 with
// SwiGLUPacked + SiLU passed in code, global_pool '' (the card's output is every token, (1, 261, 768)); the H-optimus
// normalisation; TRIDENT's default return_type is the class token (cls+mean, 1536-d, by --pool).
PRESETS['h0-mini'] = {
  layout: 'timm',
  norm: HOPTIMUS,
  pool: 'cls',
  config: {
    architecture: 'vit_base_patch14_reg4_dinov2',
    num_classes: 0,
    model_args: {
      img_size: 224,
      init_values: 1e-5,
      global_pool: '',
      dynamic_img_size: true,
      mlp_layer: 'swiglu_packed',
      act_layer: 'silu',
    },
  },
};
// Phikonv2InferenceEncoder: transformers AutoModel of owkin/phikon-v2 (Dinov2Model, ViT-L/16: dim 1024, 24 layers, 16
// heads, GELU MLP, no registers); Resize(224) + CenterCrop(224), ImageNet normalisation; last_hidden_state[:, 0].
PRESETS.phikon_v2 = {
  layout: 'hf',
  norm: IMAGENET,
  pool: 'cls',
  config: {
    model_type: 'dinov2',
    hidden_size: 1024,
    num_hidden_layers: 24,
    num_attention_heads: 16,
    mlp_ratio: 4,
    use_swiglu_ffn: false,
    image_size: 224,
    patch_size: 16,
    layer_norm_eps: 1e-6,
    layerscale_value: 1e-5,
  },
};
/** TRIDENT's names for the presets known under the models' own names. */
const PRESET_ALIASES: Record<string, string> = {
  hoptimus0: 'h-optimus-0',
  uni_v2: 'uni2-h',
  hibou_l: 'hibou-l',
  hibou_b: 'hibou-b',
};

export const presetNames = (): string[] => [...Object.keys(PRESETS), ...Object.keys(PRESET_ALIASES)];

/** The MLP of a timm registered architecture by default ('mlp' or 'swiglu_packed'), or null when not registered. */
export const timmDefaultMlp = (architecture: string): string | null => TIMM[architecture]?.mlpLayer ?? null;

/** Typed reads that name the file and key on a wrong type. */
class Reader {
  constructor(
    readonly obj: Json,
    readonly where: string,
  ) {}
  get(key: string): unknown {
    const v = this.obj[key];
    return v === null ? undefined : v;
  }
  number(key: string, fallback: number): number {
    const v = this.get(key);
    if (v === undefined) return fallback;
    if (typeof v !== 'number') throw new UserError(`${this.where}: '${key}' must be a number`);
    return v;
  }
  integer(key: string, fallback: number): number {
    let v = this.get(key);
    if (v === undefined) return fallback;
    if (Array.isArray(v) && v.length && typeof v[0] === 'number') {
      if (v.length === 2 && v[0] !== v[1])
        throw new UserError(`${this.where}: '${key}' is not square; square sizes only`);
      v = v[v.length - 1];
    }
    if (typeof v !== 'number' || !Number.isInteger(v))
      throw new UserError(`${this.where}: '${key}' must be an integer`);
    return v;
  }
  flag(key: string, fallback: boolean): boolean {
    const v = this.get(key);
    if (v === undefined) return fallback;
    if (typeof v !== 'boolean') throw new UserError(`${this.where}: '${key}' must be true or false`);
    return v;
  }
  text(key: string, fallback: string): string {
    const v = this.get(key);
    if (v === undefined) return fallback;
    if (typeof v !== 'string') throw new UserError(`${this.where}: '${key}' must be a string`);
    return v;
  }
  triple(key: string): [number, number, number] | null {
    const v = this.get(key);
    if (v === undefined) return null;
    if (!Array.isArray(v) || v.length !== 3 || v.some((x) => typeof x !== 'number'))
      throw new UserError(`${this.where}: '${key}' must be a list of 3 numbers`);
    return [v[0], v[1], v[2]];
  }
}

const TIMM_KNOWN_ARGS = new Set([
  'img_size',
  'patch_size',
  'embed_dim',
  'depth',
  'num_heads',
  'mlp_ratio',
  'qkv_bias',
  'init_values',
  'reg_tokens',
  'no_embed_class',
  'class_token',
  'global_pool',
  'num_classes',
  'mlp_layer',
  'act_layer',
  'dynamic_img_size',
  'dynamic_img_pad',
  'in_chans',
  'drop_rate',
  'pos_drop_rate',
  'patch_drop_rate',
  'proj_drop_rate',
  'attn_drop_rate',
  'drop_path_rate',
  'weight_init',
  'fix_init',
  'pre_norm',
  'fc_norm',
  'qk_norm',
  'pos_embed',
  'num_features',
]);

function resolveTimm(config: Json, where: string): VitSpec {
  const root = new Reader(config, where);
  const arch = root.text('architecture', '');
  if (!arch) throw new UserError(`${where}: no "architecture" (a timm model name) in the timm config`);
  const reg = TIMM[arch];
  if (!reg)
    throw new UserError(
      `${where}: timm architecture '${arch}' is not supported; supported: ${Object.keys(TIMM).join(', ')}`,
    );
  const argsObj = (root.get('model_args') ?? {}) as Json;
  const args = new Reader(argsObj, `${where} model_args`);
  refuseUnsupportedTimmArgs(argsObj, args, where);
  const { pool, fcNorm } = timmPooling(root, args, argsObj, where);
  const embedDim = args.integer('embed_dim', reg.dim);
  const { mlp, mlpHidden } = timmMlp(args, reg, embedDim, where);
  const { initValues, layerScale } = timmLayerScale(args, argsObj, reg);
  const { imgSize, inputSize, mean, std } = timmInput(root, args, reg, where);
  return {
    family: arch,
    layout: 'timm',
    preset: '',
    folder: '',
    imgSize,
    inputSize,
    patchSize: args.integer('patch_size', reg.patch),
    embedDim,
    depth: args.integer('depth', reg.depth),
    numHeads: args.integer('num_heads', reg.heads),
    numRegisters: args.integer('reg_tokens', reg.reg),
    mlpHidden,
    mlp,
    initValues,
    layerScale,
    noEmbedClass: args.flag('no_embed_class', reg.noEmbedClass),
    qkvFused: true,
    qkvBias: args.flag('qkv_bias', true),
    normEps: 1e-6,
    posAntialias: true,
    maskToken: false,
    numClasses: args.integer('num_classes', root.integer('num_classes', 0)),
    pool,
    fcNorm,
    mean,
    std,
    drop: {
      ...NO_DROP,
      dropPath: rate(args, 'drop_path_rate'),
      attnDrop: rate(args, 'attn_drop_rate'),
      projDrop: rate(args, 'proj_drop_rate'),
      posDrop: rate(args, 'pos_drop_rate'),
      headDrop: rate(args, 'drop_rate'),
      patchDrop: rate(args, 'patch_drop_rate'),
    },
  };
}

type TimmArch = (typeof TIMM)[string];

/** model_args the ViT does not implement are refused by name rather than ignored. */
function refuseUnsupportedTimmArgs(argsObj: Json, args: Reader, where: string): void {
  for (const k of Object.keys(argsObj)) {
    if (!TIMM_KNOWN_ARGS.has(k)) {
      throw new UserError(
        `${where}: model_args '${k}' is not supported by the ViT; remove it if it does not change the architecture, or open an issue with the model's name`,
      );
    }
  }
  if (!args.flag('class_token', true))
    throw new UserError(`${where}: class_token false is not supported (embeddings are the class token)`);
  if (args.flag('pre_norm', false)) throw new UserError(`${where}: pre_norm is not supported`);
  if (args.flag('qk_norm', false)) throw new UserError(`${where}: qk_norm is not supported`);
  if (args.flag('dynamic_img_pad', false)) throw new UserError(`${where}: dynamic_img_pad is not supported`);
  if (args.integer('in_chans', 3) !== 3) throw new UserError(`${where}: in_chans must be 3 (RGB)`);
  if (args.text('pos_embed', 'learn') !== 'learn')
    throw new UserError(`${where}: only learned position embeddings are supported`);
}

/** Pooling as timm's forward_head: 'token' -> cls, 'avg' -> mean of the patch tokens with fc_norm unless fc_norm is
 *  false; '' (all tokens) leaves the pooling to a preset or an override. */
function timmPooling(root: Reader, args: Reader, argsObj: Json, where: string): { pool: Pool; fcNorm: boolean } {
  const globalPool = args.text('global_pool', root.text('global_pool', 'token'));
  if (!['token', 'avg', ''].includes(globalPool)) {
    throw new UserError(
      `${where}: global_pool '${globalPool}' is not supported; supported: 'token' (class token), 'avg' (mean of the patch tokens), or '' with a pooling from a preset or --pool`,
    );
  }
  const fcNormArg = argsObj.fc_norm;
  if (fcNormArg !== undefined && fcNormArg !== null && typeof fcNormArg !== 'boolean')
    throw new UserError(`${where}: model_args 'fc_norm' must be true, false or null`);
  return {
    pool: (globalPool === 'token' ? 'cls' : globalPool === 'avg' ? 'mean' : '') as Pool,
    fcNorm: typeof fcNormArg === 'boolean' ? fcNormArg : globalPool === 'avg',
  };
}

/** The MLP: timm's Mlp (GELU) or GluMlp as SwiGLUPacked (SiLU), hidden_features = int(dim * mlp_ratio), GluMlp's fc2
 *  taking half of it. Names as hub configs write them: "swiglu_packed", "SwiGLUPacked", "timm.layers.SwiGLUPacked";
 *  "silu", "torch.nn.SiLU". */
function timmMlp(
  args: Reader,
  reg: TimmArch,
  embedDim: number,
  where: string,
): { mlp: VitSpec['mlp']; mlpHidden: number } {
  let mlpLayer = args.text('mlp_layer', reg.mlpLayer).toLowerCase();
  if (mlpLayer.startsWith('timm.layers.')) mlpLayer = mlpLayer.slice(12);
  if (mlpLayer === 'swiglupacked') mlpLayer = 'swiglu_packed';
  let act = args.text('act_layer', mlpLayer === 'swiglu_packed' ? 'silu' : 'gelu').toLowerCase();
  if (act.startsWith('torch.nn.')) act = act.slice(9);
  const hidden = Math.trunc(embedDim * args.number('mlp_ratio', reg.mlpRatio));
  if (mlpLayer === 'swiglu_packed') {
    if (act !== 'silu' && act !== 'swish')
      throw new UserError(`${where}: SwiGLU with act_layer '${act}' is not supported`);
    return { mlp: 'swiglu_packed', mlpHidden: Math.trunc(hidden / 2) };
  }
  if (mlpLayer === 'mlp') {
    if (act !== 'gelu') throw new UserError(`${where}: Mlp with act_layer '${act}' is not supported (GELU only)`);
    return { mlp: 'gelu', mlpHidden: hidden };
  }
  throw new UserError(`${where}: mlp_layer '${mlpLayer}' is not supported (Mlp with GELU, or swiglu_packed)`);
}

/** LayerScale: init_values given (on), null (off), or the architecture's default. */
function timmLayerScale(args: Reader, argsObj: Json, reg: TimmArch): { initValues: number; layerScale: boolean } {
  if ('init_values' in argsObj && argsObj.init_values !== null)
    return { initValues: args.number('init_values', 0), layerScale: true };
  if (!('init_values' in argsObj)) return { initValues: reg.initValues, layerScale: reg.initValues > 0 };
  return { initValues: 0, layerScale: false }; // init_values: null disables LayerScale
}

/** The position embeddings' size, the input size and the normalisation: pretrained_cfg over the registry. */
function timmInput(
  root: Reader,
  args: Reader,
  reg: TimmArch,
  where: string,
): Pick<VitSpec, 'imgSize' | 'inputSize' | 'mean' | 'std'> {
  const pcfgObj = (root.get('pretrained_cfg') ?? null) as Json | null;
  const pcfg = new Reader(pcfgObj ?? {}, `${where} pretrained_cfg`);
  let cfgInput = reg.imgSize;
  const is = pcfg.get('input_size');
  if (Array.isArray(is) && is.length === 3) {
    if (is[1] !== is[2]) throw new UserError(`${where}: non-square input_size is not supported`);
    cfgInput = is[2] as number;
  }
  const imgSize = args.integer('img_size', cfgInput);
  const [mean, std] = reg.imagenet ? IMAGENET : INCEPTION;
  return {
    imgSize,
    inputSize: pcfgObj && pcfg.get('input_size') !== undefined ? cfgInput : imgSize,
    mean: pcfg.triple('mean') ?? (mean.slice() as VitSpec['mean']),
    std: pcfg.triple('std') ?? (std.slice() as VitSpec['std']),
  };
}

function resolveHf(config: Json, where: string): VitSpec {
  const c = new Reader(config, where);
  const type = c.text('model_type', '');
  if (type !== 'dinov2' && type !== 'dinov2_with_registers') {
    throw new UserError(
      `${where}: model_type '${type}' is not supported; supported: dinov2, dinov2_with_registers (transformers layout) or a timm hub config with "architecture"`,
    );
  }
  const withRegisters = type === 'dinov2_with_registers';
  if (c.integer('num_channels', 3) !== 3) throw new UserError(`${where}: num_channels must be 3 (RGB)`);
  const embedDim = c.integer('hidden_size', 768);
  const numRegisters = c.integer('num_register_tokens', withRegisters ? 4 : 0);
  const hidden = Math.trunc(embedDim * c.number('mlp_ratio', 4));
  let mlp: VitSpec['mlp'] = 'gelu';
  let mlpHidden = hidden;
  if (c.flag('use_swiglu_ffn', false)) {
    // Dinov2SwiGLUFFN: hidden = (int(hidden * 2 / 3) + 7) // 8 * 8; weights_in is 2 * hidden wide.
    mlp = 'swiglu_hf';
    mlpHidden = Math.floor((Math.trunc((hidden * 2) / 3) + 7) / 8) * 8;
  } else {
    const act = c.text('hidden_act', 'gelu');
    if (act !== 'gelu') throw new UserError(`${where}: hidden_act '${act}' is not supported (gelu only)`);
  }
  const imgSize = c.integer('image_size', 224);
  return {
    family: type,
    layout: 'hf',
    preset: '',
    folder: '',
    imgSize,
    inputSize: imgSize,
    patchSize: c.integer('patch_size', withRegisters ? 16 : 14),
    embedDim,
    depth: c.integer('num_hidden_layers', 12),
    numHeads: c.integer('num_attention_heads', 12),
    numRegisters,
    mlpHidden,
    mlp,
    initValues: c.number('layerscale_value', 1.0),
    layerScale: true,
    noEmbedClass: false,
    qkvFused: false,
    qkvBias: c.flag('qkv_bias', true),
    normEps: c.number('layer_norm_eps', 1e-6),
    // transformers' Dinov2 interpolates with plain bicubic; Dinov2WithRegisters with antialias=True.
    posAntialias: withRegisters || numRegisters > 0,
    maskToken: withRegisters ? true : c.flag('use_mask_token', true),
    numClasses: 0,
    // pooler_output is the class token of last_hidden_state; transformers configs have no pooling field.
    pool: 'cls',
    fcNorm: false,
    mean: IMAGENET[0].slice() as VitSpec['mean'],
    std: IMAGENET[1].slice() as VitSpec['std'],
    drop: {
      ...NO_DROP,
      dropPath: rate(c, 'drop_path_rate'),
      attnDrop: rate(c, 'attention_probs_dropout_prob'),
      hiddenDrop: rate(c, 'hidden_dropout_prob'),
    },
  };
}

/** Presets whose config.json is incomplete without them, recognised from that config (UNI2-h). */
export function detectPreset(config: Json): string {
  // An export of a model that needed a preset records it (recordedConfig): H0-mini's config.json, for one, is that of
  // a plain vit_base_patch14_reg4_dinov2 with the SwiGLU layer left to code.
  if (typeof config.g2l_preset === 'string' && PRESETS[config.g2l_preset]) return config.g2l_preset;
  if (config.architecture === 'vit_giant_patch14_224') {
    const args = config.model_args as Json | undefined;
    if (args && typeof args === 'object' && args.reg_tokens === 8 && args.mlp_layer === undefined) return 'uni2-h';
  }
  // Virchow2's config.json: the SwiGLU layer and the cls+mean embedding are left to code.
  if (config.architecture === 'vit_huge_patch14_224') {
    const args = config.model_args as Json | undefined;
    if (
      args &&
      typeof args === 'object' &&
      args.reg_tokens === 4 &&
      args.mlp_ratio === 5.3375 &&
      args.mlp_layer === undefined
    )
      return 'virchow2';
  }
  return '';
}

function readJson(file: string): Json {
  let v: unknown;
  try {
    v = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw new UserError(`${file} is not valid JSON (${(e as Error).message}); download it again`);
  }
  if (!v || typeof v !== 'object' || Array.isArray(v)) throw new UserError(`${file} is not a JSON object`);
  return v as Json;
}

/** Folder and/or preset -> spec, without reading weights. */
export function resolveVitSpec(folder: string, presetArg = '', poolOverride = ''): VitSpec {
  const presetName = PRESET_ALIASES[presetArg] ?? presetArg;
  if (poolOverride && !(POOLS as readonly string[]).includes(poolOverride))
    throw new UserError(`unknown pooling '${poolOverride}': use cls, mean or cls+mean`);
  let preset = presetName ? PRESETS[presetName] : undefined;
  if (presetName && !preset)
    throw new UserError(`unknown preset '${presetArg}': known presets are ${presetNames().join(', ')}`);
  let config: Json | null = null;
  let where = `preset ${presetName}`;
  if (folder) {
    if (!existsSync(folder) || !statSync(folder).isDirectory()) {
      throw new UserError(
        `model folder ${folder} does not exist or is not a folder: pass the folder that holds config.json and model.safetensors`,
      );
    }
    const cfg = path.join(folder, 'config.json');
    if (existsSync(cfg)) {
      config = readJson(cfg);
      where = cfg;
    } else if (!preset) {
      throw new UserError(
        `${folder} has no config.json and no preset was given: pass --model preset:<name>:${folder} (presets: ${presetNames().join(', ')}), or put the model's config.json next to its weights`,
      );
    }
  } else if (!preset) {
    throw new UserError('no model folder and no preset given: pass a model folder, or preset:<name>[:<folder>]');
  }
  let resolvedPreset = presetName;
  if (!preset && config) {
    resolvedPreset = detectPreset(config);
    preset = PRESETS[resolvedPreset];
  }
  const layout = config ? ('architecture' in config ? 'timm' : 'model_type' in config ? 'hf' : '') : preset!.layout;
  if (!layout) {
    throw new UserError(
      `${where} is neither a timm hub config (no "architecture") nor a transformers config (no "model_type")${preset ? '' : `: pass a preset (${presetNames().join(', ')})`}`,
    );
  }
  if (preset && layout !== preset.layout) {
    throw new UserError(
      `${where} is a ${layout} config but preset '${resolvedPreset}' describes a ${preset.layout} folder: drop the preset or use the folder of the model it names`,
    );
  }
  const merged: Json = preset ? structuredClone(preset.config) : {};
  if (config) {
    for (const [k, v] of Object.entries(config)) {
      if (
        k === 'model_args' &&
        merged.model_args &&
        typeof merged.model_args === 'object' &&
        v &&
        typeof v === 'object'
      ) {
        merged.model_args = { ...(merged.model_args as Json), ...(v as Json) };
      } else {
        merged[k] = v;
      }
    }
  }
  const spec = layout === 'timm' ? resolveTimm(merged, where) : resolveHf(merged, where);
  if (preset) {
    const cfgHasNorm =
      !!config && layout === 'timm' && !!config.pretrained_cfg && 'mean' in (config.pretrained_cfg as Json);
    if (!cfgHasNorm) {
      spec.mean = preset.norm[0].slice() as VitSpec['mean'];
      spec.std = preset.norm[1].slice() as VitSpec['std'];
    }
  }
  if (folder && layout === 'hf') {
    const pre = path.join(folder, 'preprocessor_config.json');
    if (existsSync(pre)) {
      const p = new Reader(readJson(pre), pre);
      spec.mean = p.triple('image_mean') ?? spec.mean;
      spec.std = p.triple('image_std') ?? spec.std;
      const crop = p.get('crop_size');
      if (crop !== undefined && p.flag('do_center_crop', true)) {
        if (typeof crop === 'object')
          spec.inputSize = new Reader(crop as Json, `${pre} crop_size`).integer('height', spec.inputSize);
        else if (typeof crop === 'number') spec.inputSize = crop;
      }
    }
  }
  spec.preset = preset ? resolvedPreset : '';
  spec.folder = folder;
  // Pooling: the override, else the one an export recorded (g2l_pool), else the preset's, else the config's.
  const recorded = config?.g2l_pool;
  if (recorded !== undefined && !(typeof recorded === 'string' && (POOLS as readonly string[]).includes(recorded))) {
    throw new UserError(`${where}: g2l_pool must be one of cls, mean, cls+mean`);
  }
  if (poolOverride) spec.pool = poolOverride as Pool;
  else if (recorded) spec.pool = recorded as Pool;
  else if (preset) spec.pool = preset.pool;
  if (!spec.pool)
    throw new UserError(
      `${where}: global_pool '' returns every token and says no pooling: pass a pooling (--pool cls, mean or cls+mean; pool in a distill config)`,
    );
  if (spec.pool === 'cls+mean' && spec.fcNorm) {
    throw new UserError(
      `${where}: cls+mean pooling on a model with fc_norm (timm global_pool 'avg') is not defined: fc_norm normalises one D-wide pooled vector; use --pool mean or cls`,
    );
  }
  if (spec.embedDim % spec.numHeads !== 0)
    throw new UserError(`${where}: embedding dim ${spec.embedDim} is not divisible by ${spec.numHeads} heads`);
  if (spec.patchSize <= 0 || spec.imgSize % spec.patchSize !== 0)
    throw new UserError(`${where}: image size ${spec.imgSize} is not a multiple of patch size ${spec.patchSize}`);
  if (spec.std.some((s) => !(s > 0))) throw new UserError(`${where}: std must be positive`);
  return spec;
}

/** Rows of the stored position embedding. */
export function posTokens(spec: VitSpec): number {
  const grid = spec.imgSize / spec.patchSize;
  if (spec.layout === 'hf') return grid * grid + 1;
  return grid * grid + (spec.noEmbedClass ? 0 : 1 + spec.numRegisters);
}

/** "timm vit_giant_patch14_reg4_dinov2 (dim 1536, depth 40, heads 24, patch 14, 4 registers, SwiGLU)" */
export function describeSpec(s: VitSpec): string {
  return (
    `${s.layout} ${s.family} (dim ${s.embedDim}, depth ${s.depth}, heads ${s.numHeads}, patch ${s.patchSize}` +
    `${s.numRegisters ? `, ${s.numRegisters} registers` : ''}, ${s.mlp === 'gelu' ? 'GELU MLP' : 'SwiGLU'}, pool ${s.pool})`
  );
}

/** Checkpoint key -> shape of every tensor of the spec, in its layout (what strict loading checks against). */
export function expectedShapes(spec: VitSpec): Map<string, number[]> {
  const d = spec.embedDim,
    p = spec.patchSize,
    r = spec.numRegisters,
    hid = spec.mlpHidden;
  const mlpIn = spec.mlp === 'gelu' ? hid : 2 * hid;
  const m = new Map<string, number[]>();
  if (spec.layout === 'timm') {
    m.set('cls_token', [1, 1, d]);
    if (r > 0) m.set('reg_token', [1, r, d]);
    m.set('pos_embed', [1, posTokens(spec), d]);
    m.set('patch_embed.proj.weight', [d, 3, p, p]);
    m.set('patch_embed.proj.bias', [d]);
    for (let i = 0; i < spec.depth; i++) {
      const s = `blocks.${i}.`;
      m.set(`${s}norm1.weight`, [d]);
      m.set(`${s}norm1.bias`, [d]);
      m.set(`${s}attn.qkv.weight`, [3 * d, d]);
      if (spec.qkvBias) m.set(`${s}attn.qkv.bias`, [3 * d]);
      m.set(`${s}attn.proj.weight`, [d, d]);
      m.set(`${s}attn.proj.bias`, [d]);
      if (spec.layerScale) m.set(`${s}ls1.gamma`, [d]);
      m.set(`${s}norm2.weight`, [d]);
      m.set(`${s}norm2.bias`, [d]);
      m.set(`${s}mlp.fc1.weight`, [mlpIn, d]);
      m.set(`${s}mlp.fc1.bias`, [mlpIn]);
      m.set(`${s}mlp.fc2.weight`, [d, hid]);
      m.set(`${s}mlp.fc2.bias`, [d]);
      if (spec.layerScale) m.set(`${s}ls2.gamma`, [d]);
    }
    const norm = spec.fcNorm ? 'fc_norm' : 'norm'; // timm use_fc_norm: norm is Identity, fc_norm after pooling
    m.set(`${norm}.weight`, [d]);
    m.set(`${norm}.bias`, [d]);
    if (spec.numClasses > 0) {
      m.set('head.weight', [spec.numClasses, d]);
      m.set('head.bias', [spec.numClasses]);
    }
  } else {
    m.set('embeddings.cls_token', [1, 1, d]);
    if (spec.maskToken) m.set('embeddings.mask_token', [1, d]);
    if (r > 0) m.set('embeddings.register_tokens', [1, r, d]);
    m.set('embeddings.position_embeddings', [1, posTokens(spec), d]);
    m.set('embeddings.patch_embeddings.projection.weight', [d, 3, p, p]);
    m.set('embeddings.patch_embeddings.projection.bias', [d]);
    const sw = spec.mlp === 'swiglu_hf';
    for (let i = 0; i < spec.depth; i++) {
      const s = `encoder.layer.${i}.`;
      m.set(`${s}norm1.weight`, [d]);
      m.set(`${s}norm1.bias`, [d]);
      for (const q of ['query', 'key', 'value']) {
        m.set(`${s}attention.attention.${q}.weight`, [d, d]);
        if (spec.qkvBias) m.set(`${s}attention.attention.${q}.bias`, [d]);
      }
      m.set(`${s}attention.output.dense.weight`, [d, d]);
      m.set(`${s}attention.output.dense.bias`, [d]);
      m.set(`${s}layer_scale1.lambda1`, [d]);
      m.set(`${s}norm2.weight`, [d]);
      m.set(`${s}norm2.bias`, [d]);
      m.set(`${s}mlp.${sw ? 'weights_in' : 'fc1'}.weight`, [mlpIn, d]);
      m.set(`${s}mlp.${sw ? 'weights_in' : 'fc1'}.bias`, [mlpIn]);
      m.set(`${s}mlp.${sw ? 'weights_out' : 'fc2'}.weight`, [d, hid]);
      m.set(`${s}mlp.${sw ? 'weights_out' : 'fc2'}.bias`, [d]);
      m.set(`${s}layer_scale2.lambda1`, [d]);
    }
    m.set('layernorm.weight', [d]);
    m.set('layernorm.bias', [d]);
  }
  return m;
}

/** Keys present in the checkpoint but unused by the forward pass (kept for export, never trained). */
export function isBufferKey(key: string): boolean {
  return key === 'embeddings.mask_token' || key === 'head.weight' || key === 'head.bias';
}

/** Parameters as timm / transformers count them (every checkpoint tensor). */
export function parameterCount(spec: VitSpec): number {
  let n = 0;
  for (const s of expectedShapes(spec).values()) n += s.reduce((a, b) => a * b, 1);
  return n;
}

/**
 * The student's training-only rates: its config.json's, replaced by the run's studentDrop overrides; a rate its
 * library does not have, or a non-zero patch drop, is refused rather than ignored. Both backends' students train
 * with these rates (the engine receives them in the student's spec).
 */
export function studentRegularization(
  spec: VitSpec,
  overrides: Partial<Record<keyof Regularization, number>> = {},
): Regularization {
  const r: Regularization = { ...spec.drop };
  const hf = spec.layout === 'hf';
  const supported: Record<keyof Regularization, boolean> = {
    dropPath: true,
    attnDrop: true,
    projDrop: !hf,
    posDrop: !hf,
    headDrop: !hf,
    hiddenDrop: hf,
    patchDrop: !hf,
  };
  for (const key of Object.keys(supported) as (keyof Regularization)[]) {
    const v = overrides[key];
    if (v === undefined) continue;
    if (!(typeof v === 'number' && v >= 0 && v <= 1))
      throw new UserError(`studentDrop.${key} must be a rate in [0, 1], got ${v}`);
    if (!supported[key] && v !== 0) {
      throw new UserError(
        `studentDrop.${key} is not a rate of a ${hf ? 'transformers (Dinov2) student: use dropPath, attnDrop, hiddenDrop' : 'timm student: use dropPath, attnDrop, projDrop, posDrop, headDrop'} (student: ${describeSpec(spec)})`,
      );
    }
    r[key] = v;
  }
  if (r.patchDrop > 0) {
    throw new UserError(
      `the student's config sets patch_drop_rate ${r.patchDrop} (timm PatchDropout, which drops tokens): not supported; set it to 0 in the student's config.json or override it with studentDrop.patchDrop 0 (student: ${describeSpec(spec)})`,
    );
  }
  return r;
}

/** The effective rates as info() reports them: the keys of the student's library. */
export function reportedDrop(spec: VitSpec, r: Regularization): Partial<Regularization> {
  return spec.layout === 'hf'
    ? { dropPath: r.dropPath, attnDrop: r.attnDrop, hiddenDrop: r.hiddenDrop }
    : { dropPath: r.dropPath, attnDrop: r.attnDrop, projDrop: r.projDrop, posDrop: r.posDrop, headDrop: r.headDrop };
}

/** Block i's drop-path rate: timm linspace(0, rate, depth)[i] in float32 as torch.linspace computes it; HF the rate. */
export function dropPathRate(spec: VitSpec, rate: number, i: number): number {
  if (spec.layout === 'hf' || rate <= 0) return spec.layout === 'hf' ? rate : 0;
  const n = spec.depth;
  if (n === 1) return 0;
  // torch.linspace (CPU, float32): step = (end - start) / (steps - 1); the first half from start, the second from end.
  const step = Math.fround(rate / (n - 1));
  const half = Math.floor(n / 2);
  return i < half ? Math.fround(step * i) : Math.fround(Math.fround(rate) - Math.fround(step * (n - 1 - i)));
}

// ---------------------------------------------------------------------------------------------------------------
// What an export writes, and the spec as the engine receives it
// ---------------------------------------------------------------------------------------------------------------

/** The files an export writes beside the weights: config.json and, for transformers, preprocessor_config.json. */
export interface ExportJson {
  config: string;
  preprocessor: string | null;
}

/**
 * config.json as export writes it: the folder's as read, with what reloading needs (g2l_pool, g2l_preset), or one
 * written for a model that has none; transformers' preprocessor_config.json likewise. Both backends export these.
 */
export function exportJson(spec: VitSpec): ExportJson {
  const read = (name: string): string | null => {
    const file = spec.folder ? path.join(spec.folder, name) : '';
    return file && existsSync(file) ? readFileSync(file, 'utf8') : null;
  };
  const config = read('config.json');
  return {
    config: config !== null ? recordedConfig(config, spec) : synthesizeConfig(spec),
    preprocessor: spec.layout === 'hf' ? (read('preprocessor_config.json') ?? synthesizePreprocessor(spec)) : null,
  };
}

/** The spec as the engine takes it (native/addon convert.cpp model_spec_from_js): every field, plus the export files. */
export type NativeModelSpec = VitSpec & { configJson: string; preprocessorJson: string };

export function nativeModelSpec(spec: VitSpec): NativeModelSpec {
  const files = exportJson(spec);
  return { ...spec, drop: { ...spec.drop }, configJson: files.config, preprocessorJson: files.preprocessor ?? '' };
}

/** A ratio r with trunc(dim * r) == hidden in double arithmetic, as timm and transformers compute widths. */
function widthRatio(hidden: number, dim: number): number {
  const r = hidden / dim;
  return Math.trunc(dim * r) === hidden ? r : (hidden + 0.5) / dim;
}

/** config.json for a model that has none (a random model). */
function synthesizeConfig(s: VitSpec): string {
  let c: Record<string, unknown>;
  if (s.layout === 'timm') {
    const fc1 = s.mlp === 'gelu' ? s.mlpHidden : 2 * s.mlpHidden;
    const args: Record<string, unknown> = {
      img_size: s.imgSize,
      patch_size: s.patchSize,
      embed_dim: s.embedDim,
      depth: s.depth,
      num_heads: s.numHeads,
      mlp_ratio: widthRatio(fc1, s.embedDim),
      init_values: s.layerScale ? (s.initValues > 0 ? s.initValues : 1e-5) : null,
      reg_tokens: s.numRegisters,
      no_embed_class: s.noEmbedClass,
      qkv_bias: s.qkvBias,
      // timm reads global_pool from model_args; fc_norm only where it differs from timm's default for that pool.
      global_pool: timmPool(s.pool),
      ...(s.fcNorm !== (s.pool === 'mean') ? { fc_norm: s.fcNorm } : {}),
    };
    // timm takes the MLP layer as a class in code, so a name here would stop timm.create_model: written only where
    // the architecture's default differs and no preset says it.
    const defaultMlp = timmDefaultMlp(s.family);
    if (
      (defaultMlp === null || (s.mlp === 'swiglu_packed') !== (defaultMlp === 'swiglu_packed')) &&
      !['uni2-h', 'virchow2', 'h0-mini'].includes(s.preset)
    ) {
      Object.assign(
        args,
        s.mlp === 'swiglu_packed'
          ? { mlp_layer: 'swiglu_packed', act_layer: 'silu' }
          : { mlp_layer: 'mlp', act_layer: 'gelu' },
      );
    }
    c = {
      architecture: s.family,
      num_classes: s.numClasses,
      num_features: s.embedDim,
      global_pool: timmPool(s.pool),
      model_args: args,
      ...(s.pool === 'cls+mean' ? { g2l_pool: s.pool } : {}),
      ...(s.preset ? { g2l_preset: s.preset } : {}),
      pretrained_cfg: {
        input_size: [3, s.inputSize, s.inputSize],
        interpolation: 'bicubic',
        crop_pct: 1.0,
        mean: s.mean,
        std: s.std,
        num_classes: s.numClasses,
      },
    };
  } else {
    const regs = s.numRegisters > 0;
    c = {
      architectures: [regs ? 'Dinov2WithRegistersModel' : 'Dinov2Model'],
      model_type: regs ? 'dinov2_with_registers' : 'dinov2',
      hidden_size: s.embedDim,
      num_hidden_layers: s.depth,
      num_attention_heads: s.numHeads,
      patch_size: s.patchSize,
      image_size: s.imgSize,
      layer_norm_eps: s.normEps,
      layerscale_value: s.initValues,
      qkv_bias: s.qkvBias,
      use_swiglu_ffn: s.mlp === 'swiglu_hf',
      mlp_ratio: s.mlp === 'gelu' ? widthRatio(s.mlpHidden, s.embedDim) : 4,
      ...(regs ? { num_register_tokens: s.numRegisters } : {}),
      hidden_act: 'gelu',
      // transformers configs have no pooling field: g2l_pool, read back by resolveVitSpec.
      ...(s.pool !== 'cls' ? { g2l_pool: s.pool } : {}),
      ...(s.preset ? { g2l_preset: s.preset } : {}),
    };
  }
  return `${JSON.stringify(c, null, 2)}\n`;
}

/** timm's global_pool for a pooling: cls+mean is not one of timm's (all tokens, '', with g2l_pool saying it). */
const timmPool = (pool: VitSpec['pool']): string => (pool === 'cls' ? 'token' : pool === 'mean' ? 'avg' : '');

/**
 * The folder's config.json as read, with g2l_pool added when the model's pooling is not the one the config says
 * (an override or a preset's), so that the exported folder reloads with the same pooling.
 */
function recordedConfig(configJson: string, s: VitSpec): string {
  const c = JSON.parse(configJson) as Record<string, unknown>;
  let own: string = 'cls';
  if (typeof c.g2l_pool === 'string') own = c.g2l_pool;
  else if (s.layout === 'timm') {
    const args = c.model_args as Record<string, unknown> | undefined;
    const gp =
      typeof args?.global_pool === 'string'
        ? args.global_pool
        : typeof c.global_pool === 'string'
          ? c.global_pool
          : 'token';
    own = gp === 'token' ? 'cls' : gp === 'avg' ? 'mean' : '';
  }
  // The preset the model needed, when its config.json alone does not lead back to it (g2l_preset, read by
  // detectPreset): the exported folder then reloads without naming it.
  const recordPreset = !!s.preset && detectPreset(c) !== s.preset;
  if (own === s.pool && !recordPreset) return configJson;
  if (own !== s.pool) c.g2l_pool = s.pool;
  if (recordPreset) c.g2l_preset = s.preset;
  return `${JSON.stringify(c, null, 2)}\n`;
}

function synthesizePreprocessor(s: VitSpec): string {
  return `${JSON.stringify(
    {
      crop_size: { height: s.inputSize, width: s.inputSize },
      do_center_crop: true,
      do_normalize: true,
      do_rescale: true,
      do_resize: true,
      image_mean: s.mean,
      image_std: s.std,
      image_processor_type: 'BitImageProcessor',
      resample: 3,
      rescale_factor: 1 / 255,
      size: { shortest_edge: s.inputSize },
    },
    null,
    2,
  )}\n`;
}
