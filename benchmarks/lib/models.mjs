// The benchmark models: small random members of the real families, written as hub folders that the engine, the
// js backend and timm / transformers all load. Teacher: timm vit_giant_patch14_reg4_dinov2 (H-optimus-0's family:
// packed SwiGLU, LayerScale, 4 registers, no_embed_class). Student: transformers dinov2_with_registers with SwiGLU
// (Hibou's family). Sized so that a js distill step of batch 8 takes tens of seconds on one core.
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { createJsModel } from '../../dist/backends/js/model.js';

export const BENCH_MODELS = {
  teacher: {
    architecture: 'vit_giant_patch14_reg4_dinov2',
    num_classes: 0,
    global_pool: 'token',
    model_args: { img_size: 224, init_values: 1e-5, embed_dim: 192, depth: 4, num_heads: 3 },
    pretrained_cfg: {
      input_size: [3, 224, 224],
      mean: [0.707223, 0.578729, 0.703617],
      std: [0.211883, 0.230117, 0.177517],
    },
  },
  student: {
    architectures: ['Dinov2WithRegistersModel'],
    model_type: 'dinov2_with_registers',
    hidden_size: 128,
    num_hidden_layers: 4,
    num_attention_heads: 2,
    mlp_ratio: 4,
    use_swiglu_ffn: true,
    num_register_tokens: 4,
    image_size: 224,
    patch_size: 14,
    layer_norm_eps: 1e-6,
    layerscale_value: 1e-5,
    hidden_act: 'gelu',
  },
};

const HIBOU_NORM = { image_mean: [0.7068, 0.5755, 0.722], image_std: [0.195, 0.2316, 0.1816] };

/**
 * Writes (or rewrites) teacher/ and student/ under `root` with random weights from `seed`; returns their folders.
 * @param {string} root
 * @param {number} [seed]
 * @returns {Promise<{ teacher: string, student: string }>}
 */
export async function writeBenchModels(root, seed = 0) {
  const out = { teacher: '', student: '' };
  for (const name of /** @type {const} */ (['teacher', 'student'])) {
    const config = BENCH_MODELS[name];
    const dir = path.join(root, name);
    mkdirSync(dir, { recursive: true });
    writeFileSync(path.join(dir, 'config.json'), `${JSON.stringify(config, null, 2)}\n`);
    if ('model_type' in config) {
      writeFileSync(
        path.join(dir, 'preprocessor_config.json'),
        `${JSON.stringify(
          {
            crop_size: { height: 224, width: 224 },
            do_center_crop: true,
            do_normalize: true,
            do_rescale: true,
            do_resize: true,
            image_processor_type: 'BitImageProcessor',
            resample: 3,
            rescale_factor: 1 / 255,
            size: { shortest_edge: 224 },
            ...HIBOU_NORM,
          },
          null,
          2,
        )}\n`,
      );
    }
    const model = createJsModel(dir, '', seed + (name === 'teacher' ? 0 : 1));
    await model.exportTo(dir);
    out[name] = dir;
  }
  return out;
}
