// npm's install hook. Without it npm would run `node-gyp rebuild` on its own (binding.gyp is present), which may
// try to download Node headers; the addons are built by `npm run setup` instead, with local headers.
process.stdout.write('g2l-native: the native addons and the TypeScript are built by `npm run setup`\n');
