/** `drover migrations list|watch|cancel`. */
import type { Etcd3 } from 'etcd3';
import { parse, flag, UsageError, type Parsed } from '../../args';
import { cancelMigration, listMigrations, watchAll, watchJob } from '../../../cluster/ops';
import { ETCD, jobJson, jobLine, MiB, noExtra, table, waitSignal, withEtcd } from './common';

/** `drover migrations SUB ...`; returns the exit code. */
export async function migrationsCommand(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  const p = parse(rest, { ...ETCD, json: { type: 'boolean' }, active: { type: 'boolean' } }, `migrations ${sub ?? ''}`.trim());
  return withEtcd(p, `migrations ${sub ?? ''}`, async (etcd) => {
    switch (sub) {
      case 'list': return list(etcd, p);
      case 'watch': return watch(etcd, p);
      case 'cancel': return cancel(etcd, p);
      default: throw new UsageError(`migrations: unknown subcommand "${sub ?? ''}" (list, watch, cancel)`);
    }
  });
}

async function list(etcd: Etcd3, p: Parsed): Promise<number> {
  noExtra(p, 0, 'drover migrations list [--json] [--active]');
  const all = await listMigrations(etcd, flag(p, 'active'));
  if (flag(p, 'json')) { console.log(JSON.stringify(all.map(jobJson))); return 0; }
  // PREDICTED: the cost model's total time / bytes / downtime when the job started (see `drover analyze`).
  console.log(table(['ID', 'VM', 'FROM', 'TO', 'REASON', 'PHASE', 'RESULT', 'DOWNTIME', 'BLACKOUT', 'PAUSED', 'TOTAL', 'ROUNDS', 'SENT', 'PREDICTED'],
    all.map(jobJson).map((j) => [j.id, j.vm, j.from, j.to, j.reason, j.phase, j.result || '-', j.result === 'succeeded' ? `${j.downtimeMs.toFixed(2)} ms` : '-',
      j.guestBlackoutMs >= 0 ? `${j.guestBlackoutMs.toFixed(1)} ms` : '-', j.pausedMs ? `${j.pausedMs.toFixed(1)} ms` : '-',
      j.totalMs ? `${j.totalMs.toFixed(0)} ms` : '-', j.rounds, `${(j.bytesSent / MiB).toFixed(0)} MiB`,
      j.prediction ? `${j.prediction.totalMs.toFixed(0)} ms ${(j.prediction.bytes / MiB).toFixed(0)} MiB ${j.prediction.downtimeMs.toFixed(1)} ms${j.prediction.converges ? '' : ` (${j.prediction.policy})`}` : '-'])));
  return 0;
}

async function watch(etcd: Etcd3, p: Parsed): Promise<number> {
  noExtra(p, 1, 'drover migrations watch [ID]');
  const id = p.positionals[0];
  if (id) {
    const j = await watchJob(etcd, id, (x) => console.log(flag(p, 'json') ? JSON.stringify(jobJson(x)) : jobLine(x)));
    return j.result === 'succeeded' ? 0 : 1;
  }
  await watchAll(etcd, (line) => console.log(line), waitSignal());
  return 0;
}

async function cancel(etcd: Etcd3, p: Parsed): Promise<number> {
  const id = p.positionals[0];
  if (!id) throw new UsageError('migrations cancel: which migration? (drover migrations cancel ID)');
  noExtra(p, 1, 'drover migrations cancel ID');
  const r = await cancelMigration(etcd, id);
  switch (r.kind) {
    case 'cancelled-before-start':
      console.log(`migration ${id} cancelled (it had not started)`);
      return 0;
    case 'rolled-back':
      console.log(`migration ${id} cancelled in phase ${r.job.progress ? 'copy' : r.job.phase}; the VM runs on ${r.job.from}`);
      return 0;
    case 'too-late':
      console.log(`migration ${id} finished before the cancel took effect: ${r.job.result}`);
      return 1;
  }
}
