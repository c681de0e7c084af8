/**
 * The source's side of post-copy (protocol.ts "Post-copy"), run by PrecopySource once the policy
 * chose it: pause, stop the dirty log, send the hot pages, then the switch (device state and the
 * pages the target still lacks); the target resumes at once. Then the source serves the target's
 * page requests ahead of a background push of the rest, each page once, with at most
 * POSTCOPY_WINDOW_BYTES unacknowledged, and ends with a Complete carrying the image digest.
 * A stream that drops after the switch is reconnected (postcopy-recovery.ts) and serving goes on
 * from the pages the target says it still lacks. A stream that goes silent without dropping (no
 * ack or page request for POSTCOPY_STALL_MS while pushed batches wait for theirs) is given up and
 * reconnected the same way: the target's own detector drops its end for the same bound.
 */
import { PAGE_SIZE, type PagedDomain } from '../../hypervisor/types';
import { DroverError } from '../../lib/errors';
import { checksumBytes, type ImageDigest } from '../wire/page-hash';
import { popcount, testBit } from '../wire/range-table';
import { frames, MAX_ROUND_RANGES, POSTCOPY_STALL_CHECK_MS, POSTCOPY_STALL_MS, type Frame } from '../wire/protocol';
import type { BatchWindow } from '../precopy/batch-window';
import type { SourceStats } from '../precopy/source-stats';
import type { SourcePhase, Switchover } from '../precopy/source-phase';
import { missingTable, pagesOfTable } from './missing-table';
import { reconnect, type RecoveryEngine } from './postcopy-recovery';

/** Bytes of post-copy pages unacknowledged at most: a requested page waits behind this much push (4 ms at 1 GB/s). */
export const POSTCOPY_WINDOW_BYTES = 4 * 1024 * 1024;
/** Pages of one background push step (one batch's payload). */
const PUSH_PAGES = 256;
/** Pages after a requested one sent with it (guests touch neighbouring pages next; a sequential writer waits once per run). */
const REQUEST_PREFETCH_PAGES = 15;

/** What post-copy needs of the pre-copy engine that runs it (RecoveryEngine: reconnecting after a drop). */
export interface PostcopyEngine extends RecoveryEngine {
  readonly migrationId: string;
  readonly domain: PagedDomain;
  /** The frame stream's one post-copy need: every batch on stream 0 (parallel streams). */
  readonly channel: { pinToFirstStream?(): void };
  readonly window: BatchWindow;
  readonly stats: SourceStats;
  readonly digest: ImageDigest;
  /** Pauses the source: the switchover clock starts (stop-and-copy began at `t`). */
  pauseSource(t: number): Promise<Switchover>;
  /** Sends the pages of `bitmap` as batches (no skip: the source is paused), within the window. */
  sendPages(bitmap: Uint32Array): Promise<void>;
  /** Writes a control frame. */
  send(frame: Frame | Buffer): Promise<void>;
  /** Moves the engine's phase (reported unless `report` is false). */
  enter(next: SourcePhase, report?: boolean): void;
}

/** What the source learned of post-copy, for the result. */
export interface PostcopyOutcome {
  switchover: Switchover;
  pageWaits: number;
  pageWaitP50Ms: number;
  pageWaitP99Ms: number;
  allPresentMs: number;
  /** How long the stream was down in total (the target's count; the source's when it gave none), ms; reconnections. */
  stalledMs: number;
  recoveries: number;
}

/** Runs post-copy from the last pre-copy round's dirty `bitmap` to the target's PostcopyDone. */
export async function runPostcopy(e: PostcopyEngine, bitmap: Uint32Array): Promise<PostcopyOutcome> {
  const { domain: d, window: w } = e;
  const pc = d.postcopy;
  if (!pc) throw new DroverError('INTERNAL', `migration ${e.migrationId}: post-copy chosen for a domain without post-copy pages`);
  w.check();
  await w.untilDrained();
  e.enter({ kind: 'stopcopy', commitSent: false });
  const t = performance.now();
  const sw = await e.pauseSource(t);
  const last = d.getAndClearDirtyLog();
  d.stopDirtyLog(); // the source no longer runs: nothing more to log
  for (let i = 0; i < last.length; i++) bitmap[i] |= last[i];
  const hot = new Uint32Array(bitmap.length);
  for (let p = 0; p < pc.hotPages && p < d.pageCount; p++) {
    if (testBit(bitmap, p)) { hot[p >>> 5] |= 1 << (p & 31); bitmap[p >>> 5] &= ~(1 << (p & 31)); }
  }
  const missing = missingTable(bitmap, d.pageCount, d.slotPages, MAX_ROUND_RANGES);
  sw.breakdown.finalPages = popcount(hot);
  e.stats.round++;
  e.channel.pinToFirstStream?.();
  await e.sendPages(hot);
  const b = sw.breakdown;
  let mark = performance.now();
  b.finalRoundMs = mark - sw.pausedAt;
  const state = Buffer.from(d.saveDeviceState());
  e.stats.deviceBytes = state.length;
  b.deviceMs = performance.now() - mark;
  // Sending the switch is the commit point: the target resumes with the missing pages marked.
  e.enter({ kind: 'stopcopy', switchover: sw, commitSent: true }, false);
  mark = performance.now();
  await e.send(frames.postcopySwitch(w.lastSeq, e.stats.round, sw.pausedWall, missing, { state, checksum: checksumBytes(state) }));
  // Let the transport put the switch on the wire before the bookkeeping below (progress events,
  // the push bitmap: 0.5-10 ms measured on a loaded 2-core host) delays it: the target is waiting.
  await new Promise<void>((r) => setImmediate(r));
  // The switch's part of the downtime: handed to the transport -> the target resumed (verifyMs: -> its Activated here).
  const activated = (): void => {
    b.verifyMs = performance.now() - mark;
    b.resumeMs = Math.max(0, (w.activatedAt ?? 0) - (performance.timeOrigin + mark));
  };
  e.enter({ kind: 'verifying', switchover: sw, commitSent: true });
  e.enter({ kind: 'activating', switchover: sw });
  // Out of the blackout: the pages to push (the table's, which may be coarser than the dirty set).
  const pending = pagesOfTable(missing, bitmap.length);
  const atSwitch = Uint32Array.from(pending);
  unsettle(e.digest, pending);
  let recoveries = 0, attempts = 0, stalledMs = 0, finished = false;
  const stopWatch = watchStall(e);
  try {
    for (;;) {
      try {
        await serveToTheEnd(e, pending, sw.pausedWall, finished, activated);
        break;
      } catch (err) {
        const dropAt = performance.now();
        const r = await reconnect(e, w.failure ?? DroverError.from(err), atSwitch, attempts + 1);
        stalledMs += performance.now() - dropAt;
        attempts = r.attempts;
        recoveries++;
        w.continueFrom(r.batches);
        w.activatedAt ??= r.resumedAtMs; // the Activated ack may have died with the stream
        finished = r.done;
        pending.set(r.missing); // the target's present bitmap is the truth
        unsettle(e.digest, pending); // a zero page sent in a lost batch is sent again
      }
    }
  } finally {
    stopWatch();
  }
  const done = w.postcopyDone!;
  return {
    switchover: sw, pageWaits: done.pageWaits, pageWaitP50Ms: done.pageWaitP50Ms, pageWaitP99Ms: done.pageWaitP99Ms, allPresentMs: done.allPresentMs,
    stalledMs: recoveries > 0 ? (done.stalledMs || Math.round(stalledMs * 1000) / 1000) : 0, recoveries: done.recoveries || recoveries,
  };
}

/**
 * The source's stall detector: once the target resumed the guest, batches in flight and no ack
 * or page request for POSTCOPY_STALL_MS mean a silent link; fails the window with UNAVAILABLE
 * (a dropped stream: the recovery reconnects). Returns the stop.
 */
function watchStall(e: PostcopyEngine): () => void {
  const w = e.window;
  const timer = setInterval(() => {
    const silentMs = performance.now() - w.lastAckAt;
    if (w.failure || w.activatedAt === undefined || w.inFlightCount === 0 || silentMs < POSTCOPY_STALL_MS) return;
    e.log({ msg: 'post-copy link stalled: no ack from the target; dropping the stream', silentMs: Math.round(silentMs), inFlight: w.inFlightCount, limitMs: POSTCOPY_STALL_MS });
    w.fail(new DroverError('UNAVAILABLE', `post-copy link silent: no ack or page request from the target for ${Math.round(silentMs)} ms (limit ${POSTCOPY_STALL_MS} ms) with ${w.inFlightCount} batch(es) in flight`));
  }, POSTCOPY_STALL_CHECK_MS);
  timer.unref();
  return () => clearInterval(timer);
}

/**
 * From the switch (or a reconnection) to PostcopyDone: waits for the target's resume, serves
 * `pending`, then sends the final Complete with the image digest unless the target `finished`
 * already (a resume after it verified: Verified and PostcopyDone come again on their own).
 */
async function serveToTheEnd(e: PostcopyEngine, pending: Uint32Array, pausedWall: number, finished: boolean, activated: () => void): Promise<void> {
  const w = e.window;
  if (w.activatedAt === undefined) {
    await w.until(() => w.activatedAt !== undefined);
    activated();
  }
  w.limitWindow(POSTCOPY_WINDOW_BYTES);
  await servePages(e, pending);
  await w.untilDrained();
  await w.until(() => w.owned);
  if (!finished) await e.send(frames.complete(e.digest.digest(), w.lastSeq, e.stats.round, pausedWall, true, 0));
  await w.until(() => w.verified !== undefined && w.postcopyDone !== undefined);
}

/** A page hash no zero page has: recorded for a missing page the target holds as zeros, so the packer sends it (as a zero range) instead of settling it. */
const UNSETTLED_HASH = 1;

/**
 * Every missing page must reach the target, or its vCPUs wait forever: a page the target holds
 * as zeros (hash 0) would be settled by the packer without a frame, so it is marked unsettled.
 */
function unsettle(digest: ImageDigest, pending: Uint32Array): void {
  for (let wi = 0; wi < pending.length; wi++) {
    let word = pending[wi];
    while (word !== 0) {
      const bit = 31 - Math.clz32(word);
      word &= ~(1 << bit);
      const p = wi * 32 + bit;
      if (digest.hashes[p] === 0) digest.set(p, UNSETTLED_HASH);
    }
  }
}

/**
 * Sends every page of `pending` once: requested pages (and a few after each) first, then the
 * next push step from a cursor. Clears each page from `pending` as it goes.
 */
async function servePages(e: PostcopyEngine, pending: Uint32Array): Promise<void> {
  const w = e.window;
  const step = new Uint32Array(pending.length);
  let left = popcount(pending);
  let cursor = 0;
  const take = (p: number): boolean => {
    if (!testBit(pending, p)) return false;
    pending[p >>> 5] &= ~(1 << (p & 31));
    step[p >>> 5] |= 1 << (p & 31);
    left--;
    return true;
  };
  while (left > 0) {
    step.fill(0);
    let n = 0;
    const req = w.pageRequests.splice(0);
    for (let i = 0; i < req.length; i += 2) {
      for (let p = req[i]; p < req[i] + req[i + 1] && p < e.domain.pageCount; p++) {
        if (!take(p)) continue;
        n++;
        for (let q = p + 1; q <= p + REQUEST_PREFETCH_PAGES && q < e.domain.pageCount; q++) if (take(q)) n++;
      }
    }
    if (n === 0) {
      while (n < PUSH_PAGES && left > 0) {
        if (take(cursor)) n++;
        cursor++;
      }
    }
    await e.sendPages(step);
    e.stats.roundRemaining = left * PAGE_SIZE;
  }
}
