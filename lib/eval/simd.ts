// The one hot loop of evaluation, C = A·Bᵀ over rows of A and B that are contiguous in memory, as a WebAssembly
// SIMD kernel. V8 runs plain JavaScript dot products at about 1.5 GMAC/s (every Float32Array element becomes a
// double); 128-bit lanes with a 2x4 register tile run several times faster, which is what lets kNN on
// 100k x 1536 features finish in minutes. The module is assembled here, byte by byte, so there is no build step
// and no dependency: one function per precision.
//
// Layout contract (the caller pads): A is [m, d] and B is [n, d] row-major with d a multiple of the lane count
// (4 for f32, 2 for f64), m a multiple of 2 and n a multiple of 4; C is [m, ldc] row-major. All pointers are
// byte offsets into the module's memory. `accumulate` 1 adds into C instead of overwriting it.

const I32 = 0x7f;
const V128 = 0x7b;

function uleb(n: number): number[] {
  const out: number[] = [];
  do {
    let byte = n & 0x7f;
    n >>>= 7;
    if (n !== 0) byte |= 0x80;
    out.push(byte);
  } while (n !== 0);
  return out;
}

function sleb(n: number): number[] {
  const out: number[] = [];
  for (;;) {
    const byte = n & 0x7f;
    n >>= 7;
    if ((n === 0 && (byte & 0x40) === 0) || (n === -1 && (byte & 0x40) !== 0)) {
      out.push(byte);
      return out;
    }
    out.push(byte | 0x80);
  }
}

function section(id: number, body: number[]): number[] {
  return [id, ...uleb(body.length), ...body];
}

function vec(items: number[][]): number[] {
  return [...uleb(items.length), ...items.flat()];
}

function str(s: string): number[] {
  return [...uleb(s.length), ...[...s].map((c) => c.charCodeAt(0))];
}

// Core opcodes used below.
const op = {
  block: 0x02,
  loop: 0x03,
  end: 0x0b,
  brIf: 0x0d,
  localGet: 0x20,
  localSet: 0x21,
  localTee: 0x22,
  i32Const: 0x41,
  i32Add: 0x6a,
  i32Mul: 0x6c,
  i32LtU: 0x49,
  i32Shl: 0x74,
  f32Load: 0x2a,
  f64Load: 0x2b,
  f32Store: 0x38,
  f64Store: 0x39,
  f32Add: 0x92,
  f64Add: 0xa0,
  simd: 0xfd,
};
// SIMD sub-opcodes (after the 0xfd prefix).
const sop = {
  load: 0x00,
  const: 0x0c,
  f32x4Extract: 0x1f,
  f64x2Extract: 0x21,
  f32x4Add: 0xe4,
  f32x4Mul: 0xe6,
  f64x2Add: 0xf0,
  f64x2Mul: 0xf2,
};

type Precision = 'f32' | 'f64';

/** Body of `nt(a, b, c, m, n, d, ldc, accumulate)` for one precision. */
function ntKernel(p: Precision): number[] {
  const elt = p === 'f32' ? 4 : 8;
  const lanes = 16 / elt;
  const vAdd = p === 'f32' ? sop.f32x4Add : sop.f64x2Add;
  const vMul = p === 'f32' ? sop.f32x4Mul : sop.f64x2Mul;
  const extract = p === 'f32' ? sop.f32x4Extract : sop.f64x2Extract;
  const sAdd = p === 'f32' ? op.f32Add : op.f64Add;
  const sLoad = p === 'f32' ? op.f32Load : op.f64Load;
  const sStore = p === 'f32' ? op.f32Store : op.f64Store;
  const align = p === 'f32' ? 2 : 3;
  const shift = p === 'f32' ? 2 : 3;
  // params 0..7: a b c m n d ldc accumulate
  const [A, B, C, M, N, D, LDC, ACC] = [0, 1, 2, 3, 4, 5, 6, 7];
  // i32 locals
  const I = 8,
    J = 9,
    K = 10,
    PA0 = 11,
    PA1 = 12,
    PB0 = 13,
    PB1 = 14,
    PB2 = 15,
    PB3 = 16,
    ROW = 17,
    END = 18,
    PC = 19;
  // v128 locals: 8 accumulators, 2 A vectors, 1 B vector
  const ACC0 = 20,
    VA0 = 28,
    VA1 = 29,
    VB = 30;
  // scalar local of the precision
  const SUM = 31;
  const g = (l: number) => [op.localGet, ...uleb(l)];
  const s = (l: number) => [op.localSet, ...uleb(l)];
  const c32 = (v: number) => [op.i32Const, ...sleb(v)];
  const simd = (o: number, ...imm: number[]) => [op.simd, ...uleb(o), ...imm];
  const body: number[] = [];
  const e = (...b: (number | number[])[]) => {
    for (const x of b) {
      if (Array.isArray(x)) body.push(...x);
      else body.push(x);
    }
  };

  e(c32(0), s(I));
  e(op.loop, 0x40); // rows of A, two at a time
  e(c32(0), s(J));
  e(op.loop, 0x40); // rows of B, four at a time
  // ROW = d * elt bytes; PA0 = a + i*ROW; PA1 = PA0 + ROW; PBx = b + j*ROW + x*ROW
  e(g(D), c32(shift), op.i32Shl, s(ROW));
  e(g(A), g(I), g(ROW), op.i32Mul, op.i32Add, s(PA0));
  e(g(PA0), g(ROW), op.i32Add, s(PA1));
  e(g(B), g(J), g(ROW), op.i32Mul, op.i32Add, s(PB0));
  e(g(PB0), g(ROW), op.i32Add, s(PB1));
  e(g(PB1), g(ROW), op.i32Add, s(PB2));
  e(g(PB2), g(ROW), op.i32Add, s(PB3));
  for (let t = 0; t < 8; t++) e(simd(sop.const, ...new Array(16).fill(0)), s(ACC0 + t));
  e(c32(0), s(K), g(ROW), s(END));
  e(op.loop, 0x40); // the shared dimension, one 16-byte vector at a time
  e(g(PA0), g(K), op.i32Add, simd(sop.load, 4, 0), s(VA0));
  e(g(PA1), g(K), op.i32Add, simd(sop.load, 4, 0), s(VA1));
  const pbs = [PB0, PB1, PB2, PB3];
  for (let col = 0; col < 4; col++) {
    e(g(pbs[col]), g(K), op.i32Add, simd(sop.load, 4, 0), s(VB));
    e(g(ACC0 + col), g(VA0), g(VB), simd(vMul), simd(vAdd), s(ACC0 + col));
    e(g(ACC0 + 4 + col), g(VA1), g(VB), simd(vMul), simd(vAdd), s(ACC0 + 4 + col));
  }
  e(g(K), c32(16), op.i32Add, op.localTee, ...uleb(K), g(END), op.i32LtU, op.brIf, 0);
  e(op.end);
  // Horizontal sums into C[(i+r)*ldc + j + col].
  for (let r = 0; r < 2; r++) {
    for (let col = 0; col < 4; col++) {
      // PC = c + (((i + r) * ldc + j + col) << shift)
      e(
        g(C),
        g(I),
        c32(r),
        op.i32Add,
        g(LDC),
        op.i32Mul,
        g(J),
        op.i32Add,
        c32(col),
        op.i32Add,
        c32(shift),
        op.i32Shl,
        op.i32Add,
        s(PC),
      );
      const acc = ACC0 + r * 4 + col;
      e(g(acc), simd(extract, 0));
      for (let lane = 1; lane < lanes; lane++) e(g(acc), simd(extract, lane), sAdd);
      e(s(SUM));
      // accumulate ? C[..] + sum : sum (select, so C is never read into the result when overwriting)
      e(g(PC), g(PC), sLoad, align, 0, g(SUM), sAdd, g(SUM), g(ACC), 0x1b);
      e(sStore, align, 0);
    }
  }
  e(g(J), c32(4), op.i32Add, op.localTee, ...uleb(J), g(N), op.i32LtU, op.brIf, 0);
  e(op.end);
  e(g(I), c32(2), op.i32Add, op.localTee, ...uleb(I), g(M), op.i32LtU, op.brIf, 0);
  e(op.end);
  e(op.end); // function
  const locals = vec([
    [...uleb(12), I32],
    [...uleb(11), V128],
    [1, p === 'f32' ? 0x7d : 0x7c],
  ]);
  const fn = [...locals, ...body];
  return [...uleb(fn.length), ...fn];
}

function moduleBytes(shared: boolean): Uint8Array {
  const type = [0x60, ...vec(new Array(8).fill([I32])), 0x00];
  const limits = shared ? [0x03, ...uleb(1), ...uleb(65536)] : [0x00, ...uleb(1)];
  const bytes = [
    0x00,
    0x61,
    0x73,
    0x6d,
    0x01,
    0x00,
    0x00,
    0x00,
    ...section(1, vec([type])),
    ...section(2, vec([[...str('e'), ...str('m'), 0x02, ...limits]])),
    ...section(3, vec([[0], [0]])),
    ...section(
      7,
      vec([
        [...str('nt32'), 0x00, 0],
        [...str('nt64'), 0x00, 1],
      ]),
    ),
    ...section(10, vec([ntKernel('f32'), ntKernel('f64')])),
  ];
  return Uint8Array.from(bytes);
}

// tsconfig's lib (ES2022, no DOM) has no WebAssembly declarations; the few used here are typed locally.
export interface WasmMemory {
  readonly buffer: ArrayBuffer | SharedArrayBuffer;
  grow(pages: number): number;
}
interface WasmApi {
  Module: new (bytes: Uint8Array) => object;
  Instance: new (mod: object, imports: object) => { exports: Record<string, unknown> };
  Memory: new (desc: { initial: number; maximum?: number; shared?: boolean }) => WasmMemory;
}
export const wasm = (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly;

export type NtKernel = (
  a: number,
  b: number,
  c: number,
  m: number,
  n: number,
  d: number,
  ldc: number,
  accumulate: number,
) => void;

export interface SimdKernels {
  memory: WasmMemory;
  /** f32 C[m, ldc] (+)= A[m, d] · B[n, d]ᵀ; m % 2 == 0, n % 4 == 0, d % 4 == 0; byte offsets. */
  nt32: NtKernel;
  /** f64 twin of nt32; d % 2 == 0. */
  nt64: NtKernel;
}

const compiled: { plain?: object; shared?: object } = {};

/** Instantiates the kernels over `memory` (a fresh growable memory when omitted). */
export function simdKernels(memory?: WasmMemory): SimdKernels {
  const shared = memory !== undefined && memory.buffer instanceof SharedArrayBuffer;
  const key = shared ? 'shared' : 'plain';
  const mod = compiled[key] ?? (compiled[key] = new wasm.Module(moduleBytes(shared)));
  const mem = memory ?? new wasm.Memory({ initial: 1 });
  const inst = new wasm.Instance(mod, { e: { m: mem } });
  const ex = inst.exports as unknown as { nt32: NtKernel; nt64: NtKernel };
  return { memory: mem, nt32: ex.nt32, nt64: ex.nt64 };
}
