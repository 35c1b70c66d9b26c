// Tile batch buffers from the backend (pinned on CUDA machines) hold tiles the augmentation reads like any other.
import t from 'tap';
import { NORMALIZATIONS } from '../../lib/backends/types.js';
import { backends, maxAbsDiff } from './helpers.js';

t.test('allocateTileBuffer gives writable memory that augmentBatch reads', async (t) => {
  for (const backend of backends()) {
    const [b, h, w] = [3, 40, 40];
    const buf = backend.allocateTileBuffer(b * h * w * 3, { pinned: true });
    t.ok(buf instanceof Uint8Array, `${backend.name}: a Uint8Array`);
    t.equal(buf.length, b * h * w * 3);
    for (let i = 0; i < buf.length; i++) buf[i] = (i * 7919) & 255;
    const copy = new Uint8Array(buf);
    const cfg = { crop: 32, blurKernel: 5 };
    const a = await backend.augmentBatch(
      { data: buf, shape: [b, h, w, 3] },
      { seed: 1 },
      cfg,
      NORMALIZATIONS.hOptimus0,
      NORMALIZATIONS.hibou,
    );
    const c = await backend.augmentBatch(
      { data: copy, shape: [b, h, w, 3] },
      { seed: 1 },
      cfg,
      NORMALIZATIONS.hOptimus0,
      NORMALIZATIONS.hibou,
    );
    t.equal(
      maxAbsDiff(a.student.data, c.student.data).max,
      0,
      `${backend.name}: same views from the engine buffer and a plain one`,
    );
  }
});
