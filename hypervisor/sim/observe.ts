/**
 * Observation without sending (`drover analyze`): the dirty log of a page-access domain read
 * every ~10 ms for a window, and from those snapshots the dirty rate and the writable-working-set
 * curve (Clark et al.: distinct pages dirtied within windows of 10 ms, 20, 50, 100, ... up to the
 * window). The sim driver records dirty bits all the time, so this only reads and clears the log;
 * it must never run while a migration owns the log (the caller checks `busy()` right before
 * every read, on the same event loop as the engine's startDirtyLog: no bit can be taken from it).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { PAGE_SIZE, type PagedDomain } from '../types';

/** Snapshot period, ms. */
export const SNAPSHOT_MS = 10;
/** Shortest observation that yields a curve, ms. */
export const MIN_WINDOW_MS = 50;
/** The WSS windows measured (those not longer than the observation). */
export const WSS_WINDOWS_MS = [10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 20_000, 30_000, 60_000];

/** What an observation found. */
export interface Observation {
  dirtyRateBytesPerSec: number;
  wss: { windowMs: number; bytes: number }[];
  nonzeroBytes: number;
  observedMs: number;
  snapshots: number;
  /** Time this thread spent taking snapshots and computing the curve, ms. */
  cpuMs: number;
}

interface Snapshot { t: number; pages: Uint32Array }

function pagesOf(bitmap: Uint32Array): Uint32Array {
  let n = 0;
  for (let i = 0; i < bitmap.length; i++) {
    let w = bitmap[i];
    while (w) { w &= w - 1; n++; }
  }
  const out = new Uint32Array(n);
  let k = 0;
  for (let i = 0; i < bitmap.length; i++) {
    let w = bitmap[i];
    while (w) {
      const b = 31 - Math.clz32(w & -w);
      out[k++] = i * 32 + b;
      w &= w - 1;
    }
  }
  return out;
}

/** Mean distinct pages per block of consecutive snapshots spanning ≥ `windowMs`. */
function meanDistinct(snaps: readonly Snapshot[], t0: number, windowMs: number, mark: Int32Array, stamp: { v: number }): number {
  let blocks = 0;
  let sum = 0;
  let start = t0;
  let distinct = 0;
  stamp.v++;
  for (const s of snaps) {
    for (const p of s.pages) if (mark[p] !== stamp.v) { mark[p] = stamp.v; distinct++; }
    if (s.t - start >= windowMs * 0.95) {
      blocks++;
      sum += distinct;
      distinct = 0;
      start = s.t;
      stamp.v++;
    }
  }
  return blocks ? (sum / blocks) * PAGE_SIZE : NaN;
}

/** Observes `d` for `windowMs`; `busy()` (a migration took the log) stops it with that error. */
export async function observeDirtyPages(d: PagedDomain, windowMs: number, busy: () => Error | undefined): Promise<Observation> {
  let cpu = 0;
  const timed = <T>(f: () => T): T => { const a = performance.now(); try { return f(); } finally { cpu += performance.now() - a; } };
  const guard = () => { const e = busy(); if (e) throw e; };
  guard();
  timed(() => d.getAndClearDirtyLog()); // start clean
  const t0 = performance.now();
  const snaps: Snapshot[] = [];
  while (performance.now() - t0 < windowMs) {
    await sleep(SNAPSHOT_MS);
    guard();
    snaps.push(timed(() => ({ pages: pagesOf(d.getAndClearDirtyLog()), t: performance.now() })));
  }
  const observedMs = performance.now() - t0;
  const r = timed((): Observation => {
    const mark = new Int32Array(d.pageCount);
    const stamp = { v: 0 };
    const wss = WSS_WINDOWS_MS.filter((w) => w <= observedMs)
      .map((w) => ({ windowMs: w, bytes: meanDistinct(snaps, t0, w, mark, stamp) }))
      .filter((p) => Number.isFinite(p.bytes));
    // Monotone by construction of the question (a longer window holds the shorter): smooth sampling noise.
    for (let i = 1; i < wss.length; i++) wss[i].bytes = Math.max(wss[i].bytes, wss[i - 1].bytes);
    const dirtyPages = snaps.reduce((s, x) => s + x.pages.length, 0);
    const nonzeroPages = pagesOf(d.populatedBitmap()).length;
    return { dirtyRateBytesPerSec: (dirtyPages * PAGE_SIZE * 1000) / observedMs, wss, nonzeroBytes: nonzeroPages * PAGE_SIZE, observedMs, snapshots: snaps.length, cpuMs: 0 };
  });
  r.cpuMs = cpu;
  return r;
}
