/**
 * Protocol 2's switchover in a cluster (migration/wire/protocol.ts, fault table): the target
 * records `owned/<to>/<vm>` itself and the migrator folds it (owner = target, no owned/ key
 * left); a target killed after Complete leaves the VM running exactly once, on the node etcd
 * records, within the lease bound. Real processes, real etcd.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { startCluster, cli, runningWhere, waitFor } from './support';
import { getJson, getAllJson } from '../../cluster/etcd';
import { keys, newJob, type JobRecord, type NodeRecord, type OwnershipClaim, type VmRecord } from '../../cluster/keyspace';
import { settleFailed } from '../../services/migrator/fold';
import { LEASE_MARGIN_MS } from '../../services/node-agent/switchover';
import type { LocalCluster } from '../../services/local-cluster';
import { AgentClient } from '../../services/node-agent/client/agent-client';

type C = LocalCluster & { stopAll(): Promise<void> };
const clusters: C[] = [];
after(async () => { for (const c of clusters) await c.stopAll(); });

/** Node lease TTL in these clusters, s (the bound of a target killed after Complete). */
const TTL_SEC = 2;

test('a cluster migration: the target records its ownership, the migrator folds it (owner = target, no owned/ key remains)', async () => {
  const c = await startCluster({ nodes: 2, config: { autoRebalance: false } });
  clusters.push(c);
  assert.equal((await cli(c.etcdUrl, ['vm', 'create', 'sw', '--mem', '256MiB', '--profile', 'web', '--node', 'node-1'])).code, 0);
  const m = await cli(c.etcdUrl, ['migrate', 'sw', '--to', 'node-2', '--wait', '--json']);
  assert.equal(m.code, 0, m.stderr + m.stdout);
  const res = JSON.parse(m.stdout.trim().split('\n').pop()!);
  assert.equal(res.result, 'succeeded', res.error);
  const h = (await getJson<JobRecord>(c.etcd!, keys.history(res.id)))!.value;
  assert.ok(h.downtimeMs > 0, `downtime recorded: ${h.downtimeMs}`);
  const vm = (await getJson<VmRecord>(c.etcd!, keys.vm('sw')))!.value;
  assert.equal(vm.node, 'node-2');
  assert.equal(vm.state, 'running');
  assert.equal(vm.job, '');
  assert.equal((await getAllJson(c.etcd!, keys.allOwnerships())).size, 0, 'the ownership record is folded away');
  assert.deepEqual((await runningWhere(c)).get('sw'), ['node-2']);
  // And back: the fence of a second job (new intent revision) works the same way.
  const back = await cli(c.etcdUrl, ['migrate', 'sw', '--to', 'node-1', '--wait', '--json']);
  assert.equal(back.code, 0, back.stderr + back.stdout);
  assert.equal((await getJson<VmRecord>(c.etcd!, keys.vm('sw')))!.value.node, 'node-1');
  assert.equal((await getAllJson(c.etcd!, keys.allOwnerships())).size, 0);
  assert.deepEqual((await runningWhere(c)).get('sw'), ['node-1']);
  await c.stopAll();
  clusters.pop();
});

test('the target killed after Complete: the VM runs exactly once, where the records say, within the lease bound', async () => {
  // No migrator: the test plays its part (intent, fence, fold check) against the real agents.
  const c = await startCluster({ nodes: 2, migrators: 0, schedulers: 0, supervise: false, env: { DROVER_NODE_TTL_SEC: String(TTL_SEC) }, config: { autoRebalance: false } });
  clusters.push(c);
  const addr = async (n: string) => (await getJson<NodeRecord>(c.etcd!, keys.node(n)))!.value.address;
  const source = new AgentClient(await addr('node-1'));
  try {
    await source.createVm({ name: 'k', memBytes: 256 * 2 ** 20, vcpus: 1, profile: 'web' });
    const now = Date.now();
    const rec: VmRecord = { name: 'k', spec: { name: 'k', memBytes: 256 * 2 ** 20, vcpus: 1, profile: 'web' }, node: 'node-1', desiredNode: 'node-1', state: 'migrating', lastMovedAt: 0, lastFrom: '', error: '', job: 'job-k', createdAt: now };
    const put = await c.etcd!.put(keys.vm('k')).value(JSON.stringify(rec)).exec();
    const fence = { vmRevision: String(put.header.revision), job: 'job-k', attempt: 1 };
    let killedAt = 0;
    const killing: Promise<void>[] = [];
    const run = source.migrateVm('k', await addr('node-2'), {}, (e) => {
      if (e.phase === 'stopcopy' && !killedAt) { killedAt = Date.now(); killing.push(c.kill('node-2', 'SIGKILL')); }
    }, 'job-k.1', 'node-2', fence);
    const outcome = await run.then((r) => r.outcome, (e: Error) => `failed: ${e.message}`);
    const settledMs = Date.now() - killedAt;
    await Promise.all(killing);
    const claim = (await getJson<OwnershipClaim>(c.etcd!, keys.ownership('node-2', 'k')))?.value;
    if (outcome === 'succeeded') {
      // The kill landed after Owned: the target recorded itself, and its host is gone with the VM.
      assert.ok(claim && claim.job === 'job-k' && claim.attempt === 1, 'succeeded only with the target\'s record');
      assert.equal((await source.listVms()).find((v) => v.spec.name === 'k'), undefined, 'the source destroyed its copy');
    } else {
      // The kill landed before Owned: no record, and the source resumed within TTL + margin.
      assert.equal(claim, undefined, `no ownership record after a failed switchover (${outcome})`);
      const v = await source.getVm('k');
      assert.equal(v.state, 'running', outcome);
      assert.ok(settledMs < TTL_SEC * 1000 + 3000, `the source settled ${settledMs} ms after the kill (bound ${TTL_SEC} s + 3 s)`);
    }
    console.log(`target killed at stopcopy: ${outcome}, settled ${settledMs} ms after the kill`);
  } finally {
    source.close();
  }
  await c.stopAll();
  clusters.pop();
});

/** A TCP relay on loopback: the agent-to-agent link of one migration, which `cut()` breaks (etcd's path is not through it). */
async function agentLink(target: string): Promise<{ address: string; cut(): void; close(): Promise<void> }> {
  const [host, port] = [target.slice(0, target.lastIndexOf(':')), Number(target.slice(target.lastIndexOf(':') + 1))];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((down) => {
    const up = net.connect(port, host);
    for (const s of [down, up]) { sockets.add(s); s.on('error', () => undefined); s.on('close', () => sockets.delete(s)); }
    down.pipe(up);
    up.pipe(down);
  });
  await new Promise<void>((r) => server.listen(0, host, () => r()));
  const cut = () => { server.close(); for (const s of sockets) s.destroy(); };
  return { address: `${host}:${(server.address() as net.AddressInfo).port}`, cut, close: () => new Promise((r) => { cut(); r(); }) };
}

/** The fault-injection delay of the target's ownership record: well past the source's bound (TTL + 2 margins = 3 s). */
const RECORD_DELAY_MS = 5000;

test('the agent link cut after Complete, the target on etcd but its record late: the target pauses and fences itself, the source resumes by its record', async () => {
  const c = await startCluster({
    nodes: 2, migrators: 0, schedulers: 0, supervise: false, config: { autoRebalance: false },
    env: { DROVER_NODE_TTL_SEC: String(TTL_SEC), DROVER_FAULT_INJECTION: '1', DROVER_FAULT_OWNERSHIP_DELAY_MS: String(RECORD_DELAY_MS) },
  });
  clusters.push(c);
  const addr = async (n: string) => (await getJson<NodeRecord>(c.etcd!, keys.node(n)))!.value.address;
  const source = new AgentClient(await addr('node-1'));
  const target = new AgentClient(await addr('node-2'));
  const link = await agentLink(await addr('node-2'));
  try {
    const spec = { name: 'late', memBytes: 64 * 2 ** 20, vcpus: 1, profile: 'web' as const };
    await source.createVm(spec);
    const rec: VmRecord = { name: 'late', spec, node: 'node-1', desiredNode: 'node-1', state: 'migrating', lastMovedAt: 0, lastFrom: '', error: '', job: 'job-late', createdAt: Date.now() };
    const put = await c.etcd!.put(keys.vm('late')).value(JSON.stringify(rec)).exec();
    const fence = { vmRevision: String(put.header.revision), job: 'job-late', attempt: 1 };
    const run = source.migrateVm('late', link.address, {}, undefined, 'job-late.1', 'node-2', fence).then((r) => `succeeded ${r.outcome}`, (e: Error) => `failed: ${e.message}`);
    // The target resumed the VM (so Complete was sent and verified): cut the agents' link now.
    await waitFor('the target to resume the VM', async () => (await target.getVm('late').catch(() => undefined))?.state === 'running', 30_000, 10);
    const cutAt = Date.now();
    link.cut();
    const outcome = await run;
    const resumedMs = Date.now() - cutAt;
    assert.match(outcome, /^failed: .*the source resumed/, outcome);
    assert.equal((await source.getVm('late')).state, 'running');
    assert.ok(resumedMs < TTL_SEC * 1000 + 2 * LEASE_MARGIN_MS + 1500, `the source resumed ${resumedMs} ms after the cut (bound: TTL + 2 margins + 1.5 s)`);
    const mine = (await getJson<OwnershipClaim>(c.etcd!, keys.ownership('node-1', 'late')))?.value;
    assert.ok(mine?.sourceResumed && mine.job === 'job-late' && mine.attempt === 1, `the source's resume record: ${JSON.stringify(mine)}`);
    // The target's record did not answer by its fence deadline (one TTL after it resumed, minus
    // a margin): it paused its copy, wrote its tombstone and destroyed the copy, before the source resumed.
    await waitFor('the target to give its copy up', async () => !(await target.listVms()).some((v) => v.spec.name === 'late'), RECORD_DELAY_MS + 5000, 50);
    const fencedMs = Date.now() - cutAt;
    const theirs = (await getJson<OwnershipClaim>(c.etcd!, keys.ownership('node-2', 'late')))?.value;
    assert.ok(!theirs || theirs.fenced, `no target ownership record after the source resumed (a tombstone at most): ${JSON.stringify(theirs)}`);
    // The delayed txn comes later and must not land (it compares the tombstone and the resume record).
    await new Promise((r) => setTimeout(r, Math.max(0, RECORD_DELAY_MS + 500 - (Date.now() - cutAt))));
    const late = (await getJson<OwnershipClaim>(c.etcd!, keys.ownership('node-2', 'late')))?.value;
    assert.ok(!late || late.fenced, `the late txn did not land: ${JSON.stringify(late)}`);
    assert.deepEqual((await runningWhere(c)).get('late'), ['node-1'], 'running exactly once, on the source');
    // The migrator's settle: node=from, running, both records gone.
    const job: JobRecord = { ...newJob({ id: 'job-late', vm: 'late', from: 'node-1', to: 'node-2', reason: 'manual' }), attempts: 1 };
    assert.equal(await settleFailed(c.etcd!, job), 'source');
    const vm = (await getJson<VmRecord>(c.etcd!, keys.vm('late')))!.value;
    assert.equal(vm.node, 'node-1');
    assert.equal(vm.state, 'running');
    assert.equal((await getAllJson(c.etcd!, keys.allOwnerships())).size, 0, 'both switchover records deleted');
    console.log(`link cut after Complete, record delayed ${RECORD_DELAY_MS} ms: source resumed ${resumedMs} ms after the cut, target gave its copy up by ${fencedMs} ms`);
  } finally {
    await link.close();
    source.close();
    target.close();
  }
  await c.stopAll();
  clusters.pop();
});
