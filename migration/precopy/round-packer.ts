/**
 * Packing one round of pages into page batches: a pure, synchronous generator with no I/O.
 * The caller iterates it and flushes (sends) each batch it yields before asking for the next;
 * between batches it may swap the payload buffer and refresh the skip bitmap in the sink.
 *
 * Per page: pages set in the sink's `toSkip` are left for the next round (Xen's to_skip); zero
 * pages go as zero ranges (or not at all when the digest says the target already holds zeros);
 * every other page is copied into the payload with copyBytes (a memcpy), a span per call, and
 * hashed in place over the sink's Int32Array view. Nothing is allocated per page: this is the
 * hot path of the page stream.
 */
import { PAGE_SIZE, type PageAccess } from '../../hypervisor/types';
import { hashPage, foldChecksum, type ImageDigest } from '../wire/page-hash';
import { dirtyRuns, testBit } from '../wire/range-table';
import { copyBytes } from '../wire/frame-codec';

/** The pages a round reads: the domain's geometry and its RAM. */
export type PageSource = Pick<PageAccess, 'pageCount' | 'slotPages' | 'pageView'>;

/** Where the packer writes: the caller may replace any field between two batches. */
export interface PackSink {
  /** The payload region of the current batch (its length is the batch's capacity). */
  payload: Buffer;
  /** An Int32Array view of exactly `payload` (hashPage reads words). */
  words: Int32Array;
  /** The live dirty bitmap: pages set here are skipped this round; undefined skips none. */
  toSkip: Uint32Array | undefined;
}

/** One packed batch: `payloadBytes` of the sink's payload hold its pages in range order. */
export interface PackedBatch {
  /** [first, count, ...] of the pages in the payload. */
  ranges: number[];
  /** [first, count, ...] of the pages the target must zero. */
  zeroRanges: number[];
  /** foldChecksum over the payload's pages, in order. */
  checksum: number;
  /** Payload bytes used. */
  payloadBytes: number;
  /** Pages in the payload. */
  pages: number;
  /** Pages in zeroRanges. */
  zeroPages: number;
  /** Pages of the round that need nothing sent: skipped (to_skip) or zero on both sides already. */
  settled: number;
}

/** The batch limits of a round. */
export interface PackLimits {
  /** Longest run read from guest RAM at once, pages (also the payload's capacity in pages). */
  maxRunPages: number;
  /** A batch is flushed at a run's end once ranges + zeroRanges hold this many entries. */
  maxRangeEntries: number;
}

/** A fresh, empty batch. */
function emptyBatch(): PackedBatch {
  return { ranges: [], zeroRanges: [], checksum: 0, payloadBytes: 0, pages: 0, zeroPages: 0, settled: 0 };
}

/**
 * Appends pages [start, end) to a range table, extending its last range when that ends at
 * `start` in the same memory slot: runs of the dirty bitmap end every maxRunPages pages, and a
 * batch that goes on across such an end still holds one range (the target decodes an encoded
 * batch of one range straight into guest RAM).
 */
function addRange(ranges: number[], start: number, end: number, slotPages: number): void {
  const n = ranges.length;
  if (n > 0 && ranges[n - 2] + ranges[n - 1] === start && start % slotPages !== 0) ranges[n - 1] += end - start;
  else ranges.push(start, end - start);
}

/**
 * Packs the pages set in `bitmap` into batches, updating `digest` with every page's hash as it
 * is packed. Yields each batch when its payload is full and when its range table is full at a
 * run's end (such batches always hold something), and finally the round's last batch, which
 * may be empty (see `hasContent`) and then only counts `settled` pages.
 *
 * Each span of pages not to skip is copied with one copyBytes (up to a whole 1 MiB payload,
 * not one call per 4 KiB page), then hashed in the payload; a zero page found there is dropped
 * by moving the pages after it down (a memmove inside the payload, rare: never-written pages
 * are not in round 1's bitmap). The hash is always of the bytes that go on the wire.
 */
export function* packRound(bitmap: Uint32Array, pages: PageSource, digest: ImageDigest, sink: PackSink, limits: PackLimits): Generator<PackedBatch, void> {
  const hashes = digest.hashes;
  const slot = pages.slotPages;
  let b = emptyBatch();
  let payload = sink.payload;
  let words = sink.words;
  let toSkip = sink.toSkip;
  for (const [first, count] of dirtyRuns(bitmap, pages.pageCount, limits.maxRunPages, pages.slotPages)) {
    const view = pages.pageView(first, count);
    const src = Buffer.from(view.buffer, view.byteOffset, view.byteLength);
    let runStart = -1;
    let zeroStart = -1;
    let i = 0;
    while (i < count) {
      if (toSkip && testBit(toSkip, first + i)) {
        const pfn = first + i;
        if (runStart >= 0) { addRange(b.ranges, runStart, pfn, slot); runStart = -1; }
        if (zeroStart >= 0) { addRange(b.zeroRanges, zeroStart, pfn, slot); zeroStart = -1; }
        b.settled++;
        i++;
        continue;
      }
      // The span [i, j): pages not to skip, at most the room left in the payload (>= 1 page).
      const limit = Math.min(count, i + (payload.length - b.payloadBytes) / PAGE_SIZE);
      let j = i + 1;
      while (j < limit && !(toSkip && testBit(toSkip, first + j))) j++;
      const base = b.payloadBytes;
      copyBytes(src, i * PAGE_SIZE, payload, base, (j - i) * PAGE_SIZE);
      let w = base; // where the next non-zero page of the span belongs
      for (let k = i; k < j; k++) {
        const pfn = first + k;
        const r = base + (k - i) * PAGE_SIZE;
        const h = hashPage(words, r >> 2);
        if (h === 0) {
          if (runStart >= 0) { addRange(b.ranges, runStart, pfn, slot); runStart = -1; }
          if (hashes[pfn] === 0) { b.settled++; continue; } // the target holds zeros already
          if (zeroStart < 0) zeroStart = pfn;
          b.zeroPages++;
          digest.set(pfn, 0);
          continue;
        }
        if (r !== w) payload.copyWithin(w, r, r + PAGE_SIZE);
        if (zeroStart >= 0) { addRange(b.zeroRanges, zeroStart, pfn, slot); zeroStart = -1; }
        if (runStart < 0) runStart = pfn;
        b.checksum = foldChecksum(b.checksum, pfn, h);
        digest.set(pfn, h);
        w += PAGE_SIZE;
        b.pages++;
      }
      b.payloadBytes = w;
      i = j;
      if (b.payloadBytes === payload.length) {
        // Full only when every page of the span was non-zero: the run is open, no zero range is.
        addRange(b.ranges, runStart, first + i, slot);
        runStart = -1;
        yield b;
        b = emptyBatch();
        ({ payload, words, toSkip } = sink);
      }
    }
    if (runStart >= 0) addRange(b.ranges, runStart, first + count, slot);
    if (zeroStart >= 0) addRange(b.zeroRanges, zeroStart, first + count, slot);
    if (b.ranges.length + b.zeroRanges.length >= limits.maxRangeEntries) {
      yield b;
      b = emptyBatch();
      ({ payload, words, toSkip } = sink);
    }
  }
  yield b; // the round's last batch, possibly empty
}

/** True when a batch carries anything for the target (pages or zero ranges). */
export function hasContent(b: PackedBatch): boolean {
  return b.pages > 0 || b.zeroRanges.length > 0;
}
