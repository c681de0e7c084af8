/**
 * What post-copy costs once the policy switches (convergence.ts decidePageRound; the engine's
 * postcopy/postcopy-source.ts): the source pauses, the target resumes with the remainder
 * missing, and the source pushes it at the link rate while it serves the target's page
 * requests first. Read by the cost model.
 */
import { wssAt, type WssPoint } from './wss-curve';

/** Bytes of a guest page (hypervisor/types.ts PAGE_SIZE; policy stays below the hypervisor). */
const PAGE_BYTES = 4096;
/** Steps of the integration over the push (the curve is smooth: more change nothing visible). */
const STEPS = 32;
/** Pages a requested page brings with it (postcopy-source.ts REQUEST_PREFETCH_PAGES + the page): a writer waits about once per this many missing pages it touches. */
const PAGES_PER_WAIT = 16;
/** Bytes of post-copy pages unacknowledged at most (postcopy-source.ts POSTCOPY_WINDOW_BYTES): a requested page waits behind at most this much push. */
const POSTCOPY_WINDOW_BYTES = 4 * 1024 * 1024;

/** Post-copy after the switch, as predicted. */
export interface PostcopyEstimate {
  /** Bytes the target lacks at the switch (pushed after it). */
  remainderBytes: number;
  /** The target's resume until every page is present: the remainder at the link rate, ms. */
  allPresentMs: number;
  /**
   * vCPU waits for a missing page, about: the pages of the remainder the guest touches before the
   * push reaches them, over PAGES_PER_WAIT (each request brings its neighbours). A sequential
   * writer waits so (measured: mmuncher uncapped, 943 predicted, 1053 waits); a guest whose hot
   * pages go with the switch, or whose vCPU stalls behind slow waits, waits less.
   */
  pageWaits: number;
  /** Longest wait for a page: behind a full post-copy window at the link rate, ms (measured p99: 333 ms at 1 Gbit/s, 37 ms uncapped). */
  pageWaitMaxMs: number;
}

/**
 * Post-copy of `remainderBytes` (wire bytes `remainderWire`) at `rateBytesPerSec`, for a guest
 * that dirties along `wss` (distinct bytes within a window) at `dirtyRate` once resumed: at τ
 * into the push the fraction 1 − τ/T of the remainder is still missing, and of the pages the
 * guest newly touches then, those in the remainder wait.
 */
export function estimatePostcopy(remainderBytes: number, remainderWire: number, rateBytesPerSec: number, wss: readonly WssPoint[], dirtyRate: number, memBytes: number): PostcopyEstimate {
  const allPresentMs = rateBytesPerSec > 0 ? (remainderWire / rateBytesPerSec) * 1000 : Infinity;
  const pageWaitMaxMs = rateBytesPerSec > 0 ? (POSTCOPY_WINDOW_BYTES / rateBytesPerSec) * 1000 : Infinity;
  if (!(remainderBytes > 0) || !Number.isFinite(allPresentMs)) return { remainderBytes, allPresentMs, pageWaits: 0, pageWaitMaxMs };
  const setCap = wss.length ? Math.max(...wss.map((p) => p.bytes)) : memBytes;
  // Of what the guest touches, the share that lies in the remainder (the remainder is its working set, or part of it).
  const inRemainder = Math.min(1, remainderBytes / Math.max(setCap, remainderBytes, 1));
  let waits = 0;
  let prev = 0;
  for (let k = 1; k <= STEPS; k++) {
    const tau = (allPresentMs * k) / STEPS;
    const touched = wssAt(wss, tau, dirtyRate, memBytes);
    waits += Math.max(0, touched - prev) * inRemainder * (1 - (k - 0.5) / STEPS);
    prev = touched;
  }
  const pages = Math.min(waits / PAGE_BYTES, remainderBytes / PAGE_BYTES);
  return { remainderBytes, allPresentMs, pageWaits: Math.round(pages / PAGES_PER_WAIT), pageWaitMaxMs };
}
