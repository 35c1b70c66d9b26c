// The worker thread that holds a js-backend Distiller, so that a step runs off the event loop as on the engine (the
// caller prepares the next batch meanwhile). Messages { op, id, ... } -> { id, ok, info, ... }.
import { parentPort, workerData } from 'node:worker_threads';
import { UserError } from '../../errors.js';
import { JsDistiller, type JsDistillerConfig } from './distill.js';

const port = parentPort!;
const fail = (id: number, e: unknown) =>
  port.postMessage({ id, ok: false, message: (e as Error).message, user: e instanceof UserError });

let distiller: JsDistiller;
try {
  distiller = await JsDistiller.create(workerData as JsDistillerConfig);
  port.postMessage({ id: 0, ok: true, info: distiller.info() });
} catch (e) {
  fail(0, e);
}

port.on(
  'message',
  async (m: {
    op: string;
    id: number;
    tiles?: { data: Uint8Array; shape: number[] };
    which?: 'student' | 'teacher';
    folder?: string;
  }) => {
    try {
      let value: unknown;
      if (m.op === 'step') value = await distiller.step(m.tiles!);
      else if (m.op === 'features') value = await distiller.features(m.tiles!, m.which!);
      else if (m.op === 'save') await distiller.save(m.folder!);
      else if (m.op === 'load') await distiller.load(m.folder!);
      else if (m.op === 'exportStudent') await distiller.exportStudent(m.folder!);
      port.postMessage({ id: m.id, ok: true, value, info: distiller.info() });
    } catch (e) {
      fail(m.id, e);
    }
  },
);
