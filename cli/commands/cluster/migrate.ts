/** `drover migrate VM --to NODE [--wait] [--json]`: queue a migration job (and follow it). */
import { parse, flag, required, UsageError } from '../../args';
import { requestMigration, watchJob } from '../../../cluster/ops';
import { ETCD, jobJson, jobLine, noExtra, withEtcd } from './common';

/** Queues a migration; with --wait follows it (exit 0 only when it succeeded). */
export async function migrateCommand(argv: string[]): Promise<number> {
  const usage = 'drover migrate VM --to NODE [--wait] [--json]';
  const p = parse(argv, { ...ETCD, to: { type: 'string' }, wait: { type: 'boolean' }, json: { type: 'boolean' } }, 'migrate');
  const vm = p.positionals[0];
  if (!vm) throw new UsageError(`migrate: which VM? (usage: ${usage})`);
  noExtra(p, 1, usage);
  const to = required(p, 'to', 'migrate');
  return withEtcd(p, 'migrate', async (etcd) => {
    const job = await requestMigration(etcd, { vm, to, reason: 'manual' });
    if (!flag(p, 'wait')) {
      if (flag(p, 'json')) console.log(JSON.stringify(jobJson(job)));
      else console.log(`migration ${job.id} queued: ${vm} ${job.from} -> ${to} (drover migrations watch ${job.id})`);
      return 0;
    }
    const done = await watchJob(etcd, job.id, flag(p, 'json') ? () => {} : (j) => console.log(jobLine(j)));
    if (flag(p, 'json')) console.log(JSON.stringify(jobJson(done)));
    return done.result === 'succeeded' ? 0 : 1;
  });
}
