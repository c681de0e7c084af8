/**
 * The migration cost model: what a pre-copy migration of a VM would cost, from what can be
 * observed without sending anything (Clark et al., "Live Migration of Virtual Machines", §4:
 * iterative pre-copy bounded by the writable working set).
 *
 * Round 1 sends the non-zero bytes at the link rate; round n sends what the guest dirtied while
 * round n-1 ran, i.e. WWS(t_{n-1}) read off the measured curve (distinct pages dirtied within a
 * window of that length). Pre-copy stops when the remainder fits the downtime target at the
 * link rate (stop-conditions.ts predictDowntimeMs: the same rule, the same switchover overhead),
 * or when rounds stall (the engine's decideStop: one more round predicted not to shrink the
 * remainder, STALL_ROUNDS rounds without progress, or Xen's rule; labelled dirty-rate-near-link
 * when the dirty rate ≥ DIRTY_RATE_NEAR_LINK of the link), or at the round / bytes limits. Each round sends its dirty set less the pages dirtied again
 * before their turn (Xen's to_skip); under a cap every round runs at the cap (rate-control.ts roundRate).
 *
 * Under a cap with a known compression ratio (compressionRatio) the rounds go LZ4-encoded as
 * compression auto would send them (after its two raw runs): the pacer paces wire bytes.
 *
 * Policy: the engine's own choice after each round (convergence.ts decidePageRound): 'precopy'
 * when it converges; 'postcopy' where the policy allows it (`postcopy` mode) and the target offers
 * it, when the guest dirties more than twice what the link moves or pre-copy stalls and throttling
 * would not do (then the blackout is the switch and the prediction adds the push of the
 * remainder until all pages are present, postcopy-estimate.ts); else 'throttle' (auto-converge,
 * stop-conditions.ts nextThrottle). Pure: no clock, no I/O.
 *
 * Throttling term (the engine's auto-converge, precopy-source.ts autoConverge): when pre-copy
 * alone does not converge, the engine notices the stall (above), then takes one nextThrottle
 * step per round that still does not fit (20%, 60%, 80%,
 * ... 99%). A throttle t slows the guest to (1 − t) of its CPU time; a guest paced below its
 * CPU-bound write speed (`guestMaxWriteBytesPerSec`) slows only once (1 − t) × that speed is
 * below its rate. Round n then dirties WWS(speed × t_{n-1}). The predicted figures include
 * every throttled round; `converges` stays "without throttling".
 */
import { decidePageRound, DIRTY_RATE_NEAR_LINK } from './convergence';
import { estimatePostcopy, type PostcopyEstimate } from './postcopy-estimate';
import { decideStop, nextThrottle, NO_PROGRESS_RATIO, predictDowntimeMs, RoundCurve, SWITCHOVER_OVERHEAD_MS, THROTTLE_MAX } from './stop-conditions';
import { PACER_BURST_BYTES, roundRate } from './rate-control';
import { wssAt, type WssPoint } from './wss-curve';

export { wssAt, type WssPoint } from './wss-curve';
import { DEFAULT_MAX_BYTES_FACTOR, DEFAULT_MAX_ROUNDS } from '../types';

/**
 * Link rate every prediction assumes where no rate was given and no migration has measured the
 * pair (analyze, the migrator's job prediction, the planner, `vm list`): 1 Gbit/s, the slowest
 * link a migration network commonly has. Assuming it under-promises on a faster link (the first
 * finished migration replaces it with the measured rate) instead of promising loopback speeds
 * that a real network between two hosts does not give.
 */
export const DEFAULT_LINK_BYTES_PER_SEC = 1e9 / 8;

/** A round must move this much for the engine to time its rate (precopy/source-stats.ts MIN_TIMED_ROUND_BYTES; policy may not import the engine). */
const MIN_TIMED_ROUND_BYTES = 2 * 1024 * 1024;
/**
 * Page bytes of one raw run of compression auto (precopy/batch-compressor.ts: RAW_RUN_BATCHES + 1
 * batches of 1 MiB, the first acknowledgement starting it). A round's end drops a run in progress.
 */
const COMPRESSOR_RUN_BYTES = 17 * 1024 * 1024;
/** Raw runs auto completes before it decides: one warm-up run (not measured), one measured. */
const COMPRESSOR_RUNS_TO_DECIDE = 2;
/** Share of the batches auto still sends raw once it encodes (a recheck run of RAW_RUN_BATCHES + 1 every RECHECK_BATCHES encoded). */
const COMPRESSOR_RAW_SHARE = 17 / (64 + 17);
/** Auto encodes when the predicted rate beats raw by this (batch-compressor.ts PAYS_FACTOR): paced by a cap, LZ4 moves 1 / ratio more pages. */
const COMPRESSION_PAYS_FACTOR = 1.2;

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
  /** The target offers post-copy and the domain can wait for pages (default false). */
  postcopyAvailable?: boolean;
  /** The policy's post-copy mode (`--postcopy`; default 'auto' when postcopyAvailable, else 'never'): convergence.ts decidePageRound decides, as in the engine. */
  postcopy?: 'never' | 'auto' | 'always';
  /** The migration's bandwidth cap (`--bandwidth`), bytes/s; every round then runs at it (rate-control.ts roundRate); 0/absent = uncapped. */
  capBytesPerSec?: number;
  /** Model the engine's auto-converge when pre-copy alone stalls (default true: the sim engine throttles; false = stop-and-copy at the stall). */
  autoConverge?: boolean;
  /**
   * The guest's unthrottled (CPU-bound) write speed, bytes/s: how far a throttle slows it
   * (cpuBoundWriteRate). Default: the dirty rate, as for a guest that writes as fast as its vCPUs
   * run (mmuncher); a paced guest (web at 100 MiB/s on ~5% of its vCPU) writes far faster when it runs.
   */
  guestMaxWriteBytesPerSec?: number;
  /** Fixed cost of a migration outside the rounds (reservation, set-up, verification), ms; default 0. A link record learns it. */
  setupMs?: number;
  /**
   * Fixed cost of every pre-copy round beyond moving its bytes, ms (round-overhead.ts; a link
   * record learns it as roundMs); default 0. A round however small takes this long, so the guest
   * dirties WWS(this) at least while it runs: on a loaded host (25-50 ms) web's rounds stall near
   * 2 MiB and the engine throttles where the rounds alone would converge.
   */
  roundOverheadMs?: number;
  /**
   * Blackout of a switch to post-copy, ms: pause, the hot pages and device state, the target's
   * resume, both agents' hand-offs (a link record learns it from finished post-copy migrations as
   * postcopySwitchMs); default the engine's SWITCHOVER_OVERHEAD_MS (measured 22-65 ms on a loaded
   * host where that 1 ms was predicted). A pre-copy downtime keeps the engine's own rule.
   */
  postcopySwitchMs?: number;
  /**
   * LZ4's encoded / page bytes on this guest's pages (what compression auto's sampled batches
   * measure; a result's compressedBytes / compressedPageBytes); absent = unknown, pages go raw.
   * Under a cap auto encodes once it has decided (two raw runs of COMPRESSOR_RUN_BYTES, each within one round):
   * the pacer paces wire bytes, so pages then move 1 / ratio faster.
   */
  compressionRatio?: number;
}

/** One predicted round. */
export interface PredictedRound {
  /** Page bytes sent. */
  bytes: number;
  /** Bytes on the wire (less than `bytes` where batches go LZ4-encoded). */
  wireBytes: number;
  ms: number;
}

/** What the model predicts. */
export interface CostPrediction {
  /** Pre-copy rounds, not counting the stop-and-copy. */
  rounds: number;
  roundsDetail: PredictedRound[];
  /** Bytes on the wire (page payload, LZ4-encoded where auto would encode: rounds plus the last copy). */
  predictedBytes: number;
  /** Start to resume on the target, ms. */
  predictedTotalMs: number;
  /** The stop-and-copy: remainder at the link rate plus the switchover overhead, ms. */
  predictedDowntimeMs: number;
  /** The remainder fits the target without throttling or post-copy. */
  converges: boolean;
  policy: 'precopy' | 'throttle' | 'postcopy';
  policyReason: string;
  /** Why pre-copy alone stopped iterating in the model. */
  stop: 'converged' | 'not-shrinking' | 'dirty-rate-near-link' | 'max-rounds' | 'max-bytes';
  /** The throttle auto-converge reached, % of vCPU time taken (0 = none). */
  throttlePercent: number;
  /** After throttling: the remainder fits the target (false also when no throttling was modelled). */
  convergesThrottled: boolean;
  /** When the policy switches to post-copy: after which pre-copy round, and what follows the switch. */
  postcopy?: PostcopyEstimate & { afterRound: number };
}

/**
 * A guest's unthrottled write speed from an observation: its dirty rate over the share of its
 * vCPUs' time they ran (`vcpuBusy` of `vcpus`), never below the rate; the rate itself when the
 * utilisation is unknown (0). A CPU-bound guest's speed is what it dirties, and so is the host's
 * load: measured at a load of 12, mmuncher wrote 987 MiB/s (3.5 GB/s on a quiet host), where a
 * constant 2 GB/s had the first throttle steps change nothing. A paced guest (web: 100 MiB/s on
 * ~5% of its vCPU) is slowed by a throttle only beyond 1 − rate / this.
 */
export function cpuBoundWriteRate(dirtyRateBytesPerSec: number, vcpuBusy: number, vcpus: number): number {
  const rate = Math.max(0, dirtyRateBytesPerSec);
  if (!(vcpuBusy > 0 && vcpus > 0)) return rate;
  return Math.max(rate, (rate * vcpus) / Math.min(vcpus, vcpuBusy));
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
  nonneg(i.roundOverheadMs ?? 0, 'roundOverheadMs');
  nonneg(i.postcopySwitchMs ?? 0, 'postcopySwitchMs');
  for (const p of i.wss) {
    pos(p.windowMs, 'wss windowMs');
    nonneg(p.bytes, 'wss bytes');
  }
}

/** Steps of the to_skip integration over one round (the curve is smooth: more change nothing visible). */
const SKIP_STEPS = 16;

/**
 * The rounds as the engine would run them: each round's rate (under a cap: the cap, paced on
 * wire bytes, each round starting with the pacer's burst; rate-control.ts) and what it leaves dirty.
 */
class RoundRunner {
  readonly rounds: PredictedRound[] = [];
  /** Page bytes sent so far. */
  total = 0;
  /** Bytes on the wire so far. */
  wire = 0;
  /** Dirty rate of the latest round, bytes/s (the policy's input after each round). */
  prevDirtyRate = 0;
  private timedRate = 0;
  /** Compression auto has decided to encode. */
  private encoding = false;
  /** Raw runs auto still has to complete before it decides. */
  private runsLeft = COMPRESSOR_RUNS_TO_DECIDE;
  constructor(private readonly i: CostInput) {}

  /** Rate of the stop-and-copy: the cap (or the link when it is slower). */
  get finalRate(): number {
    const cap = this.i.capBytesPerSec ?? 0;
    return cap > 0 ? Math.min(this.i.linkBytesPerSec, cap) : this.i.linkBytesPerSec;
  }

  /** Wire bytes per page byte once auto encodes: its raw rechecks, the rest at the ratio. */
  private get encodedShare(): number {
    const r = this.i.compressionRatio ?? 1;
    return COMPRESSOR_RAW_SHARE + (1 - COMPRESSOR_RAW_SHARE) * r;
  }

  /** Auto would encode under this migration's cap: paced, LZ4 moves 1 / ratio more pages. */
  private get compresses(): boolean {
    const r = this.i.compressionRatio;
    return (this.i.capBytesPerSec ?? 0) > 0 && r !== undefined && r > 0 && r * COMPRESSION_PAYS_FACTOR < 1;
  }

  /** Wire bytes of `pages` page bytes sent as a round: raw until auto has completed its raw runs (whole ones within a round), then encoded. */
  wireOf(pages: number): number {
    if (!this.compresses) return pages;
    if (this.encoding) return pages * this.encodedShare;
    const runs = Math.floor(pages / COMPRESSOR_RUN_BYTES);
    if (runs < this.runsLeft) { this.runsLeft -= runs; return pages; }
    const raw = this.runsLeft * COMPRESSOR_RUN_BYTES;
    this.runsLeft = 0;
    this.encoding = true;
    return raw + (pages - raw) * this.encodedShare;
  }

  /** The stop-and-copy's wire bytes (every batch encoded when auto decided to: the paused round measures nothing). */
  finalWire(pages: number): number {
    return this.encoding ? pages * (this.i.compressionRatio ?? 1) : pages;
  }

  /** Sends `bytes` as the next round with the guest at `speed` of its pace; returns what it left dirty. */
  round(bytes: number, speed = 1): number {
    const cap = this.i.capBytesPerSec ?? 0;
    const link = this.i.linkBytesPerSec;
    const paced = roundRate(cap);
    const r = paced > 0 ? Math.min(link, paced) : link;
    const pageRate = this.compresses && this.encoding ? r / this.encodedShare : r;
    const sent = this.unskipped(bytes, pageRate, speed);
    const wire = this.wireOf(sent);
    // Paced: the burst goes at the link's rate, the rest at the round's.
    const burst = cap > 0 ? Math.min(wire, PACER_BURST_BYTES) : 0;
    const ms = ((wire - burst) / r + burst / link) * 1000 + Math.max(0, this.i.roundOverheadMs ?? 0);
    this.rounds.push({ bytes: sent, wireBytes: wire, ms });
    this.total += sent;
    this.wire += wire;
    // The engine times a round by its wire bytes over its length (precopy/source-stats.ts recordRound).
    if (wire >= MIN_TIMED_ROUND_BYTES && ms > 0) this.timedRate = (wire * 1000) / ms;
    const next = wssAt(this.i.wss, ms * speed, this.i.dirtyRateBytesPerSec * speed, this.i.memBytes);
    this.prevDirtyRate = ms > 0 ? (next * 1000) / ms : 0;
    return next;
  }

  /**
   * Xen's to_skip: of a round's `bytes` dirty set, a page dirtied again before its turn is left
   * for the next round. At τ into the round a page is skipped with probability
   * WSS(τ) / max(set, working set); the sent bytes are integrated over the round in SKIP_STEPS.
   */
  private unskipped(bytes: number, rate: number, speed: number): number {
    const pts = this.i.wss;
    const wcap = pts.length ? Math.max(...pts.map((p) => p.bytes)) : this.i.memBytes;
    const denom = Math.max(bytes, wcap, 1);
    const dx = bytes / SKIP_STEPS;
    let sent = 0;
    for (let k = 0; k < SKIP_STEPS; k++) {
      const tauMs = (sent / rate) * 1000;
      const pSkip = Math.min(1, wssAt(pts, tauMs * speed, this.i.dirtyRateBytesPerSec * speed, this.i.memBytes) / denom);
      sent += dx * (1 - pSkip);
    }
    return sent;
  }

  /** The rate the engine predicts by (the latest timed round's). */
  get predictionRate(): number {
    return this.timedRate || this.finalRate;
  }
}

/**
 * Predicts a pre-copy migration (see the file comment): the engine's rounds and its stop rule
 * (stop-conditions.ts decideStop, fed what the engine's RoundCurve would hold: the predicted
 * rounds' lengths and what they left dirty, at the current throttle), and its auto-converge on a stall.
 */
export function predictMigration(i: CostInput): CostPrediction {
  check(i);
  const maxRounds = i.maxRounds ?? DEFAULT_MAX_ROUNDS;
  const maxBytes = (i.maxBytesFactor ?? DEFAULT_MAX_BYTES_FACTOR) * i.memBytes;
  const rate = Math.max(1, i.dirtyRateBytesPerSec);
  const maxWrite = i.guestMaxWriteBytesPerSec ?? rate;
  const speedAt = (t: number) => (t <= 0 ? 1 : Math.min(1, ((1 - t) * maxWrite) / rate));
  const mode = i.postcopy ?? (i.postcopyAvailable ? 'auto' : 'never');
  const policy = { maxDowntimeMs: i.maxDowntimeMs, bandwidthBytesPerSec: i.capBytesPerSec ?? 0, maxRounds, maxBytesFactor: maxBytes / i.memBytes, timeoutMs: 0, verify: false };
  const run = new RoundRunner(i);
  const seen = new RoundCurve();
  let send = Math.min(i.nonzeroBytes, i.memBytes);
  let throttle = 0;
  let stalled = 0;
  let lastDirty = Infinity;
  let prevSent = NaN;
  let firstStall: CostPrediction['stop'] | undefined;
  let switched: string | undefined;
  let end: 'fits' | 'max-rounds' | 'max-bytes' | 'stalled' | 'postcopy';
  for (;;) {
    const before = run.total;
    send = run.round(send, speedAt(throttle));
    const sentThis = run.total - before;
    stalled = send >= NO_PROGRESS_RATIO * lastDirty ? stalled + 1 : 0;
    lastDirty = send;
    // The engine's stop rule knows only the curve its own rounds measured at this throttle.
    seen.observe(run.rounds[run.rounds.length - 1].ms, send, throttle);
    const decided = decideStop({
      round: run.rounds.length, dirtyBytes: send, sentThisRound: sentThis, sentPreviousRound: prevSent, sentTotal: run.total,
      throughputBytesPerSec: run.predictionRate, memBytes: i.memBytes, elapsedMs: 0, roundsWithoutProgress: stalled,
      wss: seen.at(throttle), dirtyRateBytesPerSec: run.prevDirtyRate,
    }, policy, 0);
    const reason: typeof end | undefined = decided === 'converged' ? 'fits' : decided === 'max-rounds' || decided === 'max-bytes' || decided === 'stalled' ? decided : undefined;
    prevSent = sentThis;
    if (reason === 'stalled') firstStall ??= i.dirtyRateBytesPerSec >= DIRTY_RATE_NEAR_LINK * run.finalRate ? 'dirty-rate-near-link' : 'not-shrinking';
    // The engine's next step (precopy-source.ts nextStep): go on, a throttle step, or post-copy.
    const step = decidePageRound({
      round: run.rounds.length, stop: decided, dirtyRateBytesPerSec: run.prevDirtyRate, linkRateBytesPerSec: run.predictionRate,
      postcopyAvailable: !!i.postcopyAvailable, canThrottle: i.autoConverge !== false && throttle < THROTTLE_MAX, throttling: throttle > 0,
    }, { postcopy: mode });
    if (step.action === 'postcopy') { switched = step.reason; firstStall ??= converged(decided) ? undefined : 'not-shrinking'; end = 'postcopy'; break; }
    if (step.action === 'throttle') { throttle = nextThrottle(throttle); stalled = 0; continue; }
    if (reason) { end = reason; break; }
  }
  const stop: CostPrediction['stop'] = firstStall ?? (end === 'fits' ? 'converged' : end === 'stalled' || end === 'postcopy' ? 'not-shrinking' : end);
  const convergesThrottled = throttle > 0 && end === 'fits';
  const pc = end === 'postcopy' ? { afterRound: run.rounds.length, ...estimatePostcopy(send, run.finalWire(send), run.finalRate, i.wss, i.dirtyRateBytesPerSec, i.memBytes) } : undefined;
  // Post-copy's blackout carries the switch, not the remainder.
  const downtime = pc ? Math.max(0, i.postcopySwitchMs ?? SWITCHOVER_OVERHEAD_MS) : predictDowntimeMs(run.finalWire(send), run.finalRate);
  const totalMs = run.rounds.reduce((s, r) => s + r.ms, 0) + downtime + (pc?.allPresentMs ?? 0) + Math.max(0, i.setupMs ?? 0);
  const choice = switched !== undefined && pc
    ? { policy: 'postcopy' as const, policyReason: `${switched}; the target resumes after ~${downtime.toFixed(1)} ms and has all pages ${pc.allPresentMs.toFixed(0)} ms later (${(send / 1048576).toFixed(1)} MiB pushed; about ${pc.pageWaits} page waits of up to ${pc.pageWaitMaxMs.toFixed(0)} ms)` }
    : choosePolicy(i, stop, send, downtime, throttle, convergesThrottled);
  return {
    rounds: run.rounds.length,
    roundsDetail: run.rounds,
    predictedBytes: run.wire + run.finalWire(send),
    predictedTotalMs: totalMs,
    predictedDowntimeMs: downtime,
    converges: stop === 'converged',
    stop,
    throttlePercent: Math.round(throttle * 100),
    convergesThrottled,
    ...(pc ? { postcopy: pc } : {}),
    ...choice,
  };
}

/** The stop rule's verdict was that the remainder fits. */
function converged(decided: string | null): boolean {
  return decided === 'converged';
}

function choosePolicy(i: CostInput, stop: CostPrediction['stop'], remainder: number, downtimeMs: number, throttle: number, throttledOk: boolean): Pick<CostPrediction, 'policy' | 'policyReason'> {
  const mb = (b: number) => `${(b / 1048576).toFixed(1)} MiB`;
  if (stop === 'converged') {
    return { policy: 'precopy', policyReason: `pre-copy converges: the last ${mb(remainder)} fit the ${i.maxDowntimeMs} ms target at ${mb(i.linkBytesPerSec)}/s (${downtimeMs.toFixed(1)} ms incl. ${SWITCHOVER_OVERHEAD_MS} ms switchover)` };
  }
  const why = stop === 'dirty-rate-near-link'
    ? `dirty rate ${mb(i.dirtyRateBytesPerSec)}/s ≥ ${DIRTY_RATE_NEAR_LINK * 100}% of the link ${mb(i.linkBytesPerSec)}/s`
    : stop === 'not-shrinking'
      ? `rounds stop shrinking at ${mb(remainder)} (the writable working set), ${downtimeMs.toFixed(1)} ms > target ${i.maxDowntimeMs} ms`
      : `${stop} reached with ${mb(remainder)} left (${downtimeMs.toFixed(1)} ms > target ${i.maxDowntimeMs} ms)`;
  if (throttle > 0) {
    return {
      policy: 'throttle',
      policyReason: `${why}; auto-converge: throttle the guest's vCPUs (up to ${Math.round(throttle * 100)}%) ${throttledOk ? 'until the remainder fits' : `but the last ${mb(remainder)} still take ${downtimeMs.toFixed(1)} ms`} (the guest runs slower during the migration)`,
    };
  }
  return { policy: 'throttle', policyReason: `${why}; auto-converge: throttle the guest's vCPUs until the remainder fits (the guest runs slower during the migration)` };
}
