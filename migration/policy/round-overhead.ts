/**
 * The fixed cost of a pre-copy round, as a finished migration's rounds show it: whatever a round
 * costs beyond moving its bytes (the round's start, the wait until the target applied its last
 * batch, the dirty-log harvest, the hand-offs between both agents' event loops). On a quiet host
 * it is 1-3 ms; on a loaded one 25-50 ms, however small the round, so a guest whose working set
 * the rounds should shrink stalls at what it dirties within that time. The migrator learns it
 * per node pair (services/scheduler/move-cost.ts foldLink) and the cost model adds it to every
 * round it predicts (cost-model.ts roundOverheadMs).
 */

/** One pre-copy round as the engine timed it. */
export interface TimedRound {
  /** Bytes the round put on the wire. */
  wireBytes: number;
  /** Round start until the target applied it and the dirty log was harvested, ms. */
  ms: number;
  /** The pacer's rate for the round, bytes/s (0 = unpaced). */
  paceBytesPerSec: number;
  /** The auto-converge throttle the round ran under (0 = none). */
  throttle: number;
}

/** A round must move this much for its rate to stand for the stream's (precopy/source-stats.ts MIN_TIMED_ROUND_BYTES). */
const MIN_RATE_ROUND_BYTES = 2 * 1024 * 1024;

/**
 * The per-round fixed cost of a migration's pre-copy rounds, ms, or undefined when it had no
 * round after the first. Only the rounds after the first count: round 1 carries the stream's
 * start-up and the target's first touch of every page (measured at load 9: 71 MiB/s in round 1,
 * 97 MiB/s in round 2). Of those, the unthrottled ones where there are at least two (a throttled
 * guest competes less for the CPU: its rounds run faster than the ones that decide whether
 * pre-copy converges), else all. Paced rounds: the median time beyond their bytes at their pace.
 * Unpaced: the median time beyond their bytes at the stream's rate, the faster of round 1's and
 * the slope of the least-squares line `ms = overhead + bytes / rate` through them (small rounds'
 * times scatter: a line through them alone may tilt either way).
 */
export function estimateRoundOverheadMs(rounds: readonly TimedRound[]): number | undefined {
  const later = rounds.slice(1).filter((r) => r.ms > 0 && Number.isFinite(r.ms));
  if (later.length === 0) return undefined;
  const free = later.filter((r) => r.throttle <= 0);
  const use = free.length >= 2 ? free : later;
  const paced = use.filter((r) => r.paceBytesPerSec > 0);
  if (paced.length * 2 >= use.length) return median(paced.map((r) => Math.max(0, r.ms - (r.wireBytes * 1000) / r.paceBytesPerSec)));
  const unpaced = use.filter((r) => r.paceBytesPerSec <= 0);
  const first = rounds[0];
  const firstRate = first.paceBytesPerSec <= 0 && first.wireBytes >= MIN_RATE_ROUND_BYTES && first.ms > 0 ? (first.wireBytes * 1000) / first.ms : 0;
  const rate = Math.max(firstRate, fittedRate(unpaced));
  return median(unpaced.map((r) => Math.max(0, r.ms - (rate > 0 ? (r.wireBytes * 1000) / rate : 0))));
}

/** Bytes/s of the least-squares line of ms over bytes through `rounds` (0 when the sizes are too alike or the line does not rise). */
function fittedRate(rounds: readonly TimedRound[]): number {
  if (rounds.length < 2) return 0;
  const n = rounds.length;
  const mx = rounds.reduce((s, r) => s + r.wireBytes, 0) / n;
  const my = rounds.reduce((s, r) => s + r.ms, 0) / n;
  const sxx = rounds.reduce((s, r) => s + (r.wireBytes - mx) ** 2, 0);
  const sxy = rounds.reduce((s, r) => s + (r.wireBytes - mx) * (r.ms - my), 0);
  // Sizes within 10% of their mean cannot separate the two terms.
  if (!(Math.sqrt(sxx / n) > 0.1 * mx) || !(sxy > 0)) return 0;
  return (sxx / sxy) * 1000;
}

function median(xs: number[]): number {
  const v = [...xs].sort((a, b) => a - b);
  const mid = v.length >> 1;
  return v.length % 2 ? v[mid] : (v[mid - 1] + v[mid]) / 2;
}
