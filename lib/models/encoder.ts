// The public Encoder: a teacher or student model that turns images into embeddings.
//
//   const enc = await Encoder.load('/models/h-optimus-0', { device: 'cuda', dtype: 'fp16', batchSize: 64 });
//   const { data, shape } = await enc.embed({ data: rgb, shape: [n, 224, 224, 3] });  // (n, 1536) float32
//   await enc.dispose();
//
// Calls run off the event loop (in the backend). Concurrent embed calls are queued and batched: calls made while a
// batch runs are concatenated (same input kind and size) into batches of at most batchSize images, and a large
// call is cut into batches of batchSize, so many small requests from a service cost what one big one does.
import { UserError } from '../errors.js';
import { chooseBackend } from '../backends/index.js';
import type {
  Backend,
  BackendName,
  EmbedInput,
  Float32Tensor,
  ModelDtype,
  ModelHandle,
  ModelPool,
  ModelInfo,
  ModelSource,
} from '../backends/types.js';
import { toModelSource } from './source.js';

export interface EncoderOptions {
  /** cpu, cuda, cuda:<i>. Default: cuda when the backend has a CUDA device, else cpu. */
  device?: string;
  /** Default: fp32 on the CPU, fp16 on CUDA (the paper runs the teacher in half precision). */
  dtype?: ModelDtype;
  /** Images per forward pass (default 32). */
  batchSize?: number;
  /** cls | mean | cls+mean: overrides the model's pooling (its config's or its preset's). */
  pool?: ModelPool;
  /**
   * 'native' | 'js', or a Backend instance. Default: native; when the engine cannot load, load() and create() reject
   * with its EngineLoadError unless `fallback` is true (or allowBackendFallback() was called).
   */
  backend?: BackendName | Backend;
  /** Without a backend named: use the js backend (15-40x slower), after one warning, when the engine cannot load. */
  fallback?: boolean;
  /** js backend: load models it would need hours for instead of refusing them (--force). */
  force?: boolean;
}

export const DEFAULT_BATCH_SIZE = 32;

interface Pending {
  input: EmbedInput;
  kind: 'uint8' | 'float32';
  /** Per-image element count and spatial key: requests batch together only when these agree. */
  key: string;
  n: number;
  resolve: (out: Float32Tensor) => void;
  reject: (e: unknown) => void;
}

export class Encoder {
  readonly batchSize: number;
  private queue: Pending[] = [];
  private running: Promise<void> | null = null;
  private disposed = false;

  private constructor(
    private readonly handle: ModelHandle,
    readonly backend: Backend,
    batchSize: number,
  ) {
    this.batchSize = batchSize;
  }

  /** Loads a model folder (timm or transformers hub layout), `preset:<name>:<folder>`, or { preset, folder }. */
  static async load(source: string | ModelSource, options: EncoderOptions = {}): Promise<Encoder> {
    const src = toModelSource(source, options.pool);
    if (!src.folder) {
      throw new UserError(
        `preset '${src.preset}' names an architecture but no weights: pass { preset, folder } or preset:${src.preset}:<folder>`,
      );
    }
    const { backend, device, dtype, batchSize } = await resolveOptions(options);
    return new Encoder(await backend.loadModel(src, { device, dtype }), backend, batchSize);
  }

  /** The architecture of a folder or preset with random weights from `seed` (benchmarks, demos). */
  static async create(
    source: string | ModelSource,
    options: EncoderOptions & { seed?: number } = {},
  ): Promise<Encoder> {
    const src = toModelSource(source, options.pool);
    const { backend, device, dtype, batchSize } = await resolveOptions(options);
    return new Encoder(await backend.createModel(src, { device, dtype, seed: options.seed ?? 0 }), backend, batchSize);
  }

  /** family, dims (embedding width), inputSize (px), parameters, dtype, device, mean/std and the architecture. */
  get info(): ModelInfo {
    return this.handle.info;
  }

  /**
   * { data: Uint8Array, shape: [N,H,W,3] } RGB (resized to info.inputSize if needed, scaled, normalised with the
   * model's mean/std) or { data: Float32Array, shape: [N,3,H,W] } already normalised, used as given.
   * Returns { data: Float32Array, shape: [N, info.dims] }.
   */
  embed(input: EmbedInput): Promise<Float32Tensor> {
    if (this.disposed) return Promise.reject(new UserError('embed: the encoder has been disposed'));
    let pending: Omit<Pending, 'resolve' | 'reject'>;
    try {
      pending = checkInput(input, this.info.patchSize);
    } catch (e) {
      return Promise.reject(e);
    }
    if (pending.n === 0) return Promise.resolve({ data: new Float32Array(0), shape: [0, this.info.dims] });
    return new Promise((resolve, reject) => {
      this.queue.push({ ...pending, resolve, reject });
      // Start on the next turn so that calls made in the same tick share a batch.
      if (!this.running) this.running = new Promise((done) => setImmediate(() => this.drain().finally(done)));
    });
  }

  /** Writes the model in its folder's layout (config.json + model.safetensors), atomically. */
  async exportTo(folder: string): Promise<void> {
    if (this.disposed) throw new UserError('export: the encoder has been disposed');
    await this.idle();
    await this.handle.exportTo(folder);
  }

  /** Waits for queued calls, then frees the weights. Later calls reject. */
  async dispose(): Promise<void> {
    if (this.disposed) return;
    this.disposed = true;
    await this.idle();
    await this.handle.dispose();
  }

  private async idle(): Promise<void> {
    while (this.running) await this.running;
  }

  private async drain(): Promise<void> {
    try {
      while (this.queue.length > 0) {
        const head = this.queue[0];
        if (head.n >= this.batchSize) {
          this.queue.shift();
          await this.runLarge(head);
          continue;
        }
        // Gather queued requests that can share the head's batch, in arrival order.
        const group: Pending[] = [];
        let n = 0;
        this.queue = this.queue.filter((p) => {
          if (p.key !== head.key || n + p.n > this.batchSize) return true;
          group.push(p);
          n += p.n;
          return false;
        });
        await this.runGroup(group, n);
      }
    } finally {
      this.running = null;
    }
  }

  /** One request of at least batchSize images: cut into batches, results written into one output. */
  private async runLarge(p: Pending): Promise<void> {
    try {
      const perImage = p.input.data.length / p.n;
      let out: Float32Array | null = null;
      let d = 0;
      for (let start = 0; start < p.n; start += this.batchSize) {
        const count = Math.min(this.batchSize, p.n - start);
        const data = p.input.data.subarray(start * perImage, (start + count) * perImage) as EmbedInput['data'];
        const y = await this.handle.embed({ data, shape: [count, ...p.input.shape.slice(1)] } as EmbedInput);
        d = y.shape[1];
        out ??= new Float32Array(p.n * d);
        out.set(y.data, start * d);
      }
      p.resolve({ data: out as Float32Array, shape: [p.n, d] });
    } catch (e) {
      p.reject(e);
    }
  }

  /** Several small requests concatenated into one forward pass, then split back. */
  private async runGroup(group: Pending[], n: number): Promise<void> {
    try {
      let input: EmbedInput;
      if (group.length === 1) {
        input = group[0].input;
      } else {
        const perImage = group[0].input.data.length / group[0].n;
        const data = group[0].kind === 'uint8' ? new Uint8Array(n * perImage) : new Float32Array(n * perImage);
        let off = 0;
        for (const p of group) {
          data.set(p.input.data as never, off);
          off += p.input.data.length;
        }
        input = { data, shape: [n, ...group[0].input.shape.slice(1)] } as EmbedInput;
      }
      const y = await this.handle.embed(input);
      const d = y.shape[1];
      if (group.length === 1) {
        group[0].resolve(y);
        return;
      }
      let row = 0;
      for (const p of group) {
        p.resolve({ data: y.data.slice(row * d, (row + p.n) * d), shape: [p.n, d] });
        row += p.n;
      }
    } catch (e) {
      for (const p of group) p.reject(e);
    }
  }
}

async function resolveOptions(
  options: EncoderOptions,
): Promise<{ backend: Backend; device: string; dtype: ModelDtype; batchSize: number }> {
  const backend =
    typeof options.backend === 'object'
      ? options.backend
      : chooseBackend({ backend: options.backend, fallback: options.fallback, force: options.force }).backend;
  let device = options.device;
  if (!device) device = (await backend.info()).cudaAvailable ? 'cuda' : 'cpu';
  if (!/^(cpu|cuda(:\d+)?)$/.test(device))
    throw new UserError(`unknown device '${device}': use cpu, cuda or cuda:<index>`);
  const dtype = options.dtype ? normalizeDtype(options.dtype) : device === 'cpu' ? 'fp32' : 'fp16';
  if (device === 'cpu' && dtype !== 'fp32') {
    throw new UserError(`dtype ${dtype} runs on CUDA devices only: use --dtype fp32 on the CPU, or --device cuda`);
  }
  const batchSize = options.batchSize ?? DEFAULT_BATCH_SIZE;
  if (!Number.isInteger(batchSize) || batchSize < 1)
    throw new UserError(`batch size must be a positive integer, got ${batchSize}`);
  return { backend, device, dtype, batchSize };
}

const DTYPE_ALIASES: Record<string, ModelDtype> = {
  fp32: 'fp32',
  float32: 'fp32',
  float: 'fp32',
  fp16: 'fp16',
  float16: 'fp16',
  half: 'fp16',
  bf16: 'bf16',
  bfloat16: 'bf16',
};

/** fp32 | fp16 | bf16, also written float32 | float16 | bfloat16. */
export function normalizeDtype(dtype: string): ModelDtype {
  const d = DTYPE_ALIASES[dtype];
  if (!d) throw new UserError(`unknown dtype '${dtype}': use fp32, fp16 or bf16`);
  return d;
}

/** Validates an embed input; returns its kind, image count and batching key. */
function checkInput(
  input: EmbedInput,
  patchSize: number,
): Omit<Pending, 'resolve' | 'reject' | 'input'> & { input: EmbedInput } {
  if (!input || typeof input !== 'object' || !ArrayBuffer.isView(input.data) || !Array.isArray(input.shape)) {
    throw new UserError(
      'embed: expected { data: Uint8Array, shape: [N,H,W,3] } or { data: Float32Array, shape: [N,3,H,W] }',
    );
  }
  const { data, shape } = input;
  const shapeText = `[${shape.join(',')}]`;
  if (shape.length !== 4 || !shape.every((d) => Number.isInteger(d) && d >= 0)) {
    throw new UserError(`embed: shape ${shapeText} must have 4 non-negative integer dimensions`);
  }
  const numel = shape.reduce((a, b) => a * b, 1);
  if (data.length !== numel)
    throw new UserError(`embed: data has ${data.length} elements but shape ${shapeText} needs ${numel}`);
  if (data instanceof Uint8Array) {
    if (shape[3] !== 3) throw new UserError(`embed: uint8 images must be (N,H,W,3) RGB, got ${shapeText}`);
    if (shape[1] < 1 || shape[2] < 1)
      throw new UserError(`embed: uint8 images of ${shape[1]}x${shape[2]} px are empty`);
    return { input, kind: 'uint8', n: shape[0], key: `u8:${shape[1]}x${shape[2]}` };
  }
  if (data instanceof Float32Array) {
    if (shape[1] !== 3) throw new UserError(`embed: float32 images must be (N,3,H,W) normalised, got ${shapeText}`);
    if (shape[2] < patchSize || shape[3] < patchSize) {
      throw new UserError(
        `embed: float32 images of ${shape[2]}x${shape[3]} px are smaller than one ${patchSize} px patch`,
      );
    }
    return { input, kind: 'float32', n: shape[0], key: `f32:${shape[2]}x${shape[3]}` };
  }
  throw new UserError(
    `embed: data must be a Uint8Array (N,H,W,3) or a Float32Array (N,3,H,W), got ${(data as ArrayBufferView).constructor.name}`,
  );
}
