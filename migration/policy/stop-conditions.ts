/**
 * When pre-copy stops iterating (design.md stage 3): the predicted final round fits the
 * downtime target, or progress stalls (Xen: at max rate and a round sent more than the one
 * before), or a round/bytes/time limit is hit (shouldStop: the bounds). decideStop adds the cost
 * model's view of the rounds to come: from the writable working set the rounds measured, it
 * stops as soon as one more round is predicted not to shrink what is left, instead of waiting
 * STALL_ROUNDS rounds to see it.
 */
import type { MigrationPolicy, StopReason } from '../types';
import { roundRate } from './rate-control';
import { wssAt, type WssPoint } from './wss-curve';

/** Pre-copy state after a round, as the stop rule sees it. */
export interface RoundOutcome {
  /** Rounds completed so far (1-based count). */
  round: number;
  /** Dirty bytes waiting now (what the next round would send). */
  dirtyBytes: number;
  /** Bytes the round just finished sent. */
  sentThisRound: number;
  /** Bytes the previous round sent (NaN after round 1). */
  sentPreviousRound: number;
  /** Total page bytes sent so far. */
  sentTotal: number;
  /** Measured send throughput, bytes/s. */
  throughputBytesPerSec: number;
  /** Guest RAM. */
  memBytes: number;
  /** Elapsed ms since the migration started. */
  elapsedMs: number;
  /** Consecutive rounds whose dirty set did not shrink. */
  roundsWithoutProgress: number;
}

/** Fixed cost of a switchover besides the last pages (pause, device state, verify, resume), ms. */
export const SWITCHOVER_OVERHEAD_MS = 1.0;
/** Rounds without a shrinking dirty set before pre-copy is declared stalled. */
export const STALL_ROUNDS = 3;

/** Predicted downtime if the VM were paused now: the dirty bytes at the measured rate plus overhead. */
export function predictDowntimeMs(dirtyBytes: number, throughputBytesPerSec: number): number {
  if (!(throughputBytesPerSec > 0)) return Infinity;
  return (dirtyBytes / throughputBytesPerSec) * 1000 + SWITCHOVER_OVERHEAD_MS;
}

/** Decides after a round: a reason to stop and copy, or null to go on with another round. */
export function shouldStop(o: RoundOutcome, policy: MigrationPolicy, timeoutMs: number): StopReason | null {
  if (predictDowntimeMs(o.dirtyBytes, o.throughputBytesPerSec) <= policy.maxDowntimeMs) return 'converged';
  if (o.round >= policy.maxRounds) return 'max-rounds';
  if (o.sentTotal >= policy.maxBytesFactor * o.memBytes) return 'max-bytes';
  if (o.roundsWithoutProgress >= STALL_ROUNDS) return 'stalled';
  // Xen: a round that sent more than the one before it means the dirty rate beats the link.
  if (o.round > 2 && o.sentThisRound > o.sentPreviousRound && o.roundsWithoutProgress >= 1) return 'stalled';
  if (timeoutMs > 0 && o.elapsedMs >= timeoutMs * 0.8) return 'timeout';
  return null;
}

/** The cost model's inputs to the stop rule, besides the round's outcome. */
export interface StopModelInput extends RoundOutcome {
  /** The guest's WSS curve at its current speed (the engine: RoundCurve's points at the current throttle). */
  wss: readonly WssPoint[];
  /** Dirty rate of the latest round, bytes/s (Xen's round-rate rule under a cap; the curve's fallback). */
  dirtyRateBytesPerSec: number;
}

/** A predicted remainder at least this fraction of the current one is "not shrinking": a round that takes off under 1% is not worth its time. */
export const NO_PROGRESS_RATIO = 0.99;

/** What one more pre-copy round is predicted to do: its length, what it leaves dirty, the downtime of stopping after it. */
export interface NextRound {
  ms: number;
  remainder: number;
  downtimeMs: number;
}

/**
 * The cost model's next round (cost-model.ts, without to_skip): it sends the dirty bytes at the
 * measured rate, or under a cap at the rate the pacer will set (the cap, rate-control.ts; a
 * short round's measured rate is mostly the pacer's burst), and meanwhile the guest dirties
 * WSS(its length).
 */
export function predictNextRound(o: StopModelInput, policy: Pick<MigrationPolicy, 'bandwidthBytesPerSec'>): NextRound {
  const cap = policy.bandwidthBytesPerSec;
  const paced = roundRate(cap);
  const rate = paced > 0 ? paced : o.throughputBytesPerSec;
  if (!(rate > 0)) return { ms: Infinity, remainder: o.dirtyBytes, downtimeMs: Infinity };
  const ms = (o.dirtyBytes / rate) * 1000;
  const remainder = wssAt(o.wss, ms, o.dirtyRateBytesPerSec, o.memBytes);
  return { ms, remainder, downtimeMs: predictDowntimeMs(remainder, o.throughputBytesPerSec) };
}

/**
 * The engine's stop rule with the cost model: stop and copy now when the remainder fits the
 * target; stop at Xen's bounds (max rounds, max sent factor), the observed stall or the
 * timeout (shouldStop); else stop ('stalled', which starts auto-converge where the guest can be
 * throttled) when one more round is predicted not to shrink the remainder (NO_PROGRESS_RATIO).
 * Without a measured curve the observed rules alone decide.
 */
export function decideStop(o: StopModelInput, policy: MigrationPolicy, timeoutMs: number): StopReason | null {
  const bound = shouldStop(o, policy, timeoutMs);
  if (bound || o.wss.length === 0) return bound;
  return predictNextRound(o, policy).remainder >= NO_PROGRESS_RATIO * o.dirtyBytes ? 'stalled' : null;
}

/**
 * The WSS curve as the engine's rounds measure it: a round of `ms` that left `dirtyBytes` dirty is
 * the point (ms, dirtyBytes) — the dirty log is cleared when a round starts. Points are kept by the
 * throttle they ran under: a throttled guest dirties along another curve.
 */
export class RoundCurve {
  private readonly points: Array<WssPoint & { throttle: number }> = [];

  /** Adds the point of a round that ran under `throttle`. */
  observe(ms: number, dirtyBytes: number, throttle: number): void {
    if (ms > 0 && Number.isFinite(ms)) this.points.push({ windowMs: ms, bytes: dirtyBytes, throttle });
  }

  /** The points measured under `throttle`. */
  at(throttle: number): WssPoint[] {
    return this.points.filter((p) => p.throttle === throttle).map(({ windowMs, bytes }) => ({ windowMs, bytes }));
  }
}

/**
 * Auto-converge: the first step when pre-copy stalls (QEMU's cpu-throttle-initial, 20%), then
 * one step per round that still does not fit the target, each halving the guest's remaining
 * speed (QEMU adds 10% a step: 9 rounds to 99% instead of 7, each resending the working set).
 */
export const THROTTLE_INITIAL = 0.2;
/** Highest throttle the engine applies (the guest keeps 1% of its vCPU time). */
export const THROTTLE_MAX = 0.99;

/** The throttle after `t`: 20%, then half of the remaining speed taken away per step, capped. */
export function nextThrottle(t: number): number {
  return t <= 0 ? THROTTLE_INITIAL : Math.min(THROTTLE_MAX, 1 - (1 - t) / 2);
}
