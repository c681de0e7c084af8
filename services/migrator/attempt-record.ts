/**
 * The record one attempt leaves on its job (cluster/keyspace.ts AttemptRecord): the engine's
 * downtime (STOP -> RESUME), the guest-observed blackout and how long the source VM was paused,
 * for a failed attempt too (a pause that ended in a rollback is downtime the guest saw).
 */
import type { DroverError } from '../../lib/errors';
import type { AttemptRecord } from '../../cluster/keyspace';
import type { MigrationResult } from '../../migration/types';

/** Rounds ms to 0.1 ms (what the history keeps). */
const ms = (v: number): number => Math.round(v * 10) / 10;

/**
 * The record of attempt `attempt`: `result` is the engine's (succeeded, or the failed result the
 * source agent sent before its error), `blackoutMs` the target's largest heartbeat gap when the
 * engine did not measure one (undefined: not measured).
 */
export function attemptRecord(attempt: number, result: MigrationResult | undefined, error: DroverError | undefined, blackoutMs?: number): AttemptRecord {
  const ok = result?.outcome === 'succeeded';
  const blackout = result?.guestBlackoutMs ?? (ok ? blackoutMs : undefined);
  return {
    attempt,
    result: ok ? 'succeeded' : result?.outcome === 'cancelled' || error?.code === 'CANCELLED' ? 'cancelled' : 'failed',
    downtimeMs: ok ? ms(result.downtimeMs) : 0,
    guestBlackoutMs: blackout === undefined ? -1 : ms(blackout),
    pausedMs: ms(result?.pausedMs ?? 0),
    errorCode: ok ? '' : error?.code ?? result?.errorCode ?? '',
    error: ok ? '' : error?.message ?? result?.error ?? '',
    at: Date.now(),
  };
}
