/**
 * When pre-copy stops iterating (design.md stage 3): the predicted final round fits the
 * downtime target, or progress stalls (Xen: at max rate and a round sent more than the one
 * before), or a round/bytes/time limit is hit.
 */
import type { MigrationPolicy, StopReason } from '../types';

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
