/**
 * The one way to build a `MigrationResult`: named constructors for a migration that succeeded
 * and for one that failed or was cancelled, so every engine (pre-copy, QEMU) and the agent
 * report the same fields the same way.
 */
import type { DroverError } from '../lib/errors';
import type { MigrationResult } from './types';

/** What a succeeded result says: everything but the outcome and the error fields. */
export type SucceededFields = Omit<MigrationResult, 'outcome' | 'errorCode' | 'error'>;

/** A migration that committed and whose target runs the guest. */
export function succeededResult(f: SucceededFields): MigrationResult {
  const r: MigrationResult = {
    migrationId: f.migrationId, vm: f.vm, profile: f.profile, memBytes: f.memBytes, mode: f.mode,
    verified: f.verified, downtimeMs: f.downtimeMs, totalMs: f.totalMs, rounds: f.rounds, bytesSent: f.bytesSent,
    pageBytes: f.pageBytes, zeroPages: f.zeroPages, deviceBytes: f.deviceBytes,
    throughputBytesPerSec: f.throughputBytesPerSec, stopReason: f.stopReason, outcome: 'succeeded', errorCode: '', error: '',
    source: f.source, target: f.target, nonzeroBytes: f.nonzeroBytes,
  };
  if (f.downtimeBreakdown) r.downtimeBreakdown = { ...f.downtimeBreakdown };
  if (f.guestBlackoutMs !== undefined) r.guestBlackoutMs = f.guestBlackoutMs;
  if (f.hypervisorDowntimeMs !== undefined) r.hypervisorDowntimeMs = f.hypervisorDowntimeMs;
  if (f.throttlePercent !== undefined) r.throttlePercent = f.throttlePercent;
  if (f.pausedMs !== undefined) r.pausedMs = f.pausedMs;
  if (f.compressReason) r.compressReason = f.compressReason;
  if (f.roundOverheadMs !== undefined) r.roundOverheadMs = f.roundOverheadMs;
  if (f.compressedBatches) { r.compressedBatches = f.compressedBatches; r.compressedPageBytes = f.compressedPageBytes; r.compressedBytes = f.compressedBytes; }
  return r;
}

/** What a failed result knows: which migration, of what, between whom, and for how long. */
export interface FailedFields {
  migrationId: string;
  vm: string;
  profile: string;
  memBytes: number;
  /** Start of the migration to its failure, ms. */
  totalMs: number;
  source: string;
  target: string;
  /** How long the source VM was paused before the failure's rollback or so far (PauseClock), ms; absent = never paused. */
  pausedMs?: number;
}

/** A migration that failed (or, for a CANCELLED error, was cancelled) with `err`; no counters. */
export function failedResult(f: FailedFields, err: DroverError): MigrationResult {
  return {
    migrationId: f.migrationId, vm: f.vm, profile: f.profile, memBytes: f.memBytes, mode: 'precopy',
    verified: false, downtimeMs: 0, totalMs: f.totalMs, rounds: 0, bytesSent: 0, pageBytes: 0, zeroPages: 0, deviceBytes: 0,
    throughputBytesPerSec: 0, stopReason: '', outcome: err.code === 'CANCELLED' ? 'cancelled' : 'failed', errorCode: err.code, error: err.message,
    source: f.source, target: f.target, nonzeroBytes: 0,
    ...(f.pausedMs ? { pausedMs: f.pausedMs } : {}),
  };
}

/**
 * How long a source VM was paused in one migration (MigrationResult.pausedMs): from the pause
 * to the moment the pause ended on the source, by a resume (rollback, refusal) or by the
 * switchover's end (Owned: the source copy is discarded). A pause still open reads as "so far".
 * Wall-clock ms (performance.timeOrigin + performance.now()).
 */
export class PauseClock {
  private from = 0;
  private total = 0;

  /** The source paused at `atMs` (default now); a second start while paused is ignored. */
  start(atMs = PauseClock.now()): void {
    if (this.from === 0) this.from = atMs;
  }

  /** The pause ended (resumed or handed over). Safe to repeat. */
  end(atMs = PauseClock.now()): void {
    if (this.from === 0) return;
    this.total += Math.max(0, atMs - this.from);
    this.from = 0;
  }

  /** Paused ms so far (closed pauses plus the open one). */
  get ms(): number {
    return this.total + (this.from ? Math.max(0, PauseClock.now() - this.from) : 0);
  }

  /** Wall-clock now, ms. */
  static now(): number {
    return performance.timeOrigin + performance.now();
  }
}
