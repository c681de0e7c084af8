/**
 * An orphan: etcd records a VM as `unknown` on a node that does not run it, while another live
 * node runs it (what the queued owner flip of an earlier migrator left behind, with the target
 * dead and the source rolled back). Neither `vm destroy` nor `migrate` could manage it. The
 * scheduler finds where it runs from the heartbeats and points the record there
 * (services/scheduler/stray-vms.ts); the CLI manages it again. Real etcd, agent, scheduler and
 * migrator processes.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { startCluster, cli, waitFor, runningWhere, readSnapshot } from './support';
import { casJson } from '../../cluster/etcd';
import { keys, type VmRecord } from '../../cluster/keyspace';
import type { LocalCluster } from '../../services/local-cluster';

type C = LocalCluster & { stopAll(): Promise<void> };
const clusters: C[] = [];
after(async () => { for (const c of clusters) await c.stopAll(); });

/** Scheduler round (1 s) + heartbeat period (1 s) + the heartbeat margin (2 s), with room for a loaded host. */
const ADOPT_WITHIN_MS = 8000;

test('an unknown VM recorded on a node that does not run it is found where it runs, and the CLI manages it again', async () => {
  const c = await startCluster({ nodes: 2, config: { autoRebalance: false } });
  clusters.push(c);
  const r = await cli(c.etcdUrl, ['vm', 'create', 'stray', '--mem', '64MiB', '--profile', 'idle', '--node', 'node-1']);
  assert.equal(r.code, 0, r.stderr);
  await waitFor('stray running on node-1', async () => (await runningWhere(c)).get('stray')?.join() === 'node-1', 30_000);
  const cur = (await readSnapshot(c.etcd!)).vms.get('stray')!;
  const orphaned: VmRecord = { ...cur.value, node: 'node-2', state: 'unknown', error: 'committed to node-2, which died' };
  assert.ok(await casJson(c.etcd!, keys.vm('stray'), cur.modRevision, orphaned));
  const t0 = Date.now();
  const v = await waitFor('the record to follow the VM to node-1', async () => {
    const x = (await readSnapshot(c.etcd!)).vms.get('stray')!.value;
    return x.node === 'node-1' && x.state === 'running' ? x : undefined;
  }, 30_000, 100);
  const took = Date.now() - t0;
  console.log(`stray VM adopted ${took} ms after the record was orphaned`);
  assert.ok(took <= ADOPT_WITHIN_MS, `adopted after ${took} ms (at most ${ADOPT_WITHIN_MS})`);
  assert.equal(v.error, '');
  assert.deepEqual((await runningWhere(c)).get('stray'), ['node-1'], 'still running where it ran, exactly once');
  const m = await cli(c.etcdUrl, ['migrate', 'stray', '--to', 'node-2']);
  assert.equal(m.code, 0, m.stderr);
  await waitFor('stray running on node-2 only', async () => (await runningWhere(c)).get('stray')?.join() === 'node-2', 30_000);
  await waitFor('the record to say node-2 (the job folded)', async () => {
    const x = (await readSnapshot(c.etcd!)).vms.get('stray')!.value;
    return x.node === 'node-2' && x.state === 'running' && !x.job;
  }, 30_000);
  const d = await cli(c.etcdUrl, ['vm', 'destroy', 'stray']);
  assert.equal(d.code, 0, d.stderr);
  await waitFor('stray gone everywhere', async () => (await runningWhere(c)).get('stray') === undefined, 30_000);
});
