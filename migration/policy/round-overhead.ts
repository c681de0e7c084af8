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
 * round after the first. A round of `w` bytes is taken to last `overhead + w / rate`: `rate` is
 * the pace of a paced round, else the stream's, read off round 1 (the largest, barely touched by
 * the overhead; corrected for it once) or, when round 1 was paced or under 2 MiB, the fastest
 * unpaced round of at least 2 MiB. The overhead is the median excess of the rounds after the
 * first (round 1 carries the stream's start-up), of the unthrottled ones where there are any (a
 * throttled guest competes less for the CPU: its rounds run faster than the ones that decide
 * whether pre-copy converges).
 */
export function estimateRoundOverheadMs(rounds: readonly TimedRound[]): number | undefined {
  const later = rounds.slice(1).filter((r) => r.ms > 0 && Number.isFinite(r.ms));
  if (later.length === 0) return undefined;
  const free = later.filter((r) => r.throttle <= 0);
  const use = free.length > 0 ? free : later;
  const first = rounds[0];
  const firstTimes = first.paceBytesPerSec <= 0 && first.wireBytes >= MIN_RATE_ROUND_BYTES && first.ms > 0;
  const timed = rounds.filter((r) => r.paceBytesPerSec <= 0 && r.wireBytes >= MIN_RATE_ROUND_BYTES && r.ms > 0);
  let stream = firstTimes ? (first.wireBytes * 1000) / first.ms : Math.max(0, ...timed.map((r) => (r.wireBytes * 1000) / r.ms));
  let overhead = medianExcess(use, stream);
  // Round 1 took the overhead too: its stream ran faster than its length says.
  if (firstTimes && first.ms > 2 * overhead) overhead = medianExcess(use, (stream = (first.wireBytes * 1000) / (first.ms - overhead)));
  return overhead;
}

/** The median of the rounds' time beyond their bytes at their rate (the pace, at most `stream`; else `stream`). */
function medianExcess(rounds: readonly TimedRound[], stream: number): number {
  const excess = rounds.map((r) => {
    const rate = r.paceBytesPerSec > 0 ? (stream > 0 ? Math.min(r.paceBytesPerSec, stream) : r.paceBytesPerSec) : stream;
    return Math.max(0, r.ms - (rate > 0 ? (r.wireBytes * 1000) / rate : 0));
  }).sort((a, b) => a - b);
  const mid = excess.length >> 1;
  return excess.length % 2 ? excess[mid] : (excess[mid - 1] + excess[mid]) / 2;
}
