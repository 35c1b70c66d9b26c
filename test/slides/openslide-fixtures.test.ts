// The readers on real files written by the OpenSlide authors (../shared/data/openslide-fixtures, read in place):
// they report what that folder's README lists, and the corrupt files take the error paths.
import t from 'tap';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { openslideStatus } from '../../lib/slides/addon.js';
import { openSlide } from '../../lib/slides/reader.js';
import { slideThumbnail } from '../../lib/slides/tiling.js';
import { runTiling } from '../../lib/slides/tile-run.js';
import { TileSampler } from '../../lib/data/sampler.js';
import { SlideTileReader } from '../../lib/data/batches.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const FIXTURES = process.env.G2L_OPENSLIDE_FIXTURES ?? path.resolve(ROOT, '..', 'shared', 'data', 'openslide-fixtures');
const f = (name: string) => path.join(FIXTURES, name);
const os = openslideStatus();

if (!existsSync(FIXTURES)) {
  t.skip(
    `the OpenSlide fixtures are not here (${FIXTURES}); set G2L_OPENSLIDE_FIXTURES to their folder to run these tests`,
    () => {},
  );
} else {
  const osSkip = os.version ? false : `OpenSlide is not available (${os.error}); these tests need it`;

  t.test('small.svs: a real Aperio SVS, 16x16, with a 16x16 thumbnail', { skip: osSkip }, async (t) => {
    const s = await openSlide(f('small.svs'), { reader: 'openslide' });
    t.equal(s.info.vendor, 'aperio');
    t.same([s.info.width, s.info.height], [16, 16]);
    t.same(s.info.associatedImages, { thumbnail: [16, 16] });
    t.same(s.info.mpp, { x: 0.499, y: 0.499, source: 'openslide' });
    t.equal(s.info.objectivePower, 20);
    t.equal(s.info.properties['aperio.MPP'], '0.4990');
    const thumb = await s.readAssociatedImage('thumbnail');
    t.same([thumb.width, thumb.height, thumb.data.length], [16, 16, 16 * 16 * 3]);
    const region = await s.readRegion(0, 0, 0, 16, 16);
    t.equal(region.data.length, 16 * 16 * 3);
    await s.close();
    await t.rejects(s.readRegion(0, 0, 0, 4, 4), /closed/, 'a closed slide cannot be read');
  });

  t.test(
    'unreadable.svs: opens as aperio, reading fails with an OpenSlide error that sticks',
    { skip: osSkip },
    async (t) => {
      const s = await openSlide(f('unreadable.svs'), { reader: 'openslide' });
      t.equal(s.info.vendor, 'aperio');
      await t.rejects(s.readRegion(0, 0, 0, 16, 16), /OpenSlide cannot read a region of .*unreadable\.svs/);
      await t.rejects(s.readRegion(0, 0, 0, 1, 1), /unreadable\.svs/, 'the error is sticky for the handle');
      await s.close();
    },
  );

  t.test('unopenable.tiff: an unsupported-format error at open, from either reader', { skip: osSkip }, async (t) => {
    await t.rejects(
      openSlide(f('unopenable.tiff'), { reader: 'openslide' }),
      /OpenSlide cannot open .*unopenable\.tiff: Unsupported TIFF compression/,
    );
    await t.rejects(
      openSlide(f('unopenable.tiff')),
      /libvips cannot read it either/,
      'auto: libvips is tried too and its error added',
    );
  });

  t.test(
    'boxes.tiff: generic TIFF, 4 levels, thumbnail 100x83, ICC profile, pixels as boxes.png',
    { skip: osSkip },
    async (t) => {
      const s = await openSlide(f('boxes.tiff'), { reader: 'openslide' });
      t.equal(s.info.vendor, 'generic-tiff');
      t.same(s.info.levelDimensions, [
        [300, 250],
        [150, 125],
        [75, 62],
        [37, 31],
      ]);
      const ds = s.info.levelDownsamples;
      t.equal(ds[0], 1);
      t.equal(ds[1], 2);
      t.ok(Math.abs(ds[2] - 4) < 0.05 && Math.abs(ds[3] - 8) < 0.1, `downsamples ~4 and ~8: ${ds[2]}, ${ds[3]}`);
      t.equal(s.info.hasIccProfile, true);
      t.equal(s.info.mpp, null, 'its 72 dpi resolution is a placeholder, not a microscope mpp');
      const thumb = await slideThumbnail(s, 100, 100);
      t.same([thumb.width, thumb.height], [100, 83]);
      const png = await sharp(f('boxes.png')).removeAlpha().raw().toBuffer();
      const region = await s.readRegion(0, 0, 0, 300, 250);
      let maxDiff = 0;
      for (let i = 0; i < png.length; i++) maxDiff = Math.max(maxDiff, Math.abs(png[i] - region.data[i]));
      t.ok(maxDiff <= 2, `level 0 equals boxes.png (max difference ${maxDiff})`);
      const viaSharp = await openSlide(f('boxes.tiff'), { reader: 'sharp' });
      t.same(viaSharp.info.levelDimensions, s.info.levelDimensions, 'libvips sees the same pyramid');
      const region2 = await viaSharp.readRegion(150, 100, 1, 40, 20);
      const region1 = await s.readRegion(150, 100, 1, 40, 20);
      t.same(Array.from(region2.data), Array.from(region1.data), 'both readers give the same level-1 pixels');
      await s.close();
    },
  );

  // The DICOM pair is a 16 x 16 whole-slide image (both files' TotalPixelMatrixColumns/Rows tags say 16, boxes_1.dcm is
  // its THUMBNAIL instance), not the 300 x 250 boxes image, whatever the folder's README says.
  t.test(
    'boxes_0.dcm: DICOM opens with OpenSlide >= 4.0 (openslide-bin, preferred by the addon) and tiles',
    { skip: osSkip },
    async (t) => {
      const major = Number((os.version ?? '0').split('.')[0]);
      t.ok(
        major >= 4,
        `OpenSlide ${os.version} from ${os.library}: setup installs openslide-bin 4.x and the addon prefers it`,
      );
      const s = await openSlide(f('boxes_0.dcm'), { reader: 'openslide' });
      t.equal(s.info.vendor, 'dicom');
      t.same([s.info.width, s.info.height], [16, 16]);
      t.same(s.info.associatedImages, { thumbnail: [16, 16] });
      t.ok(s.info.mpp && Math.abs(s.info.mpp.x - 0.499) < 1e-9, 'the pixel spacing of the DICOM file');
      const whole = await s.readRegion(0, 0, 0, 16, 16);
      await s.close();
      // One 16 px tile at 0.5 um/px through the tile command and the extraction reader.
      const dir = t.testdir({ 'slides.csv': `slide,path\nboxes,${f('boxes_0.dcm')}\n` });
      const r = await runTiling({
        slides: path.join(dir, 'slides.csv'),
        out: path.join(dir, 'tiles'),
        tileSizePx: 16,
        tissueThreshold: 0,
      });
      t.equal(r.ok, 1, JSON.stringify(r.rows));
      const sampler = await TileSampler.open(path.join(dir, 'tiles'), { batchSize: 1 });
      t.same(
        sampler.tiles.map((x) => [x.x, x.y, x.level, x.readSizePx]),
        [[0, 0, 0, 16]],
      );
      const reader = new SlideTileReader();
      const data = new Uint8Array(16 * 16 * 3);
      await reader.readInto(sampler.tiles, 16, data, { strict: true });
      await reader.close();
      t.same(Buffer.from(data), Buffer.from(whole.data), 'the tile is the whole image');
    },
  );

  t.test('boxes.png: a plain image through sharp, no mpp', async (t) => {
    const s = await openSlide(f('boxes.png'));
    t.equal(s.info.reader, 'sharp');
    t.same([s.info.width, s.info.height], [300, 250]);
    t.same(s.info.levelDimensions, [[300, 250]]);
    t.equal(s.info.mpp, null);
    const r = await s.readRegion(290, 240, 0, 20, 20);
    t.same(Array.from(r.data.subarray(r.data.length - 3)), [255, 255, 255], 'outside the image reads white');
  });
}

t.test('a missing file is a one-line user error', async (t) => {
  await t.rejects(openSlide('/nonexistent/slide.svs'), {
    name: 'UserError',
    message: /slide not found: \/nonexistent\/slide\.svs/,
  });
});
