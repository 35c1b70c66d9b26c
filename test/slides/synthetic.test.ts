// The project's own slides (lib/slides/synthetic.ts): OpenSlide and libvips open what the generator writes with the
// properties it wrote, and tiling keeps the tiles the drawn tissue covers.
import t from 'tap';
import path from 'node:path';
import { openslideStatus } from '../../lib/slides/addon.js';
import { openSlide } from '../../lib/slides/reader.js';
import {
  randomTissueRegions,
  trueTissueFraction,
  writeNonSlide,
  writeSyntheticSvs,
  writeSyntheticTiff,
  writeTruncatedSlide,
  type SyntheticSlideSpec,
} from '../../lib/slides/synthetic.js';
import { planTiles, tileSlide } from '../../lib/slides/tiling.js';

const os = openslideStatus();
const osSkip = os.version ? false : `OpenSlide is not available (${os.error}); these tests need it`;

const svsSpec: SyntheticSlideSpec = {
  width: 4096,
  height: 3072,
  mpp: 0.25,
  regions: randomTissueRegions(4096, 3072, 11),
  seed: 3,
};
const tiffSpec: SyntheticSlideSpec = {
  width: 3072,
  height: 2048,
  mpp: 0.5,
  regions: randomTissueRegions(3072, 2048, 12),
  seed: 4,
};

t.test('the SVS opens in OpenSlide as Aperio with its MPP, AppMag and pyramid', { skip: osSkip }, async (t) => {
  const dir = t.testdir();
  const file = path.join(dir, 'a.svs');
  await writeSyntheticSvs(file, svsSpec);
  const s = await openSlide(file, { reader: 'openslide' });
  t.equal(s.info.vendor, 'aperio');
  t.same([s.info.width, s.info.height], [4096, 3072]);
  t.same(s.info.levelDimensions, [
    [4096, 3072],
    [2048, 1536],
    [1024, 768],
    [512, 384],
  ]);
  t.same(s.info.levelDownsamples, [1, 2, 4, 8]);
  t.same(s.info.mpp, { x: 0.25, y: 0.25, source: 'openslide' });
  t.equal(s.info.properties['aperio.MPP'], '0.2500');
  t.equal(s.info.objectivePower, 40);
  // A pixel inside the first region is stained (pink or purple), one in a corner is glass.
  const r = svsSpec.regions[0];
  const inside = await s.readRegion(Math.round(r.cx), Math.round(r.cy), 0, 1, 1);
  t.ok(inside.data[1] < 200 && inside.data[0] - inside.data[1] > 30, `tissue is stained: ${Array.from(inside.data)}`);
  const glass = await s.readRegion(0, 0, 0, 1, 1);
  t.ok(
    glass.data.every((v) => v > 230),
    `glass is bright: ${Array.from(glass.data)}`,
  );
  await s.close();
});

t.test('without OpenSlide, libvips reads the SVS and its Aperio MPP and AppMag from the description', async (t) => {
  const dir = t.testdir();
  const file = path.join(dir, 'a.svs');
  await writeSyntheticSvs(file, { ...svsSpec, width: 1024, height: 768, regions: randomTissueRegions(1024, 768, 2) });
  const s = await openSlide(file, { reader: 'sharp' });
  t.equal(s.info.vendor, 'aperio');
  t.same(s.info.levelDimensions, [
    [1024, 768],
    [512, 384],
  ]);
  t.same(s.info.mpp, { x: 0.25, y: 0.25, source: 'aperio' });
  t.equal(s.info.objectivePower, 40);
  t.match(s.info.properties['tiff.ImageDescription'], /^Aperio Image Library/);
});

t.test('the pyramidal TIFF opens as generic-tiff in OpenSlide and in libvips, mpp from its resolution', async (t) => {
  const dir = t.testdir();
  const file = path.join(dir, 'b.tiff');
  await writeSyntheticTiff(file, tiffSpec);
  const readers = os.version ? (['openslide', 'sharp'] as const) : (['sharp'] as const);
  const regions = [];
  for (const reader of readers) {
    const s = await openSlide(file, { reader });
    t.equal(s.info.reader, reader);
    if (reader === 'openslide') t.equal(s.info.vendor, 'generic-tiff');
    t.same(s.info.levelDimensions, [
      [3072, 2048],
      [1536, 1024],
      [768, 512],
      [384, 256],
    ]);
    t.ok(Math.abs(s.info.mpp!.x - 0.5) < 1e-3, `${reader}: mpp ${s.info.mpp?.x} from ${s.info.mpp?.source}`);
    t.equal(s.info.mpp!.source, 'tiff-resolution');
    regions.push(await s.readRegion(1000, 600, 1, 64, 48));
    await s.close();
  }
  if (regions.length === 2)
    t.same(Array.from(regions[0].data), Array.from(regions[1].data), 'both readers give the same pixels');
});

t.test("the truncated SVS and the non-slide file fail to open with the readers' messages", async (t) => {
  const dir = t.testdir();
  await writeTruncatedSlide(path.join(dir, 'cut.svs'), {
    ...svsSpec,
    width: 1024,
    height: 1024,
    regions: randomTissueRegions(1024, 1024, 1),
  });
  await writeNonSlide(path.join(dir, 'notes.tiff'));
  await t.rejects(openSlide(path.join(dir, 'cut.svs')), /cut\.svs/);
  await t.rejects(
    openSlide(path.join(dir, 'notes.tiff')),
    /notes\.tiff.*(not a format it reads|unsupported image format)/,
  );
});

t.test('planTiles reads the level nearest the target without upsampling, resizing beyond 5%', async (t) => {
  const dims: [number, number][] = [
    [40000, 30000],
    [10000, 7500],
    [2500, 1875],
  ];
  const ds = [1, 4, 16];
  const at40x = planTiles(dims, ds, 0.25, 0.5, 256);
  t.match(
    at40x,
    { level: 0, readSizePx: 512, stepL0: 512, cols: 78, rows: 58 },
    '0.25 um/px with levels 1,4,16: read 512 at level 0',
  );
  const close = planTiles(dims, ds, 0.49, 0.5, 256);
  t.match(close, { level: 0, readSizePx: 256 }, 'within 5%: read 256 as is');
  const coarse = planTiles(dims, ds, 0.125, 0.5, 256);
  t.match(coarse, { level: 1, readSizePx: 256, stepL0: 1024 }, '0.125 um/px: level 1 (x4) is exactly 0.5');
  const half = planTiles(
    [
      [1000, 1000],
      [500, 500],
    ],
    [1, 2],
    0.5,
    0.5,
    256,
  );
  t.match(half, { level: 0, readSizePx: 256, cols: 3, rows: 3 });
});

for (const [kind, spec] of [
  ['svs', svsSpec],
  ['tiff', tiffSpec],
] as const) {
  t.test(`${kind}: kept tiles follow the drawn tissue area`, { skip: kind === 'svs' ? osSkip : false }, async (t) => {
    const dir = t.testdir();
    const file = path.join(dir, `slide.${kind}`);
    await (kind === 'svs' ? writeSyntheticSvs(file, spec) : writeSyntheticTiff(file, spec));
    const s = await openSlide(file);
    const tiling = await tileSlide(s, spec.mpp, { targetMpp: 0.5, tileSizePx: 256, tissueThreshold: 0.5 });
    const { plan } = tiling;
    t.equal(plan.stepL0, Math.round((256 * 0.5) / spec.mpp), 'a tile spans 128 um of the slide');
    const kept = new Set(tiling.tiles.map((x) => `${x.x},${x.y}`));
    let expected = 0,
      missed = 0,
      spurious = 0;
    for (let r = 0; r < plan.rows; r++)
      for (let c = 0; c < plan.cols; c++) {
        const x = c * plan.stepL0,
          y = r * plan.stepL0;
        const truth = trueTissueFraction(spec.regions, x, y, plan.stepL0);
        if (truth >= 0.5) expected++;
        if (truth >= 0.75 && !kept.has(`${x},${y}`)) missed++;
        if (truth <= 0.25 && kept.has(`${x},${y}`)) spurious++;
      }
    t.equal(missed, 0, 'every tile at least 75% tissue is kept');
    t.equal(spurious, 0, 'no tile at most 25% tissue is kept');
    t.ok(expected > 10, `the slide has ${expected} tissue tiles`);
    t.ok(
      Math.abs(kept.size - expected) <= Math.max(2, 0.15 * expected),
      `kept ${kept.size} tiles, drawn tissue covers ${expected}`,
    );
    t.ok(
      tiling.tiles.every((x) => x.tissueFraction >= 0.5 && x.level === plan.level),
      'kept tiles pass the threshold, read at the planned level',
    );
    await s.close();
  });
}
