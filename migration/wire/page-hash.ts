/**
 * Page hashes and the image digest.
 *
 * Every page that crosses the wire is hashed once on each side (fused with the sender's zero
 * test). A batch's checksum folds the hashes of its pages; the image digest is an order-free
 * sum over all pages of mix(pfn, hash), kept incrementally as pages are sent or applied, so
 * that verifying a whole image at switchover costs nothing (no pass over RAM in the downtime).
 *
 * The hash is a 4-lane multiply-rotate over 32-bit words: fast in V8 (3-4 GB/s on this class
 * of machine), not cryptographic — it guards against lost, stale and corrupted pages, not
 * against an adversary (the stream is authenticated by the migration token).
 */
import { PAGE_SIZE } from '../../hypervisor/types';
import { dirtyRuns } from './range-table';

const WORDS = PAGE_SIZE / 4;
const M1 = 0x9e3779b1 | 0;
const M2 = 0x85ebca77 | 0;
/** ofMemory reads memory in runs of at most this many pages (1 MiB): one view per run, not one per page. */
const OF_MEMORY_RUN_PAGES = 256;
/** ofMemory yields to the event loop after about this many pages (16 MiB). */
const OF_MEMORY_YIELD_PAGES = 4096;

/**
 * Hashes the page at word offset `wordOffset` of `words`; returns 0 exactly when the page is
 * all zero (so the hash doubles as the zero-page test), otherwise a non-zero 32-bit value.
 */
export function hashPage(words: Int32Array, wordOffset: number): number {
  let a = 0x243f6a88 | 0, b = 0x85a308d3 | 0, c = 0x13198a2e | 0, d = 0x03707344 | 0;
  let z = 0;
  const end = wordOffset + WORDS;
  for (let i = wordOffset; i < end; i += 4) {
    const w0 = words[i], w1 = words[i + 1], w2 = words[i + 2], w3 = words[i + 3];
    z |= w0 | w1 | w2 | w3;
    a = Math.imul(a ^ w0, M1); a = (a << 13) | (a >>> 19);
    b = Math.imul(b ^ w1, M1); b = (b << 13) | (b >>> 19);
    c = Math.imul(c ^ w2, M1); c = (c << 13) | (c >>> 19);
    d = Math.imul(d ^ w3, M1); d = (d << 13) | (d >>> 19);
  }
  if (z === 0) return 0;
  let h = Math.imul(a ^ ((b << 7) | (b >>> 25)), M2) ^ Math.imul(c ^ ((d << 11) | (d >>> 21)), M1);
  h ^= h >>> 15; h = Math.imul(h, M2); h ^= h >>> 13;
  return (h >>> 0) || 1;
}

/** A 32-bit checksum of arbitrary bytes (device state): FNV-style over 32-bit words. */
export function checksumBytes(bytes: Uint8Array): number {
  const words = new Int32Array(Math.ceil(bytes.length / 4));
  new Uint8Array(words.buffer).set(bytes);
  let c = 0;
  for (let i = 0; i < words.length; i++) c = Math.imul(c ^ words[i], 0x01000193) >>> 0;
  return c;
}

/** First lane of a page's contribution to the digest: mixes pfn and hash. */
function mixLo(pfn: number, h: number): number {
  let x = Math.imul(h ^ Math.imul(pfn, 0x27d4eb2f), 0x165667b1);
  x ^= x >>> 16;
  return x >>> 0;
}

/** Second lane: an independent mix, so the digest is 64 bits. */
function mixHi(pfn: number, h: number): number {
  let x = Math.imul((h + 0x6a09e667) ^ Math.imul(pfn + 1, 0x9e3779b1), 0x85ebca77);
  x ^= x >>> 13;
  x = Math.imul(x, 0xc2b2ae35);
  return (x ^ (x >>> 16)) >>> 0;
}

/** Folds page hashes into a batch checksum (order matters: pages go in range order). */
export function foldChecksum(acc: number, pfn: number, h: number): number {
  return (Math.imul(acc ^ mixLo(pfn, h), 0x01000193) >>> 0);
}

/**
 * The digest of a whole guest image as pages are known to hold: the sum, lane by lane mod 2^32,
 * of mix(pfn, hash(page)). Starting state: every page zero (hash 0), as an empty target holds.
 */
export class ImageDigest {
  /** Hash of each page as last recorded. */
  readonly hashes: Uint32Array;
  private lo = 0;
  private hi = 0;

  constructor(readonly pageCount: number) {
    this.hashes = new Uint32Array(pageCount);
    for (let pfn = 0; pfn < pageCount; pfn++) {
      this.lo = (this.lo + mixLo(pfn, 0)) >>> 0;
      this.hi = (this.hi + mixHi(pfn, 0)) >>> 0;
    }
  }

  /** Records that page `pfn` now has hash `h`. */
  set(pfn: number, h: number): void {
    const old = this.hashes[pfn];
    if (old === h) return;
    this.hashes[pfn] = h;
    this.lo = (this.lo - mixLo(pfn, old) + mixLo(pfn, h)) >>> 0;
    this.hi = (this.hi - mixHi(pfn, old) + mixHi(pfn, h)) >>> 0;
  }

  /** The current digest, 8 bytes. */
  digest(): Buffer {
    const b = Buffer.allocUnsafe(8);
    b.writeUInt32BE(this.hi, 0);
    b.writeUInt32BE(this.lo, 4);
    return b;
  }

  /**
   * Digest of memory as it is now: hashes every page set in `populated` (clear bits are zero
   * pages), reading runs of populated pages (at most OF_MEMORY_RUN_PAGES, never across a
   * multiple of `slotPages`) as one word view each from `runWords(first, count)`, and yielding
   * to the event loop every 16 MiB.
   */
  static async ofMemory(pageCount: number, populated: Uint32Array, runWords: (first: number, count: number) => Int32Array, slotPages = pageCount): Promise<Buffer> {
    const d = new ImageDigest(pageCount);
    let n = 0;
    for (const [first, count] of dirtyRuns(populated, pageCount, OF_MEMORY_RUN_PAGES, slotPages)) {
      const w = runWords(first, count);
      for (let p = 0; p < count; p++) d.set(first + p, hashPage(w, p * WORDS));
      n += count;
      if (n >= OF_MEMORY_YIELD_PAGES) { n = 0; await new Promise((r) => setImmediate(r)); }
    }
    return d.digest();
  }
}
