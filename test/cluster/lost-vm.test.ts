/**
 * An agent killed (kill -9) and restarted on the same node id within its lease TTL registers
 * again with no VMs: the node never looks dead. Its VMs must still be reported lost, within 2 s
 * of the new registration (state
 * `unknown`, a reason naming the node and since when), never started elsewhere, and no job may be
 * created for them (a drain of that node leaves the lost one alone). The restart is the local
 * cluster's supervisor's, as systemd's Restart=on-failure would do it on a host. Real etcd,
 * real agent, scheduler and migrator processes.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { startCluster, cli, waitFor, runningWhere, readSnapshot, readHistory } from './support';
import { getJson, updateJson } from '../../cluster/etcd';
import { keys, newJob, type NodeRecord, type OwnershipClaim, type VmRecord } from '../../cluster/keyspace';
import { foldToTarget } from '../../services/migrator/fold';
import { AgentClient } from '../../services/node-agent/client/agent-client';
import { LOST_VM_GRACE_MS } from '../../services/scheduler/lost-vms';
import type { LocalCluster } from '../../services/local-cluster';

type C = LocalCluster & { stopAll(): Promise<void> };
const clusters: C[] = [];
after(async () => { for (const c of clusters) await c.stopAll(); });

/** Lease TTL of the agents here: long enough that the restarted agent is back well inside it. */
const TTL_SEC = 15;
/** What the issue promises: a VM the restarted agent does not hold is reported lost within 2 s of its registration. */
const LOST_AFTER_REGISTRATION_MS = 2000;
/** How long the test waits at most (the grace rule's bound plus a few rounds: a failure shows the real figure). */
const WAIT_MS = LOST_VM_GRACE_MS + 10_000;

test('an agent restarted within its lease: its VMs are reported lost within 2 s with the reason, not moved, no job for them', async () => {
  const c = await startCluster({ nodes: 2, env: { DROVER_NODE_TTL_SEC: String(TTL_SEC) }, config: { autoRebalance: false } });
  clusters.push(c);
  for (const [n, node] of [['gone', 'node-1'], ['stays', 'node-2']]) {
    const r = await cli(c.etcdUrl, ['vm', 'create', n, '--mem', '64MiB', '--profile', 'idle', '--node', node]);
    assert.equal(r.code, 0, r.stderr);
  }
  const before = (await readSnapshot(c.etcd!)).nodes.get('node-1')!.record.registeredAt;
  await c.kill('node-1', 'SIGKILL'); // the cluster's supervisor starts it again, as systemd would
  const killedAt = Date.now();
  await waitFor('node-1 registered again', async () => (await readSnapshot(c.etcd!)).nodes.get('node-1')!.record.registeredAt > before, 30_000);
  assert.ok(Date.now() - killedAt < TTL_SEC * 1000, 'the agent came back inside its lease');
  assert.match(fs.readFileSync(path.join(c.opts.dir, 'supervisor.log'), 'utf8'), /node-1 exited \(signal SIGKILL\); restarting in \d+ ms/);
  const vm = await waitFor('gone reported lost', async () => {
    const v = (await readSnapshot(c.etcd!)).vms.get('gone')!.value;
    return v.state === 'unknown' ? v : undefined;
  }, WAIT_MS, 50);
  const registeredAt = (await readSnapshot(c.etcd!)).nodes.get('node-1')!.record.registeredAt;
  const took = Date.now() - registeredAt;
  assert.ok(took <= LOST_AFTER_REGISTRATION_MS, `reported lost ${took} ms after the restarted agent registered (at most ${LOST_AFTER_REGISTRATION_MS})`);
  assert.equal(vm.node, 'node-1');
  assert.match(vm.error, /^lost: node node-1 restarted at \d{4}-\d\d-\d\dT\S+ \(registration revision \d+\) without this VM/);
  const heartbeats = [...(await readSnapshot(c.etcd!)).nodes.values()].map((n) => n.heartbeat?.vms.map((v) => v.name) ?? []);
  assert.ok(heartbeats.every((names) => !names.includes('gone')), 'no node reports it');
  assert.equal((await readSnapshot(c.etcd!)).nodes.get('node-1')!.state, 'ready', 'the node itself is fine');
  const list = JSON.parse((await cli(c.etcdUrl, ['vm', 'list', '--json'])).stdout) as { name: string; state: string; error: string }[];
  assert.deepEqual(list.map((v) => `${v.name}:${v.state}`), ['gone:unknown', 'stays:running']);
  assert.match(list[0].error, /lost: node node-1 restarted/);
  const table = (await cli(c.etcdUrl, ['vm', 'list'])).stdout;
  assert.match(table, /gone +node-1 +unknown .*lost: node node-1/);
  const m = await cli(c.etcdUrl, ['migrate', 'gone', '--to', 'node-2']);
  assert.equal(m.code, 2);
  assert.match(m.stderr, /is unknown, not running/);

  // A drain of node-1 creates no job for the lost VM (it used to, every second, each failing).
  const d = await cli(c.etcdUrl, ['node', 'drain', 'node-1']);
  assert.equal(d.code, 0, d.stderr);
  await waitFor('drain note names the lost VM', async () => /gone is unknown/.test((await readSnapshot(c.etcd!)).nodes.get('node-1')!.mark?.note ?? ''), 15_000);
  await new Promise((r) => setTimeout(r, 3000));
  const snap = await readSnapshot(c.etcd!);
  assert.deepEqual([...snap.jobs.values()].filter((j) => j.value.vm === 'gone'), [], 'no active job for the lost VM');
  assert.deepEqual((await readHistory(c.etcd!)).filter((j) => j.vm === 'gone'), [], 'no job was ever created for it');
  assert.equal(snap.vms.get('gone')!.value.state, 'unknown');
  const where = await runningWhere(c);
  assert.equal(where.get('gone'), undefined, 'not started elsewhere');
  assert.deepEqual(where.get('stays'), ['node-2']);
  // The operator removes it: the live node answers that it does not run it.
  const rm = await cli(c.etcdUrl, ['vm', 'destroy', 'gone']);
  assert.equal(rm.code, 0, rm.stderr);
  assert.equal((await readSnapshot(c.etcd!)).vms.has('gone'), false);
  await c.stopAll();
  clusters.pop();
});

test('a target killed after its switchover record, restarted empty, then folded onto: not lost while migrating, lost within 2 s of the fold', async () => {
  // No migrator: the test plays its part (intent, fence, then the real fold, late) against the real agents and scheduler.
  const c = await startCluster({ nodes: 2, migrators: 0, env: { DROVER_NODE_TTL_SEC: String(TTL_SEC) }, config: { autoRebalance: false } });
  clusters.push(c);
  assert.equal((await cli(c.etcdUrl, ['vm', 'create', 'mv', '--mem', '64MiB', '--profile', 'idle', '--node', 'node-1'])).code, 0);
  const addr = async (n: string) => (await getJson<NodeRecord>(c.etcd!, keys.node(n)))!.value.address;
  const cur = (await getJson<VmRecord>(c.etcd!, keys.vm('mv')))!;
  const put = await c.etcd!.if(keys.vm('mv'), 'Mod', '==', cur.modRevision)
    .then(c.etcd!.put(keys.vm('mv')).value(JSON.stringify({ ...cur.value, state: 'migrating', job: 'job-mv' } satisfies VmRecord))).commit();
  assert.ok(put.succeeded);
  const fence = { vmRevision: String(put.header.revision), job: 'job-mv', attempt: 1 };
  const source = new AgentClient(await addr('node-1'));
  try {
    const r = await source.migrateVm('mv', await addr('node-2'), {}, () => undefined, 'job-mv.1', 'node-2', fence);
    assert.equal(r.outcome, 'succeeded');
  } finally { source.close(); }
  assert.equal((await getJson<OwnershipClaim>(c.etcd!, keys.ownership('node-2', 'mv')))?.value.job, 'job-mv', "the target's record");
  // Mid-migration (job set, record not folded): node-1 no longer runs it, and that is no loss.
  await new Promise((res) => setTimeout(res, LOST_VM_GRACE_MS + 2000));
  const mid = (await readSnapshot(c.etcd!)).vms.get('mv')!.value;
  assert.deepEqual([mid.node, mid.state, mid.error], ['node-1', 'migrating', ''], 'not reported lost while migrating');
  const before = (await readSnapshot(c.etcd!)).nodes.get('node-2')!.record.registeredAt;
  await c.kill('node-2', 'SIGKILL'); // restarted empty by the cluster's supervisor
  await waitFor('node-2 registered again', async () => (await readSnapshot(c.etcd!)).nodes.get('node-2')!.heartbeat && (await readSnapshot(c.etcd!)).nodes.get('node-2')!.record.registeredAt > before, 30_000);
  await new Promise((res) => setTimeout(res, 2000));
  assert.equal((await readSnapshot(c.etcd!)).vms.get('mv')!.value.state, 'migrating', 'still in its job: not reported');
  // The migrator comes back and folds the record of the target's earlier process; then finishes the job.
  assert.equal(await foldToTarget(c.etcd!, { ...newJob({ id: 'job-mv', vm: 'mv', from: 'node-1', to: 'node-2', reason: 'manual' }), attempts: 1 }), true);
  await updateJson<VmRecord>(c.etcd!, keys.vm('mv'), (v) => v && { ...v, job: '' });
  const finishedAt = Date.now();
  const vm = await waitFor('mv reported lost', async () => {
    const v = (await readSnapshot(c.etcd!)).vms.get('mv')!.value;
    return v.state === 'unknown' ? v : undefined;
  }, WAIT_MS, 50);
  const took = Date.now() - finishedAt;
  assert.ok(took <= LOST_AFTER_REGISTRATION_MS, `reported lost ${took} ms after the fold (at most ${LOST_AFTER_REGISTRATION_MS})`);
  assert.equal(vm.node, 'node-2');
  assert.match(vm.error, /^lost: node node-2 restarted at .* without this VM/);
  assert.equal((await runningWhere(c)).get('mv'), undefined, 'no agent runs it');
  await c.stopAll();
  clusters.pop();
});
