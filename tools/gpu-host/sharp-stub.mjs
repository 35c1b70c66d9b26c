// A stand-in for `sharp` on the GPU host, where npm packages are not carried: tools/gpu-host/pack.mjs installs it as
// node_modules/sharp/index.js (for the compiled tests; .gpu/tests/setup-root.sh puts it at the repo root for dist/
// only when no real sharp is there). lib/ imports sharp statically (tiles, slides, data); the CUDA-path tests and the
// GPU benchmark never decode or encode an image, so importing it must work and any use must fail loudly.
const MESSAGE =
  'sharp is not carried to the GPU host (this is the stub of tools/gpu-host/sharp-stub.mjs): image decoding and encoding are unavailable here';

function sharp() {
  throw new Error(MESSAGE);
}

const stub = new Proxy(sharp, {
  get(target, prop) {
    // Let the module system and inspection see a plain function; everything else (sharp.versions, sharp.cache...) fails.
    if (typeof prop === 'symbol' || prop === 'then' || prop === 'name' || prop === 'length' || prop === 'prototype')
      return Reflect.get(target, prop);
    throw new Error(`${MESSAGE} (sharp.${prop})`);
  },
});

export default stub;
