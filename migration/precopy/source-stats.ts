/**
 * The counters of one source-side pre-copy migration, and the progress reports and the final
 * result built from them. Plain bookkeeping: the phase driver (precopy-source.ts) decides,
 * this only counts and measures.
 */
import { PAGE_SIZE } from '../../hypervisor/types';
import type { MigrationPhase, MigrationProgress } from '../types';
import { estimateRoundOverheadMs, type TimedRound } from '../policy/round-overhead';
import { setRanges } from '../wire/range-table';

/** A round must move this much to time the landing rate from it (smaller ones are all latency). */
export const MIN_TIMED_ROUND_BYTES = 2 * 1024 * 1024;
/** Progress events at most this often, ms. */
export const PROGRESS_INTERVAL_MS = 200;

/** Counters of one pre-copy migration on the source. */
export class SourceStats {
  /** When the migration started (performance.now()). */
  readonly t0 = performance.now();
  /** Rounds started (the stop-and-copy round included). */
  round = 0;
  /** Bytes on the wire (encoded batch frames). */
  bytesSent = 0;
  /** Page payload bytes sent. */
  pageBytes = 0;
  /** Zero pages sent as zero ranges. */
  zeroPages = 0;
  /** Size of the device state sent. */
  deviceBytes = 0;
  /** Time spent sending (rounds and the stop-and-copy), ms. */
  sendingMs = 0;
  /** Guest RAM sent with content: distinct pages sent at least once as a payload (zero pages are flags), bytes. */
  nonzeroBytes = 0;
  /** Pages already counted in nonzeroBytes (bit per page; allocated at the first batch). */
  private contentSent: Uint32Array | undefined;
  /** Dirty rate measured over the latest round, bytes/s. */
  dirtyRate = 0;
  /** Bytes of the current round not sent yet. */
  roundRemaining = 0;
  /** Landing rate of the latest round that moved at least MIN_TIMED_ROUND_BYTES, bytes/s. */
  roundRateEstimate = 0;
  /** The pre-copy rounds as timed (the per-round fixed cost is read off them). */
  private readonly timed: TimedRound[] = [];
  private lastProgressAt = 0;
  private lastProgressBytes = 0;
  private rate = 0;

  /** Counts the payload pages of a batch (`ranges`: [first, count, ...]) not sent with content before, in a guest of `pageCount` pages. */
  contentPages(ranges: readonly number[], pageCount: number): void {
    const seen = this.contentSent ??= new Uint32Array(Math.ceil(pageCount / 32));
    this.nonzeroBytes += setRanges(seen, ranges) * PAGE_SIZE;
  }

  /** Measured link throughput so far, bytes/s. */
  linkRate(): number {
    return this.sendingMs > 0 ? (this.bytesSent * 1000) / this.sendingMs : 0;
  }

  /** Bytes/s to predict the next round by: the latest timed round's, else the link's. */
  predictionRate(): number {
    return this.roundRateEstimate || this.linkRate();
  }

  /** Ms since the migration started. */
  elapsedMs(): number {
    return performance.now() - this.t0;
  }

  /**
   * Accounts for a pre-copy round that put `wire` bytes on the wire in `roundMs` (until the
   * target applied it) and left `dirtyBytes` dirty behind it, paced at `paceBytesPerSec` (0 =
   * unpaced) with the guest under `throttle`.
   */
  recordRound(wire: number, roundMs: number, dirtyBytes: number, paceBytesPerSec = 0, throttle = 0): void {
    this.timed.push({ wireBytes: wire, ms: roundMs, paceBytesPerSec, throttle });
    // Later rounds rewrite pages the target has already faulted in: the latest round that
    // moved enough data to time it is the best predictor of the next.
    if (roundMs > 0 && wire >= MIN_TIMED_ROUND_BYTES) this.roundRateEstimate = (wire * 1000) / roundMs;
    this.sendingMs += roundMs;
    this.dirtyRate = roundMs > 0 ? (dirtyBytes * 1000) / roundMs : 0;
  }

  /** The fixed cost of a pre-copy round, ms (round-overhead.ts), or undefined before a second round. */
  roundOverheadMs(): number | undefined {
    return estimateRoundOverheadMs(this.timed);
  }

  /** Pages of the current round that turned out to need nothing sent. */
  settle(pages: number): void {
    this.roundRemaining -= pages * PAGE_SIZE;
  }

  /** Pages of the current round sent. */
  sent(pages: number): void {
    this.roundRemaining = Math.max(0, this.roundRemaining - pages * PAGE_SIZE);
  }

  /**
   * A progress report in `phase`, or undefined when the last one is younger than
   * PROGRESS_INTERVAL_MS and `force` is false.
   */
  progress(migrationId: string, phase: MigrationPhase, force: boolean): MigrationProgress | undefined {
    const now = performance.now();
    if (!force && now - this.lastProgressAt < PROGRESS_INTERVAL_MS) return undefined;
    if (this.lastProgressAt > 0 && now > this.lastProgressAt) this.rate = ((this.bytesSent - this.lastProgressBytes) * 1000) / (now - this.lastProgressAt);
    this.lastProgressAt = now;
    this.lastProgressBytes = this.bytesSent;
    const link = this.linkRate();
    return {
      migrationId, phase, round: this.round, remainingBytes: this.roundRemaining,
      dirtyRateBytesPerSec: this.dirtyRate, rateBytesPerSec: this.rate, sentBytes: this.bytesSent,
      etaMs: link > 0 ? (this.roundRemaining / Math.max(1, link - this.dirtyRate)) * 1000 : NaN, elapsedMs: now - this.t0,
    };
  }
}
