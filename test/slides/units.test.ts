// Small pieces checked against hand-worked values: mpp and objective power from properties, saturation, Otsu.
import t from 'tap';
import { aperioProperties, mppFromProperties, objectivePowerFromProperties } from '../../lib/slides/reader.js';
import { MaskIntegral, otsuThreshold, saturation } from '../../lib/slides/tissue.js';

t.test('mpp: openslide.mpp-x first, then Aperio MPP, then a plausible TIFF resolution', async (t) => {
  t.same(mppFromProperties({ 'openslide.mpp-x': '0.2527', 'openslide.mpp-y': '0.2527', 'aperio.MPP': '0.5' }), {
    x: 0.2527,
    y: 0.2527,
    source: 'openslide',
  });
  t.same(mppFromProperties({ 'aperio.MPP': '0.4990' }), { x: 0.499, y: 0.499, source: 'aperio' });
  // 20000 px/cm = 0.5 um/px; 50800 px/inch = 0.5 um/px
  t.same(
    mppFromProperties({
      'tiff.XResolution': '20000',
      'tiff.YResolution': '20000',
      'tiff.ResolutionUnit': 'centimeter',
    }),
    { x: 0.5, y: 0.5, source: 'tiff-resolution' },
  );
  t.same(mppFromProperties({ 'tiff.XResolution': '50800', 'tiff.ResolutionUnit': 'inch' }), {
    x: 0.5,
    y: 0.5,
    source: 'tiff-resolution',
  });
  t.equal(
    mppFromProperties({ 'tiff.XResolution': '72', 'tiff.YResolution': '72', 'tiff.ResolutionUnit': 'inch' }),
    null,
    '72 dpi is a placeholder',
  );
  t.equal(mppFromProperties({ 'tiff.XResolution': '20000' }), null, 'no unit, no mpp');
  t.equal(mppFromProperties({ 'openslide.mpp-x': '0', 'aperio.MPP': 'n/a' }), null);
  t.equal(objectivePowerFromProperties({ 'openslide.objective-power': '40' }), 40);
  t.equal(objectivePowerFromProperties({ 'aperio.AppMag': '20' }), 20);
  t.equal(objectivePowerFromProperties({}), null);
  t.same(
    aperioProperties(
      'Aperio Image Library v12.0.15 \r\n1x1 [0,0 1x1] (256x256) JPEG/RGB Q=90|AppMag = 40|MPP = 0.2500',
    ),
    { 'aperio.AppMag': '40', 'aperio.MPP': '0.2500' },
  );
  t.same(aperioProperties('generic description'), {});
});

t.test('saturation is OpenCV 8-bit HSV S = 255 (max - min) / max', async (t) => {
  const px = {
    data: Uint8Array.from([0, 0, 0, 255, 255, 255, 255, 0, 0, 200, 100, 150, 243, 242, 245]),
    width: 5,
    height: 1,
  };
  t.same(Array.from(saturation(px)), [0, 0, 255, Math.round((255 * 100) / 200), Math.round((255 * 3) / 245)]);
});

t.test('Otsu splits two modes between them and maximises the between-class variance', async (t) => {
  const values = new Uint8Array(1000);
  for (let i = 0; i < 1000; i++) values[i] = i < 700 ? 5 + (i % 7) : 80 + (i % 11);
  const thr = otsuThreshold(values);
  t.ok(thr >= 11 && thr < 80, `threshold ${thr} lies between the modes`);
  // brute force over every threshold
  const between = (th: number) => {
    const lo = [...values].filter((v) => v <= th),
      hi = [...values].filter((v) => v > th);
    if (!lo.length || !hi.length) return -1;
    const m = (a: number[]) => a.reduce((x, y) => x + y, 0) / a.length;
    return lo.length * hi.length * (m(lo) - m(hi)) ** 2;
  };
  let best = 0;
  for (let th = 0; th < 256; th++) if (between(th) > between(best)) best = th;
  t.equal(between(thr), between(best), 'same between-class variance as the brute-force optimum');
});

t.test('MaskIntegral: fraction of mask pixels whose centres fall in a rectangle', async (t) => {
  const w = 6,
    h = 4;
  const mask = new Uint8Array(w * h);
  for (let y = 0; y < h; y++) for (let x = 0; x < 3; x++) mask[y * w + x] = 1; // left half
  const m = new MaskIntegral({ width: w, height: h, mask, threshold: 0 });
  t.equal(m.fraction(0, 0, 6, 4), 0.5);
  t.equal(m.fraction(0, 0, 3, 4), 1);
  t.equal(m.fraction(2, 0, 4, 2), 0.5);
  t.equal(m.fraction(4, 0, 6, 4), 0);
  t.equal(m.fraction(10, 10, 12, 12), 0, 'outside the mask');
});

t.test('readThumbnail box-averages the nearest level in strips, as a brute-force average does', async (t) => {
  const { readThumbnail } = await import('../../lib/slides/tiling.js');
  const { openSlide } = await import('../../lib/slides/reader.js');
  const sharp = (await import('sharp')).default;
  const path = await import('node:path');
  const dir = t.testdir();
  const [w, h, f] = [1203, 157, 4];
  const img = new Uint8Array(w * h * 3);
  for (let i = 0; i < img.length; i++) img[i] = (i * 2654435761) >>> 24;
  const file = path.join(dir, 'wide.png');
  await sharp(Buffer.from(img), { raw: { width: w, height: h, channels: 3 } })
    .png()
    .toFile(file);
  const slide = await openSlide(file);
  const thumb = await readThumbnail(slide, f);
  t.same([thumb.width, thumb.height, thumb.downsample], [Math.floor(w / f), Math.floor(h / f), f]);
  let maxDiff = 0;
  for (let y = 0; y < thumb.height; y++)
    for (let x = 0; x < thumb.width; x++)
      for (let c = 0; c < 3; c++) {
        let sum = 0;
        for (let dy = 0; dy < f; dy++)
          for (let dx = 0; dx < f; dx++) sum += img[((y * f + dy) * w + x * f + dx) * 3 + c];
        maxDiff = Math.max(maxDiff, Math.abs(thumb.data[(y * thumb.width + x) * 3 + c] - Math.round(sum / (f * f))));
      }
  t.equal(maxDiff, 0, 'every thumbnail pixel is the mean of its f x f block');
});
