/** A one-line human summary of a migration job (printed by the CLI, the demo and the watches). */
import type { JobRecord } from '../keyspace';

const MiB = 2 ** 20;

/** A human line for a job: id, VM, route, reason, phase, then progress or the result. */
export function jobLine(j: JobRecord): string {
  const p = j.progress;
  const prog = p && !j.result ? ` round ${p.round} sent ${(p.sentBytes / MiB).toFixed(0)} MiB remaining ${(p.remainingBytes / MiB).toFixed(1)} MiB dirty ${(p.dirtyRateBytesPerSec / MiB).toFixed(0)} MiB/s` : '';
  const res = j.result ? ` ${j.result}${j.engine ? ` downtime ${j.engine.downtimeMs.toFixed(2)} ms total ${j.engine.totalMs.toFixed(0)} ms` : ''}${j.error ? ` (${j.error})` : ''}` : '';
  return `${j.id} ${j.vm} ${j.from} -> ${j.to} [${j.reason}] ${j.phase}${prog}${res}`;
}
