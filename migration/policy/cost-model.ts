/**
 * The migration cost model: what a pre-copy migration of a VM would cost, from what can be
 * observed without sending anything (Clark et al., "Live Migration of Virtual Machines", §4:
 * iterative pre-copy bounded by the writable working set).
 *
 * Round 1 sends the non-zero bytes at the link rate; round n sends what the guest dirtied while
 * round n-1 ran, i.e. WWS(t_{n-1}) read off the measured curve (distinct pages dirtied within a
 * window of that length). Pre-copy stops when the remainder fits the downtime target at the
 * link rate (stop-conditions.ts predictDowntimeMs: the same rule, the same switchover overhead),
 * or when rounds stop shrinking (a round not below NOT_SHRINKING_RATIO of the one before, or the
 * dirty rate ≥ DIRTY_RATE_NEAR_LINK of the link, as convergence.ts), or at the round / bytes limits.
 *
 * Policy: 'precopy' when it converges; else 'postcopy' when the target offers it; else
 * 'throttle' (auto-converge, stop-conditions.ts nextThrottle). Pure: no clock, no I/O.
 */
import { DIRTY_RATE_NEAR_LINK, NOT_SHRINKING_RATIO } from './convergence';
import { predictDowntimeMs, SWITCHOVER_OVERHEAD_MS } from './stop-conditions';
import { DEFAULT_MAX_BYTES_FACTOR, DEFAULT_MAX_ROUNDS } from '../types';

/** One point of a writable-working-set curve: distinct bytes dirtied within a window of `windowMs`. */
export interface WssPoint {
  windowMs: number;
  bytes: number;
}

/** What the model needs. */
export interface CostInput {
  /** Guest RAM, bytes. */
  memBytes: number;
  /** Non-zero guest RAM (what round 1 sends), bytes; at most memBytes. */
  nonzeroBytes: number;
  /** Page-granular dirty rate, bytes/s (distinct pages dirtied per second at the finest window). */
  dirtyRateBytesPerSec: number;
  /** The WWS curve, any order; windows > 0. */
  wss: readonly WssPoint[];
  /** Link rate, bytes/s (> 0). */
  linkBytesPerSec: number;
  /** Downtime target, ms (> 0). */
  maxDowntimeMs: number;
  /** Round limit (default DEFAULT_MAX_ROUNDS). */
  maxRounds?: number;
  /** Bytes limit as a multiple of RAM (default DEFAULT_MAX_BYTES_FACTOR). */
  maxBytesFactor?: number;
  /** The target accepts post-copy (default false: the page engine has none). */
  postcopyAvailable?: boolean;
  /** Fixed cost of a migration outside the rounds (reservation, set-up, verification), ms; default 0. A link record learns it. */
  setupMs?: number;
}

/** One predicted round. */
export interface PredictedRound {
  bytes: number;
  ms: number;
}

/** What the model predicts. */
export interface CostPrediction {
  /** Pre-copy rounds, not counting the stop-and-copy. */
  rounds: number;
  roundsDetail: PredictedRound[];
  /** Bytes on the wire (page payload: rounds plus the last copy). */
  predictedBytes: number;
  /** Start to resume on the target, ms. */
  predictedTotalMs: number;
  /** The stop-and-copy: remainder at the link rate plus the switchover overhead, ms. */
  predictedDowntimeMs: number;
  /** The remainder fits the target without throttling or post-copy. */
  converges: boolean;
  policy: 'precopy' | 'throttle' | 'postcopy';
  policyReason: string;
  /** Why pre-copy stopped iterating in the model. */
  stop: 'converged' | 'not-shrinking' | 'dirty-rate-near-link' | 'max-rounds' | 'max-bytes';
}

/** Throws naming the first bad input. */
function check(i: CostInput): void {
  const pos = (v: number, n: string) => { if (!(Number.isFinite(v) && v > 0)) throw new RangeError(`cost model: ${n} must be a positive number (got ${v})`); };
  const nonneg = (v: number, n: string) => { if (!(Number.isFinite(v) && v >= 0)) throw new RangeError(`cost model: ${n} must be ≥ 0 (got ${v})`); };
  pos(i.memBytes, 'memBytes');
  pos(i.linkBytesPerSec, 'linkBytesPerSec');
  pos(i.maxDowntimeMs, 'maxDowntimeMs');
  nonneg(i.nonzeroBytes, 'nonzeroBytes');
  nonneg(i.dirtyRateBytesPerSec, 'dirtyRateBytesPerSec');
  for (const p of i.wss) {
    pos(p.windowMs, 'wss windowMs');
    nonneg(p.bytes, 'wss bytes');
  }
}

/**
 * WWS(t): linear between the measured points, from (0, 0); beyond the longest window it grows
 * at the last segment's slope (flat for a bounded working set), capped at `memBytes`. Without a
 * curve: dirty rate × t, capped at RAM.
 */
export function wssAt(curve: readonly WssPoint[], t: number, dirtyRate: number, memBytes: number): number {
  const pts = [...curve].sort((a, b) => a.windowMs - b.windowMs);
  if (t <= 0) return 0;
  if (pts.length === 0) return Math.min(memBytes, (dirtyRate * t) / 1000);
  let prev: WssPoint = { windowMs: 0, bytes: 0 };
  for (const p of pts) {
    if (t <= p.windowMs) return Math.min(memBytes, prev.bytes + ((p.bytes - prev.bytes) * (t - prev.windowMs)) / (p.windowMs - prev.windowMs || 1));
    prev = p;
  }
  const before = pts.length > 1 ? pts[pts.length - 2] : { windowMs: 0, bytes: 0 };
  const slope = Math.max(0, (prev.bytes - before.bytes) / (prev.windowMs - before.windowMs || 1));
  return Math.min(memBytes, prev.bytes + slope * (t - prev.windowMs));
}

/** Predicts a pre-copy migration (see the file comment). */
export function predictMigration(i: CostInput): CostPrediction {
  check(i);
  const link = i.linkBytesPerSec;
  const maxRounds = i.maxRounds ?? DEFAULT_MAX_ROUNDS;
  const maxBytes = (i.maxBytesFactor ?? DEFAULT_MAX_BYTES_FACTOR) * i.memBytes;
  const msOf = (b: number) => (b / link) * 1000;
  const rounds: PredictedRound[] = [];
  let send = Math.min(i.nonzeroBytes, i.memBytes);
  let total = 0;
  let stop: CostPrediction['stop'];
  for (;;) {
    const ms = msOf(send);
    rounds.push({ bytes: send, ms });
    total += send;
    const next = wssAt(i.wss, ms, i.dirtyRateBytesPerSec, i.memBytes);
    const prevSend = send;
    send = next;
    if (predictDowntimeMs(next, link) <= i.maxDowntimeMs) { stop = 'converged'; break; }
    if (i.dirtyRateBytesPerSec >= DIRTY_RATE_NEAR_LINK * link) { stop = 'dirty-rate-near-link'; break; }
    if (rounds.length > 1 && next >= NOT_SHRINKING_RATIO * prevSend) { stop = 'not-shrinking'; break; }
    if (rounds.length >= maxRounds) { stop = 'max-rounds'; break; }
    if (total + next >= maxBytes) { stop = 'max-bytes'; break; }
  }
  const downtime = predictDowntimeMs(send, link);
  const converges = stop === 'converged';
  const totalMs = rounds.reduce((s, r) => s + r.ms, 0) + downtime + Math.max(0, i.setupMs ?? 0);
  return {
    rounds: rounds.length,
    roundsDetail: rounds,
    predictedBytes: total + send,
    predictedTotalMs: totalMs,
    predictedDowntimeMs: downtime,
    converges,
    stop,
    ...choosePolicy(i, stop, send, downtime),
  };
}

function choosePolicy(i: CostInput, stop: CostPrediction['stop'], remainder: number, downtimeMs: number): Pick<CostPrediction, 'policy' | 'policyReason'> {
  const mb = (b: number) => `${(b / 1048576).toFixed(1)} MiB`;
  if (stop === 'converged') {
    return { policy: 'precopy', policyReason: `pre-copy converges: the last ${mb(remainder)} fit the ${i.maxDowntimeMs} ms target at ${mb(i.linkBytesPerSec)}/s (${downtimeMs.toFixed(1)} ms incl. ${SWITCHOVER_OVERHEAD_MS} ms switchover)` };
  }
  const why = stop === 'dirty-rate-near-link'
    ? `dirty rate ${mb(i.dirtyRateBytesPerSec)}/s ≥ ${DIRTY_RATE_NEAR_LINK * 100}% of the link ${mb(i.linkBytesPerSec)}/s`
    : stop === 'not-shrinking'
      ? `rounds stop shrinking at ${mb(remainder)} (the writable working set), ${downtimeMs.toFixed(1)} ms > target ${i.maxDowntimeMs} ms`
      : `${stop} reached with ${mb(remainder)} left (${downtimeMs.toFixed(1)} ms > target ${i.maxDowntimeMs} ms)`;
  if (i.postcopyAvailable) return { policy: 'postcopy', policyReason: `${why}; the target offers post-copy: switch after the first pass` };
  return { policy: 'throttle', policyReason: `${why}; auto-converge: throttle the guest's vCPUs until the remainder fits (the guest runs slower during the migration)` };
}
