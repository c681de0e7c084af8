/**
 * The job history is bounded: finished jobs beyond `historyMaxJobs` (the oldest) and older than
 * `historyMaxAgeMs` are pruned by the scheduler leader; `migrations list` keeps the recent ones.
 * Real etcd, real processes.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { startCluster, cli, waitFor, readHistory, setConfig } from './support';
import { keys, newJob, type JobRecord } from '../../cluster/keyspace';
import { getJson } from '../../cluster/etcd';
import { HISTORY_PRUNE_EVERY_MS } from '../../services/scheduler/service';
import type { LocalCluster } from '../../services/local-cluster';

type C = LocalCluster & { stopAll(): Promise<void> };
const clusters: C[] = [];
after(async () => { for (const c of clusters) await c.stopAll(); });

const DAY = 24 * 3600 * 1000;

test('job history: the scheduler prunes it to the configured count and age; recent jobs stay listed', async () => {
  const c = await startCluster({ nodes: 2, config: { autoRebalance: false, historyMaxJobs: 1000 } });
  clusters.push(c);
  // Three finished jobs from the past (ten days old) and three real migrations now.
  const old = [1, 2, 3].map((i) => ({ ...newJob({ id: `m-${(Date.now() - 10 * DAY + i).toString(36)}-old${i}`, vm: 'gone', from: 'node-1', to: 'node-2', reason: 'manual' }), phase: 'done' as const, result: 'succeeded' as const }));
  for (const j of old) await c.etcd!.put(keys.history(j.id)).value(JSON.stringify(j));
  assert.equal((await cli(c.etcdUrl, ['vm', 'create', 'h', '--mem', '64MiB', '--profile', 'idle', '--node', 'node-1'])).code, 0);
  const ids: string[] = [];
  for (const to of ['node-2', 'node-1', 'node-2']) {
    const m = await cli(c.etcdUrl, ['migrate', 'h', '--to', to, '--wait', '--json']);
    assert.equal(m.code, 0, m.stdout + m.stderr);
    ids.push((JSON.parse(m.stdout.trim().split('\n').pop()!) as { id: string }).id);
  }
  // Age (default 7 days): the ten-day-old ones go, the recent ones stay.
  await waitFor('old jobs pruned by age', async () => (await readHistory(c.etcd!)).length === 3, HISTORY_PRUNE_EVERY_MS * 3);
  assert.deepEqual((await readHistory(c.etcd!)).map((j) => j.id), ids);
  // Count: with a limit of 2, the oldest of the three goes.
  await setConfig(c.etcd!, { historyMaxJobs: 2 });
  await waitFor('history pruned to 2', async () => (await readHistory(c.etcd!)).length === 2, HISTORY_PRUNE_EVERY_MS * 3);
  assert.equal(await getJson<JobRecord>(c.etcd!, keys.history(ids[0])), undefined);
  const list = JSON.parse((await cli(c.etcdUrl, ['migrations', 'list', '--json'])).stdout) as { id: string; result: string }[];
  assert.deepEqual(list.map((j) => `${j.id}:${j.result}`), ids.slice(1).map((id) => `${id}:succeeded`));
  await c.stopAll();
  clusters.pop();
});
