/**
 * Memory range tables: the pages of a batch as (first_pfn, count) pairs, built from a dirty
 * bitmap (bit i of word i>>5 = page i, as KVM's dirty log). After Cloud Hypervisor's
 * MemoryRangeTable. Ranges never cross a memory slot boundary, so each is one contiguous view.
 */

/** Number of set bits in one 32-bit word. */
function popcount32(v: number): number {
  v = v - ((v >>> 1) & 0x55555555);
  v = (v & 0x33333333) + ((v >>> 2) & 0x33333333);
  return Math.imul((v + (v >>> 4)) & 0x0f0f0f0f, 0x01010101) >>> 24;
}

/** Number of set bits in a bitmap. */
export function popcount(bitmap: Uint32Array): number {
  let n = 0;
  for (let i = 0; i < bitmap.length; i++) if (bitmap[i] !== 0) n += popcount32(bitmap[i]);
  return n;
}

/** A bitmap for `pageCount` pages with every bit set (round 1: every page). */
export function fullBitmap(pageCount: number): Uint32Array {
  const b = new Uint32Array(Math.ceil(pageCount / 32)).fill(0xffffffff);
  const tail = pageCount % 32;
  if (tail) b[b.length - 1] = (1 << tail) - 1 >>> 0;
  return b;
}

/**
 * Yields runs of set bits as [firstPfn, count], each at most `maxRun` pages and never crossing
 * a multiple of `slotPages`. Whole-word fast paths keep it cheap on sparse and full bitmaps.
 */
export function* dirtyRuns(bitmap: Uint32Array, pageCount: number, maxRun: number, slotPages: number): Generator<[number, number]> {
  let start = -1;
  let len = 0;
  for (let w = 0; w < bitmap.length; w++) {
    const word = bitmap[w];
    if (word === 0 && start < 0) continue;
    const base = w << 5;
    if (word === 0xffffffff && start >= 0 && len + 32 <= maxRun && Math.floor(start / slotPages) === Math.floor((base + 31) / slotPages) && base + 32 <= pageCount) {
      len += 32;
      continue;
    }
    for (let bit = 0; bit < 32; bit++) {
      const pfn = base + bit;
      if (pfn >= pageCount) break;
      if ((word >>> bit) & 1) {
        if (start >= 0 && (len >= maxRun || pfn % slotPages === 0)) {
          yield [start, len];
          start = -1;
        }
        if (start < 0) { start = pfn; len = 0; }
        len++;
      } else if (start >= 0) {
        yield [start, len];
        start = -1;
      }
    }
  }
  if (start >= 0) yield [start, len];
}

/** All runs of a bitmap as a flat range table [first, count, first, count, ...]. */
export function rangeTable(bitmap: Uint32Array, pageCount: number, maxRun = 0x7fffffff, slotPages = 0x7fffffff): number[] {
  const out: number[] = [];
  for (const [first, count] of dirtyRuns(bitmap, pageCount, maxRun, slotPages)) out.push(first, count);
  return out;
}

/** Sets bits [first, first + count) in `bitmap` a word at a time; returns how many were clear before. */
export function setRun(bitmap: Uint32Array, first: number, count: number): number {
  let fresh = 0;
  const end = first + count;
  for (let p = first; p < end;) {
    const w = p >>> 5;
    const lo = p & 31;
    const hi = Math.min(32, lo + (end - p));
    const mask = (hi === 32 ? 0xffffffff << lo : ((1 << hi) - 1) & (0xffffffff << lo)) >>> 0;
    const clear = mask & ~bitmap[w];
    if (clear !== 0) { fresh += popcount32(clear >>> 0); bitmap[w] |= mask; }
    p += hi - lo;
  }
  return fresh;
}

/** Sets the bits of a flat range table in `bitmap` (to fold unsent pages back); returns how many were clear before. */
export function setRanges(bitmap: Uint32Array, ranges: ArrayLike<number>): number {
  let fresh = 0;
  for (let i = 0; i < ranges.length; i += 2) fresh += setRun(bitmap, ranges[i], ranges[i + 1]);
  return fresh;
}

/** True when bit `pfn` is set. */
export function testBit(bitmap: Uint32Array, pfn: number): boolean {
  return ((bitmap[pfn >>> 5] >>> (pfn & 31)) & 1) === 1;
}
