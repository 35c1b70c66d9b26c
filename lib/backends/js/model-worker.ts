// The worker thread that holds a js-backend model, so that embedding runs off the event loop as on the engine
// (docs/architecture.md: every heavy call is async and runs off the event loop). One worker per loaded model; messages:
// { op: 'embed' | 'export' | 'dispose', id, ... } -> { id, ok, ... }.
import { parentPort, workerData } from 'node:worker_threads';
import { UserError } from '../../errors.js';
import { createJsModel, loadJsModel, type JsModel } from './model.js';

interface Start {
  kind: 'load' | 'create';
  folder: string;
  preset: string;
  seed: number;
  options: { device?: string; dtype?: string; force?: boolean; pool?: string };
}

const port = parentPort!;
const start = workerData as Start;
const fail = (id: number, e: unknown) =>
  port.postMessage({ id, ok: false, message: (e as Error).message, user: e instanceof UserError });

let model: JsModel;
try {
  model =
    start.kind === 'load'
      ? loadJsModel(start.folder, start.preset, start.options)
      : createJsModel(start.folder, start.preset, start.seed, start.options);
  port.postMessage({ id: 0, ok: true, info: model.info() });
} catch (e) {
  fail(0, e);
}

port.on(
  'message',
  async (msg: { op: string; id: number; data?: Uint8Array | Float32Array; shape?: number[]; folder?: string }) => {
    try {
      if (msg.op === 'embed') {
        const out = model.embed({ data: msg.data as never, shape: msg.shape! });
        port.postMessage({ id: msg.id, ok: true, data: out.data, shape: out.shape }, [out.data.buffer as ArrayBuffer]);
      } else if (msg.op === 'export') {
        await model.exportTo(msg.folder!);
        port.postMessage({ id: msg.id, ok: true });
      } else if (msg.op === 'dispose') {
        model.dispose();
        port.postMessage({ id: msg.id, ok: true });
        port.close();
      }
    } catch (e) {
      fail(msg.id, e);
    }
  },
);
