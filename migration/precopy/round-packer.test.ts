/**
 * The round packer on a plain in-memory page source: what goes in the payload, what as zero
 * ranges, what is skipped, where batches end, and that the checksum and digest match the pages.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PAGE_SIZE } from '../../hypervisor/types';
import { foldChecksum, hashPage, ImageDigest } from '../wire/page-hash';
import { setRanges } from '../wire/range-table';
import { hasContent, packRound, type PackedBatch, type PackLimits, type PackSink, type PageSource } from './round-packer';

/** `pages` pages of RAM; page p holds the byte p+1 at offset 0 when listed in `nonzero`. */
function memory(pages: number, nonzero: number[], slotPages = 1 << 20): PageSource & { ram: Buffer } {
  const ram = Buffer.alloc(pages * PAGE_SIZE);
  for (const p of nonzero) ram[p * PAGE_SIZE] = (p % 250) + 1;
  return { ram, pageCount: pages, slotPages, pageView: (pfn, count) => ram.subarray(pfn * PAGE_SIZE, (pfn + count) * PAGE_SIZE) };
}

function bitmapOf(pages: number, ranges: number[]): Uint32Array {
  const b = new Uint32Array(Math.ceil(pages / 32));
  setRanges(b, ranges);
  return b;
}

function sinkOf(capacityPages: number, toSkip?: Uint32Array): PackSink {
  const payload = Buffer.alloc(capacityPages * PAGE_SIZE);
  return { payload, words: new Int32Array(payload.buffer, payload.byteOffset, payload.length >> 2), toSkip };
}

/** Packs a round, copying each batch's payload out (the sink is reused, like a fresh builder). */
function pack(bitmap: Uint32Array, src: PageSource, digest: ImageDigest, sink: PackSink, limits: PackLimits): { batch: PackedBatch; payload: Buffer }[] {
  const out: { batch: PackedBatch; payload: Buffer }[] = [];
  for (const batch of packRound(bitmap, src, digest, sink, limits)) out.push({ batch, payload: Buffer.from(sink.payload.subarray(0, batch.payloadBytes)) });
  return out;
}

const WIDE: PackLimits = { maxRunPages: 64, maxRangeEntries: 64 };

test('non-zero pages go in the payload in range order; zero pages as zero ranges only when the target may not hold zeros', () => {
  const src = memory(16, [0, 1, 3, 8]);
  const digest = new ImageDigest(16);
  digest.set(5, 1234); // the target holds something non-zero at page 5: it must be zeroed
  const out = pack(bitmapOf(16, [0, 6]), src, digest, sinkOf(8), WIDE);
  assert.equal(out.length, 1);
  const { batch, payload } = out[0];
  assert.deepEqual(batch.ranges, [0, 2, 3, 1]);
  assert.deepEqual(batch.zeroRanges, [5, 1]);
  assert.equal(batch.pages, 3);
  assert.equal(batch.zeroPages, 1);
  assert.equal(batch.settled, 2, 'pages 2 and 4: zero, and the target holds zeros');
  assert.equal(batch.payloadBytes, 3 * PAGE_SIZE);
  assert.ok(payload.equals(Buffer.concat([src.pageView(0, 2), src.pageView(3, 1)])));
  assert.equal(digest.hashes[5], 0);
  assert.ok(hasContent(batch));
});

test('checksum and digest are those of the packed pages', () => {
  const src = memory(8, [1, 2, 6]);
  const digest = new ImageDigest(8);
  const [{ batch }] = pack(bitmapOf(8, [0, 8]), src, digest, sinkOf(8), WIDE);
  let checksum = 0;
  const expected = new ImageDigest(8);
  for (const p of [1, 2, 6]) {
    const v = src.pageView(p, 1);
    const h = hashPage(new Int32Array(v.buffer, v.byteOffset, PAGE_SIZE / 4), 0);
    checksum = foldChecksum(checksum, p, h);
    expected.set(p, h);
    assert.equal(digest.hashes[p], h);
  }
  assert.equal(batch.checksum, checksum);
  assert.ok(digest.digest().equals(expected.digest()));
});

test('pages set in the skip bitmap are left out and split ranges', () => {
  const src = memory(8, [0, 1, 2, 3, 4, 5, 6, 7]);
  const digest = new ImageDigest(8);
  const out = pack(bitmapOf(8, [0, 8]), src, digest, sinkOf(8, bitmapOf(8, [2, 2])), WIDE);
  assert.equal(out.length, 1);
  assert.deepEqual(out[0].batch.ranges, [0, 2, 4, 4]);
  assert.equal(out[0].batch.settled, 2);
  assert.equal(digest.hashes[2], 0, 'a skipped page is not recorded');
});

test('runs never cross a slot boundary', () => {
  const src = memory(8, [0, 1, 2, 3, 4, 5, 6, 7], 4);
  const [{ batch }] = pack(bitmapOf(8, [2, 4]), src, new ImageDigest(8), sinkOf(8), WIDE);
  assert.deepEqual(batch.ranges, [2, 2, 4, 2]);
});

test('a full payload flushes mid-run; the packer picks up the sink swapped in between batches', () => {
  const src = memory(10, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  const sink = sinkOf(4);
  const seen: Buffer[] = [];
  const batches: PackedBatch[] = [];
  for (const b of packRound(bitmapOf(10, [0, 10]), src, new ImageDigest(10), sink, WIDE)) {
    batches.push(b);
    seen.push(sink.payload);
    if (b.pages === 4) assert.equal(b.payloadBytes, sink.payload.length);
    Object.assign(sink, sinkOf(4)); // a fresh builder's payload, as the engine does
  }
  assert.deepEqual(batches.map((b) => b.ranges), [[0, 4], [4, 4], [8, 2]]);
  assert.equal(new Set(seen).size, 3, 'each batch went into the payload the sink held at the time');
});

test('a full range table flushes at the end of a run; an empty last batch is yielded without content', () => {
  // Four runs of two pages, the second of each zero: one range (two entries) per run.
  const src = memory(12, [0, 3, 6, 9]);
  const limits: PackLimits = { maxRunPages: 64, maxRangeEntries: 4 };
  const out: PackedBatch[] = [];
  for (const b of packRound(bitmapOf(12, [0, 2, 3, 2, 6, 2, 9, 2]), src, new ImageDigest(12), sinkOf(12), limits)) out.push(b);
  assert.deepEqual(out.map((b) => b.ranges), [[0, 1, 3, 1], [6, 1, 9, 1], []]);
  assert.equal(hasContent(out[2]), false);
  assert.equal(out.reduce((n, b) => n + b.settled, 0), 4, 'the zero pages count as settled');
});

test('a second round of an unchanged zero page sends nothing for it', () => {
  const src = memory(4, [1]);
  const digest = new ImageDigest(4);
  digest.set(0, 77);
  const first = pack(bitmapOf(4, [0, 2]), src, digest, sinkOf(4), WIDE);
  assert.deepEqual(first[0].batch.zeroRanges, [0, 1]);
  const second = pack(bitmapOf(4, [0, 1]), src, digest, sinkOf(4), WIDE);
  assert.equal(second.length, 1);
  assert.equal(hasContent(second[0].batch), false);
  assert.equal(second[0].batch.settled, 1);
});

test('zero and skipped pages inside a copied span: every payload holds exactly the pages its ranges name, checksums match', () => {
  const pages = 200;
  const nonzero: number[] = [];
  let x = 12345;
  const rnd = () => { x = (Math.imul(x, 1103515245) + 12345) >>> 0; return x / 2 ** 32; };
  for (let p = 0; p < pages; p++) if (rnd() < 0.7) nonzero.push(p);
  const src = memory(pages, nonzero, 64);
  const digest = new ImageDigest(pages);
  for (let p = 0; p < pages; p += 7) digest.set(p, 99); // the target may hold non-zero there: zero ranges needed
  const skip = bitmapOf(pages, [10, 3, 50, 1, 51, 1, 120, 9]);
  const out = pack(bitmapOf(pages, [0, pages]), src, digest, sinkOf(5, skip), { maxRunPages: 32, maxRangeEntries: 64 });
  const sent = new Set<number>();
  for (const { batch, payload } of out) {
    const expected: Buffer[] = [];
    let checksum = 0;
    for (let i = 0; i < batch.ranges.length; i += 2) {
      for (let p = batch.ranges[i]; p < batch.ranges[i] + batch.ranges[i + 1]; p++) {
        assert.ok(nonzero.includes(p), `page ${p} in a range is non-zero`);
        assert.ok(!sent.has(p));
        sent.add(p);
        const v = src.pageView(p, 1);
        expected.push(Buffer.from(v));
        checksum = foldChecksum(checksum, p, hashPage(new Int32Array(v.buffer, v.byteOffset, PAGE_SIZE / 4), 0));
      }
    }
    assert.ok(payload.equals(Buffer.concat(expected)), 'payload = the named pages, in range order');
    assert.equal(batch.checksum, checksum);
    assert.ok(batch.payloadBytes <= 5 * PAGE_SIZE);
  }
  const skipped = new Set([10, 11, 12, 50, 51, 120, 121, 122, 123, 124, 125, 126, 127, 128]);
  for (const p of nonzero) assert.equal(sent.has(p), !skipped.has(p), `page ${p} sent unless skipped`);
});

test('a batch that goes on across the end of a dirty run holds one range; a memory slot boundary still splits it', () => {
  const all = Array.from({ length: 40 }, (_, p) => p);
  // Runs end every 8 pages; batches hold 12: without merging, batch 1 would be [0,8, 8,4].
  const limits: PackLimits = { maxRunPages: 8, maxRangeEntries: 64 };
  const runs = pack(bitmapOf(40, [0, 40]), memory(40, all), new ImageDigest(40), sinkOf(12), limits).map((o) => o.batch.ranges);
  assert.deepEqual(runs.filter((r) => r.length > 0), [[0, 12], [12, 12], [24, 12], [36, 4]]);
  const slotted = pack(bitmapOf(40, [0, 40]), memory(40, all, 16), new ImageDigest(40), sinkOf(12), limits).map((o) => o.batch.ranges);
  assert.deepEqual(slotted.filter((r) => r.length > 0), [[0, 12], [12, 4, 16, 8], [24, 8, 32, 4], [36, 4]]);
});
