/**
 * Supervision of a `drover up`-style local cluster: a migrator or scheduler killed with kill -9
 * is started again (with a log line naming it, its signal and the delay), the restarted replicas
 * take work (a new scheduler leader places a VM, a restarted migrator runs a migration to the end),
 * and DIR/drover.env names their new metrics endpoints.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { startCluster, cli, waitFor, runningWhere } from './support';
import { getJson } from '../../cluster/etcd';
import { metricsAddressIn } from '../../cluster/metrics-targets';
import { keys, type JobRecord, type SchedulerStatus } from '../../cluster/keyspace';
import type { LocalCluster } from '../../services/local-cluster';

type C = LocalCluster & { stopAll(): Promise<void> };
const clusters: C[] = [];
after(async () => { for (const c of clusters) await c.stopAll(); });

const SERVICES = ['migrator-1', 'migrator-2', 'scheduler-1', 'scheduler-2'];

test('kill -9 of every migrator and scheduler: each is restarted and logged; the new replicas place a VM and complete a migration', async () => {
  const lines: string[] = [];
  const c = await startCluster({ nodes: 2, migrators: 2, schedulers: 2, config: { autoRebalance: false }, log: (l) => lines.push(l) });
  clusters.push(c);
  const r = await cli(c.etcdUrl, ['vm', 'create', 'w', '--mem', '128MiB', '--profile', 'web', '--node', 'node-1']);
  assert.equal(r.code, 0, r.stderr);
  const oldPids = new Map(SERVICES.map((n) => [n, c.procs.get(n)!.pid]));
  for (const n of SERVICES) await c.kill(n, 'SIGKILL');
  const log = () => fs.readFileSync(path.join(c.opts.dir, 'supervisor.log'), 'utf8');
  for (const n of SERVICES) {
    await waitFor(`${n} restarted`, async () => c.procs.get(n)!.pid !== oldPids.get(n) && c.procs.get(n)!.exitCode === null, 20_000);
    assert.match(log(), new RegExp(`supervisor: ${n} exited \\(signal SIGKILL\\); restarting in \\d+ ms \\(failure 1 in a row\\)`));
  }
  // The restarted processes' metrics endpoints replace the old ones in DIR/drover.env.
  await waitFor('DROVER_METRICS names the new ports', async () => {
    const env = fs.readFileSync(path.join(c.opts.dir, 'drover.env'), 'utf8');
    return SERVICES.every((n) => {
      const text = fs.readFileSync(path.join(c.opts.dir, `${n}.log`), 'utf8');
      return (text.match(/metrics on /g) ?? []).length >= 2 && env.includes(metricsAddressIn(text)!);
    });
  }, 30_000);
  // A restarted scheduler leads and places a VM.
  const v = await cli(c.etcdUrl, ['vm', 'create', 'x', '--mem', '64MiB', '--profile', 'idle']);
  assert.equal(v.code, 0, v.stderr);
  const leader = (await getJson<SchedulerStatus>(c.etcd!, keys.schedulerStatus()))!.value.leader;
  assert.ok(['scheduler-1', 'scheduler-2'].includes(leader), leader);
  // A restarted migrator claims and completes a migration requested afterwards.
  const m = await cli(c.etcdUrl, ['migrate', 'w', '--to', 'node-2', '--wait', '--json']);
  assert.equal(m.code, 0, m.stdout + m.stderr);
  const res = JSON.parse(m.stdout.trim().split('\n').pop()!) as { id: string; result: string };
  assert.equal(res.result, 'succeeded');
  const ran = (await getJson<JobRecord>(c.etcd!, keys.history(res.id)))!.value.migrator;
  assert.ok(['migrator-1', 'migrator-2'].includes(ran), `run by ${ran}`);
  assert.deepEqual((await runningWhere(c)).get('w'), ['node-2']);
  assert.equal(lines.length, SERVICES.length, lines.join('\n'));
  await c.stopAll();
  clusters.pop();
  assert.equal(lines.length, SERVICES.length, `nothing restarted during stop:\n${lines.join('\n')}`);
});
