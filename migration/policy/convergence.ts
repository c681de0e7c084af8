/**
 * Convergence of a hypervisor-driven pre-copy (a stream-migrating driver, QEMU): the core's rule
 * for when pre-copy will not reach the downtime target, and what to do then (switch to post-copy
 * when the target offers it, else throttle the guest). The driver samples its migration and
 * calls the decider (hypervisor/stream-migration.ts ConvergenceDecider); it only does the
 * mechanics. The page engine's counterpart is stop-conditions.ts (same round/bytes limits).
 */
import type { ConvergenceDecider, ConvergenceDecision, ConvergenceSample, StreamMigrationProgress } from '../../hypervisor/stream-migration';
import { DEFAULT_MAX_BYTES_FACTOR, DEFAULT_MAX_ROUNDS, type MigrationPolicy, type StopReason } from '../types';

/** A dirty rate at this fraction of the transfer rate means every round resends about as much as the last. */
export const DIRTY_RATE_NEAR_LINK = 0.8;
/** A dirty set at this fraction of the one before (or more) is "not shrinking". */
export const NOT_SHRINKING_RATIO = 0.8;
/** Consecutive dirty syncs compared by the not-shrinking rule. */
export const SHRINK_WINDOW = 3;
/** Pre-copy may run this long after the first pass (or twice the first pass, whichever is longer), ms. */
export const MIN_AFTER_FIRST_PASS_MS = 1000;

/** The limits of pre-copy, from the MigrationPolicy (Xen's defaults: 30 rounds, 3× RAM). */
export interface PrecopyLimits {
  /** Most pre-copy rounds (dirty syncs). */
  maxRounds: number;
  /** Most bytes sent, as a multiple of RAM. */
  maxBytesFactor: number;
}

/** The limits when the policy sets none (same as resolvePolicy's). */
export const DEFAULT_PRECOPY_LIMITS: PrecopyLimits = { maxRounds: DEFAULT_MAX_ROUNDS, maxBytesFactor: DEFAULT_MAX_BYTES_FACTOR };

/** What the decider is parameterised by. */
export interface ConvergencePolicy extends PrecopyLimits {
  /** 'auto': act when pre-copy does not converge; 'immediate': switch right after the first pass. */
  mode: 'auto' | 'immediate';
  /** Throttle the guest when pre-copy does not converge and post-copy is unavailable. */
  throttle: boolean;
}

/** The convergence policy for an engine MigrationPolicy (its round and bytes limits; auto mode, throttle allowed). */
export function convergencePolicy(p: Pick<MigrationPolicy, 'maxRounds' | 'maxBytesFactor'>): ConvergencePolicy {
  return { maxRounds: p.maxRounds, maxBytesFactor: p.maxBytesFactor, mode: 'auto', throttle: true };
}

/**
 * Decides that pre-copy will not reach the downtime target. Returns the reason, or '' to go on.
 *  - the guest dirties memory at ≥ 80% of the transfer rate: every round resends about as much as the last;
 *  - after a few rounds the dirty set is not shrinking (≥ 80% of the one before) and would not fit the target;
 *  - pre-copy has run for twice the first pass after it ended, or `maxRounds` rounds, or sent `maxBytesFactor`× RAM.
 */
export function notConverging(
  p: StreamMigrationProgress,
  atSync: readonly number[],
  downtimeLimitMs: number,
  sinceFirstPassMs: number,
  firstPassMs: number,
  mode: 'auto' | 'never' | 'immediate',
  limits: PrecopyLimits = DEFAULT_PRECOPY_LIMITS,
): string {
  if (mode === 'immediate') return 'post-copy requested after the first pass';
  const fitBytes = (p.transferRateBytesPerSec * downtimeLimitMs) / 1000;
  if (p.remainingBytes <= fitBytes) return '';
  if (p.transferRateBytesPerSec > 0 && p.dirtyRateBytesPerSec >= DIRTY_RATE_NEAR_LINK * p.transferRateBytesPerSec) {
    return `dirty rate ${fmtRate(p.dirtyRateBytesPerSec)} ≥ 80% of transfer rate ${fmtRate(p.transferRateBytesPerSec)}`;
  }
  if (notShrinking(atSync)) {
    return `dirty set not shrinking over rounds (${atSync.slice(-SHRINK_WINDOW).map((b) => fmtBytes(b)).join(' → ')}), target ${downtimeLimitMs} ms needs ≤ ${fmtBytes(fitBytes)}`;
  }
  if (sinceFirstPassMs > Math.max(MIN_AFTER_FIRST_PASS_MS, 2 * firstPassMs)) return `pre-copy still running ${sinceFirstPassMs} ms after the first pass`;
  if (p.rounds >= limits.maxRounds) return `${p.rounds} rounds`;
  if (p.totalRamBytes > 0 && p.transferredBytes > limits.maxBytesFactor * p.totalRamBytes) return `sent ${fmtBytes(p.transferredBytes)} > ${limits.maxBytesFactor}× RAM`;
  return '';
}

/** True when each of the last SHRINK_WINDOW dirty sets is at least NOT_SHRINKING_RATIO of the one before. */
function notShrinking(atSync: readonly number[]): boolean {
  const n = atSync.length;
  if (n < SHRINK_WINDOW) return false;
  for (let i = n - SHRINK_WINDOW + 1; i < n; i++) if (atSync[i] < NOT_SHRINKING_RATIO * atSync[i - 1]) return false;
  return true;
}

/** The decision for one sample: continue, or post-copy when available, else throttle when allowed. */
export function decideConvergence(s: ConvergenceSample, policy: ConvergencePolicy): ConvergenceDecision {
  const reason = notConverging(s.progress, s.atSync, s.downtimeLimitMs, s.sinceFirstPassMs, s.firstPassMs, policy.mode, policy);
  if (!reason) return { action: 'continue' };
  if (s.postcopyAvailable) return { action: 'postcopy', reason };
  if (policy.throttle) return { action: 'throttle', reason };
  return { action: 'continue' };
}

/** The decider a driver calls, bound to `policy`. */
export function convergenceDecider(policy: ConvergencePolicy): ConvergenceDecider {
  return (s) => decideConvergence(s, policy);
}

function fmtBytes(b: number): string {
  return b >= 1e9 ? `${(b / 1e9).toFixed(2)} GB` : b >= 1e6 ? `${(b / 1e6).toFixed(1)} MB` : `${(b / 1e3).toFixed(0)} kB`;
}

function fmtRate(b: number): string {
  return `${fmtBytes(b)}/s`;
}

/** A guest dirtying more than this multiple of what the link moves cannot be caught by pre-copy, and throttling it enough would cost it more than post-copy's page waits. */
export const POSTCOPY_DIRTY_FACTOR = 2;

/** What the page engine (precopy-source.ts) knows after a pre-copy round. */
export interface PageRoundSample {
  /** Rounds done (1 = the first pass). */
  round: number;
  /** The round's stop condition (stop-conditions.ts), or null to go on. */
  stop: StopReason | null;
  dirtyRateBytesPerSec: number;
  linkRateBytesPerSec: number;
  /** The target offered post-copy and the domain can wait for pages. */
  postcopyAvailable: boolean;
  /** The domain can be throttled further and the policy allows it (`--auto-converge`). */
  canThrottle: boolean;
  /** The guest is throttled already. */
  throttling: boolean;
}

/** The page engine's next step: go on, take a throttle step, or switch to post-copy; with the reason. */
export type PageRoundAction = { action: 'continue' } | { action: 'throttle' | 'postcopy'; reason: string };

/**
 * One policy for the page engine, the same rule as the stream drivers': pre-copy while it
 * converges. A guest writing more than POSTCOPY_DIRTY_FACTOR x what the link moves goes to
 * post-copy after the first pass. On a stall: throttling when the guest writes at most that
 * factor x the link and may be throttled; post-copy otherwise. `postcopy` 'never' (or absent)
 * and `autoConverge` 'never' take those options away; 'always' switches after the first pass.
 */
export function decidePageRound(s: PageRoundSample, p: Pick<MigrationPolicy, 'postcopy'>): PageRoundAction {
  const mode = p.postcopy ?? 'never';
  const pc = mode !== 'never' && s.postcopyAvailable;
  const rates = `the guest dirties ${fmtRate(s.dirtyRateBytesPerSec)}, the link moves ${fmtRate(s.linkRateBytesPerSec)}`;
  if (pc && mode === 'always') return { action: 'postcopy', reason: 'post-copy requested (--postcopy always): switch after the first pass' };
  const fast = s.linkRateBytesPerSec > 0 && s.dirtyRateBytesPerSec > POSTCOPY_DIRTY_FACTOR * s.linkRateBytesPerSec;
  if (pc && s.round === 1 && fast) return { action: 'postcopy', reason: `${rates} (more than ${POSTCOPY_DIRTY_FACTOR}x): pre-copy cannot converge, switch after the first pass` };
  const stalled = s.stop === 'stalled' || (s.throttling && s.stop === null);
  if (!stalled) return { action: 'continue' };
  if (s.canThrottle && !(pc && fast)) return { action: 'throttle', reason: `pre-copy stalled; ${rates} (${pc ? `at most ${POSTCOPY_DIRTY_FACTOR}x` : 'post-copy not allowed or not offered'}): throttle the guest` };
  if (pc) return { action: 'postcopy', reason: `pre-copy stalled; ${rates}${s.canThrottle ? ` (more than ${POSTCOPY_DIRTY_FACTOR}x)` : ', throttling not allowed or at its limit'}: switch to post-copy` };
  return { action: 'continue' };
}
