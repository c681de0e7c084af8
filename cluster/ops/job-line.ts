/** A one-line human summary of a migration job (printed by the CLI, the demo and the watches). */
import type { JobProgress, JobRecord } from '../keyspace';

const MiB = 2 ** 20;

/** "1.2 s" / "340 ms" / "-" (unknown). */
function duration(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) return '-';
  return ms >= 1000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms)} ms`;
}

/** The engine's live progress: round, data sent and remaining, send and dirty rates, estimate. */
export function progressText(p: JobProgress): string {
  return `round ${p.round} sent ${(p.sentBytes / MiB).toFixed(0)} MiB remaining ${(p.remainingBytes / MiB).toFixed(1)} MiB` +
    ` rate ${(p.rateBytesPerSec / MiB).toFixed(0)} MiB/s dirty ${(p.dirtyRateBytesPerSec / MiB).toFixed(0)} MiB/s eta ${duration(p.etaMs)} elapsed ${duration(p.elapsedMs)}`;
}

/** A finished job's figures: downtime (STOP -> RESUME), the guest's blackout, the source's pause. */
function resultText(j: JobRecord): string {
  const parts = [j.result as string];
  if (j.engine) parts.push(`downtime ${j.engine.downtimeMs.toFixed(2)} ms`);
  if (j.guestBlackoutMs !== undefined && j.guestBlackoutMs >= 0) parts.push(`blackout ${j.guestBlackoutMs.toFixed(1)} ms`);
  if (j.pausedMs) parts.push(`paused ${j.pausedMs.toFixed(1)} ms`);
  if (j.engine) parts.push(`total ${j.engine.totalMs.toFixed(0)} ms`);
  return parts.join(' ') + (j.error ? ` (${j.error})` : '');
}

/** A human line for a job: id, VM, route, reason, phase, then progress or the result. */
export function jobLine(j: JobRecord): string {
  const p = j.progress;
  const prog = p && !j.result ? ` ${progressText(p)}` : '';
  const res = j.result ? ` ${resultText(j)}` : '';
  return `${j.id} ${j.vm} ${j.from} -> ${j.to} [${j.reason}] ${j.phase}${prog}${res}`;
}
