/**
 * Shared constants of the sim guest: memory layout, vCPU control block, vCPU registers, page
 * content function and PRNG. Imported by both the driver (main thread) and the vCPU workers,
 * so the two sides agree bit for bit.
 *
 * Guest memory layout (4 KiB pages, pfn = page frame number):
 *
 *   pfn 0                      guest header (magic, layout, profile params, heartbeat)
 *   pfn 1 .. 1+indexPages-1    version index: one uint32 per page of the guest (all pages)
 *   pfn dataStart ..           data pages the workload writes
 *
 * Memory is split into slots of SLOT_PAGES pages (1 GiB), each its own SharedArrayBuffer; the
 * header and the index always sit in slot 0 (64 GiB of guest needs a 64 MiB index).
 */

import { PAGE_SIZE } from '../types';

/** Pages per memory slot (1 GiB / 4 KiB). A power of two. */
export const SLOT_PAGES = 262144;
/** log2(SLOT_PAGES). */
export const SLOT_SHIFT = 18;
/** Mask of a pfn's offset in its slot. */
export const SLOT_MASK = SLOT_PAGES - 1;
/** uint32 words per page. */
export const PAGE_WORDS = PAGE_SIZE / 4;

/** First word of the guest header page: 'DRVG'. */
export const GUEST_MAGIC = 0x44525647;
/** Version of the guest memory layout. */
export const GUEST_LAYOUT_VERSION = 1;
/** First word of every data page the guest wrote: 'PAGE'. */
export const PAGE_MAGIC = 0x50414745;

/** Header page, uint32 word indices. */
export const H32 = {
  MAGIC: 0,
  LAYOUT: 1,
  PAGE_COUNT: 2,
  INDEX_START: 3,
  INDEX_PAGES: 4,
  DATA_START: 5,
  PROFILE: 6,
  VCPUS: 7,
  SEED: 8,
  WSS_PAGES: 9,
  FILL_PAGES: 10,
} as const;

/** Header page, float64 slot indices (byte offset = 8 * index). */
export const H64 = {
  /** Dirty rate target, bytes/s (Infinity = unlimited). */
  RATE: 8,
  /** Wall-clock ms (performance.timeOrigin + now) of the last heartbeat. */
  HB_LAST: 16,
  /** Largest gap between two consecutive beats, ms, as the guest measured it. */
  HB_MAX_GAP: 17,
  /** Number of beats. */
  HB_BEATS: 18,
  /** Gap of the first beat after the latest resume, ms: the blackout the guest saw across a pause (or a migration). */
  HB_RESUME_GAP: 19,
} as const;

/** Pfn of the first index page. */
export const INDEX_START = 1;

/** The sizes derived from a guest's RAM size. */
export interface GuestLayout {
  pageCount: number;
  indexStart: number;
  indexPages: number;
  dataStart: number;
  dataPages: number;
  slotCount: number;
}

/** Computes the layout of a guest of `memBytes` bytes (a multiple of PAGE_SIZE). */
export function guestLayout(memBytes: number): GuestLayout {
  const pageCount = Math.floor(memBytes / PAGE_SIZE);
  const indexPages = Math.ceil(pageCount / PAGE_WORDS);
  const dataStart = INDEX_START + indexPages;
  return {
    pageCount,
    indexStart: INDEX_START,
    indexPages,
    dataStart,
    dataPages: Math.max(0, pageCount - dataStart),
    slotCount: Math.ceil(pageCount / SLOT_PAGES),
  };
}

/** Control block (Int32Array on a SAB shared by the driver and every vCPU). */
export const CTL = {
  /** Command: RUN, PAUSE or EXIT. vCPUs wait on this word while parked or sleeping. */
  CMD: 0,
  /** Number of vCPUs currently parked (acknowledged a pause). The driver waits on it. */
  PARKED: 1,
  /** Number of vCPUs that finished their boot fill. */
  BOOTED: 2,
  /** Number of vCPUs whose thread ended. */
  EXITED: 3,
  /** Throttle in per mille: vCPUs sleep this share of the time (auto-converge); 0 = full speed. */
  THROTTLE: 4,
  /** Post-copy: guest pages not on this node yet (postcopy-pages.ts); 0 = every page is here. */
  MISSING: 5,
  /** Size of the block in int32 words. */
  SIZE: 16,
} as const;

export const CMD_RUN = 0;
export const CMD_PAUSE = 1;
export const CMD_EXIT = 2;

/**
 * vCPU registers: one SAB per vCPU, viewed as Float64Array(REG_SLOTS); the PRNG state is the
 * first four uint32 words (overlapping float64 slots 0 and 1). Everything that the workload
 * program needs to continue lives here, so device state = these bytes.
 */
export const REG = {
  /** Next position in the sequential pattern (local page index). */
  CURSOR: 2,
  /** Pacing credit in bytes (token bucket). */
  CREDIT: 3,
  /** Bytes written by the workload after boot (the dirty-rate counter). */
  BYTES: 4,
  /** Page writes, boot included. */
  PAGES: 5,
  /** Next local page of the boot fill (boot done when >= the vCPU's fill share). */
  BOOT_NEXT: 6,
  /** Pages written for the first time (version 0 -> 1): touched RAM. */
  TOUCHED: 7,
  /** ms this vCPU spent running (not sleeping/parked). */
  BUSY_MS: 8,
  /** Number of times the vCPU was parked and resumed. */
  RESUMES: 9,
} as const;
/** Float64 slots per vCPU register file. */
export const REG_SLOTS = 16;
/** Bytes per vCPU register file. */
export const REG_BYTES = REG_SLOTS * 8;

/** Profile codes as stored in the guest header and the device state. */
export const PROFILE_CODES = { idle: 1, web: 2, db: 3, mmuncher: 4 } as const;

/** The fill word of page `pfn` at version `v` (a 32-bit mix, murmur3 finaliser). */
export function mix(pfn: number, v: number): number {
  let h = (Math.imul(pfn, 0x9e3779b1) ^ Math.imul(v, 0x85ebca77)) >>> 0;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/**
 * Words of each written page that come from the entropy pool; the rest repeat the fill word.
 * Real guest RAM compresses about 2:1 with LZ4 (QEMU's multifd-compression figures); a page of
 * one repeated word would compress ~250:1 and make every compression figure a lie. Half a page
 * of pseudo-random words puts the sim's pages at LZ4 ratio ~0.5.
 */
export const PAGE_ENTROPY_WORDS = 512;
/** Entropy pool size, words (1 MiB): far more distinct page contents than LZ4's 64 KiB window sees. */
const ENTROPY_POOL_WORDS = 1 << 18;
/** Seed of the entropy pool: fixed, so every process (driver, vCPUs, guest check, target) agrees. */
const ENTROPY_SEED = 0x5eed_d0e5;
let pool: Uint32Array | undefined;
let poolBytes: Buffer | undefined;

/** The shared pseudo-random pool page contents draw from (the same in every process). */
export function entropyPool(): Uint32Array {
  if (pool) return pool;
  const p = new Uint32Array(ENTROPY_POOL_WORDS);
  const st = new Uint32Array(4);
  seedPrng(st, ENTROPY_SEED, 0);
  for (let i = 0; i < p.length; i++) p[i] = xoshiro128ss(st);
  poolBytes = Buffer.from(p.buffer, p.byteOffset, p.byteLength);
  return (pool = p);
}

/** Byte views of the buffers pages are written into (Buffer#fill with a Buffer is one memcpy, also into shared memory). */
const byteViews = new WeakMap<ArrayBufferLike, Buffer>();

/** A byte view of the whole buffer under `m`, for fillPage's `bytes` (a writer that fills many pages keeps one per buffer). */
export function pageBytesOf(m: Uint32Array): Buffer {
  let bytes = byteViews.get(m.buffer);
  if (!bytes) byteViews.set(m.buffer, bytes = Buffer.from(m.buffer));
  return bytes;
}

/**
 * Writes the content of page `pfn` at version `v` into words [base, base + PAGE_WORDS) of `m`:
 * magic, pfn, version, PAGE_ENTROPY_WORDS words of the pool at an offset the (pfn, v) mix picks,
 * then the mix word repeated. A function of (pfn, v) only, so the guest check recomputes it.
 * `bytes` is a byte view of m's whole buffer (pageBytesOf); the vCPU loop passes its own.
 */
export function fillPage(m: Uint32Array, base: number, pfn: number, v: number, bytes: Buffer = pageBytesOf(m)): void {
  const h = mix(pfn, v);
  const off = (h % (ENTROPY_POOL_WORDS - PAGE_ENTROPY_WORDS)) * 4;
  if (!poolBytes) entropyPool();
  // TypedArray#set into a SharedArrayBuffer copies word by word; Buffer#fill with a value exactly
  // as long as the range is a memcpy (see receiver.ts copyBytes).
  const at = m.byteOffset + (base + 3) * 4;
  bytes.fill(poolBytes!.subarray(off, off + PAGE_ENTROPY_WORDS * 4), at, at + PAGE_ENTROPY_WORDS * 4);
  m.fill(h, base + 3 + PAGE_ENTROPY_WORDS, base + PAGE_WORDS);
  m[base] = PAGE_MAGIC;
  m[base + 1] = pfn;
  m[base + 2] = v;
}

/** splitmix32 step, used to seed xoshiro128** state. */
export function splitmix32(x: number): number {
  let z = (x + 0x9e3779b9) >>> 0;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
  return (z ^ (z >>> 16)) >>> 0;
}

/** Seeds a xoshiro128** state (4 uint32 words, never all zero) from (seed, vcpu). */
export function seedPrng(state: Uint32Array, seed: number, vcpu: number): void {
  let x = (seed ^ Math.imul(vcpu + 1, 0x27d4eb2d)) >>> 0;
  for (let i = 0; i < 4; i++) {
    x = splitmix32(x + i);
    state[i] = x;
  }
  if ((state[0] | state[1] | state[2] | state[3]) === 0) state[0] = 1;
}

/** xoshiro128** step on a 4-word state (the vCPU's PRNG registers); returns a uint32. */
export function xoshiro128ss(S: Uint32Array): number {
  const s0 = S[0];
  const s1 = S[1];
  const s2 = S[2] ^ s0;
  const s3 = S[3] ^ s1;
  const m = Math.imul(s1, 5);
  const r = Math.imul((m << 7) | (m >>> 25), 9) >>> 0;
  S[0] = s0 ^ s3;
  S[1] = s1 ^ s2;
  S[2] = s2 ^ (s1 << 9);
  S[3] = (s3 << 11) | (s3 >>> 21);
  return r;
}

/** Zipf(s~1) rank in [0, n) from a uint32 draw: P(k) ~ 1/(k+1) (log-uniform). */
export function zipfRank(u32: number, n: number): number {
  const k = Math.floor(Math.exp((u32 / 4294967296) * Math.log(n + 1))) - 1;
  return k < n ? k : n - 1;
}

/** Uniform index in [0, n) from a uint32 draw. */
export function uniformIndex(u32: number, n: number): number {
  return Math.floor((u32 / 4294967296) * n);
}

/** Stable 32-bit hash of a string (FNV-1a), for default seeds. */
export function hashString(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** FNV-1a over bytes (device state checksum). */
export function fnv1a(bytes: Uint8Array): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < bytes.length; i++) {
    h ^= bytes[i];
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}
