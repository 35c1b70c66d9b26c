// Runs one compiled test file under the tap shim (tools/gpu-host/tap-shim.mjs): imports it, waits for every queued
// subtest, prints the summary line and exits 1 if anything failed. tools/gpu-host/pack.mjs copies this file to
// .gpu/tests/run-one.mjs, beside node_modules/tap, so that the file and this runner share one shim instance.
//   node .gpu/tests/run-one.mjs .gpu/tests/test/models/cuda.test.js
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import 'tap';

const KEY = Symbol.for('g2l-native.tap-shim');
const shim = globalThis[KEY];
if (!shim)
  throw new Error(
    'run-one.mjs: the tap shim is not the `tap` this file resolves (expected node_modules/tap beside it)',
  );
const file = process.argv[2];
if (!file) {
  process.stderr.write('usage: node run-one.mjs <compiled test file>\n');
  process.exit(2);
}
const here = path.dirname(new URL(import.meta.url).pathname);
shim.driven(path.relative(here, path.resolve(file)));
try {
  await import(pathToFileURL(path.resolve(file)).href);
} catch (er) {
  shim.loadFailed(er);
}
const code = await shim.finish();
// Exit now: worker threads, sockets or native handles a test left open must not keep the run alive.
process.exit(code);
