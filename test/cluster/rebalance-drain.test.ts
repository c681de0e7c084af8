/**
 * Automatic rebalancing converges with no VM moved twice; drain empties a node within the
 * per-node limits (asserted from the job history); a scheduler leader killed during a drain is
 * replaced and the drain finishes. Real etcd, real agent, scheduler and migrator processes.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { startCluster, cli, waitFor, runningWhere, readSnapshot, readHistory, maxOverlap } from './support';
import { setConfig } from './support';
import { planModel } from '../../services/scheduler/model';
import { imbalance, thresholdOf } from '../../services/scheduler/planner';
import { getJson } from '../../cluster/etcd';
import { keys, DEFAULT_CONFIG, type SchedulerStatus } from '../../cluster/keyspace';
import type { LocalCluster } from '../../services/local-cluster';

type C = LocalCluster & { stopAll(): Promise<void> };
const clusters: C[] = [];
after(async () => { for (const c of clusters) await c.stopAll(); });

async function pile(c: C, n: number, node: string, mem = '96MiB', profile = 'idle'): Promise<void> {
  for (let i = 1; i <= n; i++) {
    const r = await cli(c.etcdUrl, ['vm', 'create', `v${i}`, '--mem', mem, '--profile', profile, '--node', node]);
    assert.equal(r.code, 0, r.stderr);
  }
}

async function assertRunsOnce(c: C): Promise<void> {
  const snap = await readSnapshot(c.etcd!);
  const where = await runningWhere(c);
  for (const { value: v } of snap.vms.values()) {
    assert.equal(v.state, 'running', `${v.name} is ${v.state}`);
    assert.deepEqual(where.get(v.name), [v.node], `${v.name}: etcd says ${v.node}, agents say ${where.get(v.name)}`);
  }
}

test('an imbalanced cluster converges under the threshold; no VM moves twice', async () => {
  const c = await startCluster({ nodes: 3, config: { autoRebalance: false, aggressiveness: 3, cooldownMs: 300_000 } });
  clusters.push(c);
  await pile(c, 6, 'node-1');
  const before = imbalance(planModel(await readSnapshot(c.etcd!)).nodes);
  assert.ok(before > thresholdOf(3), `starts imbalanced: ${before}`);
  const dry = await cli(c.etcdUrl, ['rebalance', '--dry-run']);
  assert.equal(dry.code, 0, dry.stderr);
  assert.match(dry.stdout, /^imbalance 0\.\d+ \(threshold 0\.1, aggressiveness 3\) -> 0\.\d+ after \d+ move\(s\)/);
  assert.match(dry.stdout, /predicted cost: \d+ MiB on the wire/);
  const plan = JSON.parse((await cli(c.etcdUrl, ['rebalance', '--dry-run', '--json'])).stdout);
  assert.ok(plan.moves.length >= 2 && plan.imbalanceAfter <= plan.threshold);
  assert.equal((await readSnapshot(c.etcd!)).jobs.size, 0, 'a dry run writes nothing');
  await setConfig(c.etcd!, { autoRebalance: true });
  await waitFor('balance', async () => {
    const s = await readSnapshot(c.etcd!);
    return s.jobs.size === 0 && imbalance(planModel(s).nodes) <= thresholdOf(3) / 2;
  }, 150_000, 500);
  await new Promise((r) => setTimeout(r, 5000)); // stays put: hysteresis and cool-down
  const s = await readSnapshot(c.etcd!);
  assert.equal(s.jobs.size, 0, 'no further moves once balanced');
  const hist = await readHistory(c.etcd!);
  assert.ok(hist.length >= 2);
  const moved = hist.map((j) => j.vm);
  assert.equal(new Set(moved).size, moved.length, `a VM moved twice: ${moved}`);
  for (const j of hist) assert.equal(j.result, 'succeeded', `${j.id}: ${j.error}`);
  const st = await getJson<SchedulerStatus>(c.etcd!, keys.schedulerStatus());
  assert.ok(st && st.value.imbalance <= thresholdOf(3));
  await assertRunsOnce(c);
  await c.stopAll();
  clusters.pop();
});

test('drain empties the node within the per-node limits; a killed scheduler leader is replaced and finishes it', async () => {
  const c = await startCluster({ nodes: 4, schedulers: 2, config: { autoRebalance: false, maxConcurrent: 4 } });
  clusters.push(c);
  await pile(c, 6, 'node-1', '64MiB', 'web');
  const r = await cli(c.etcdUrl, ['node', 'drain', 'node-1']);
  assert.equal(r.code, 0, r.stderr);
  // Kill the leader once the drain is under way.
  await waitFor('a drain job', async () => (await readHistory(c.etcd!)).length >= 1 || (await readSnapshot(c.etcd!)).jobs.size > 0, 60_000, 100);
  const leader = (await getJson<SchedulerStatus>(c.etcd!, keys.schedulerStatus()))!.value.leader;
  assert.match(leader, /^scheduler-[12]$/);
  await c.kill(leader, 'SIGKILL');
  await waitFor('a new leader', async () => {
    const st = await getJson<SchedulerStatus>(c.etcd!, keys.schedulerStatus());
    return st && st.value.leader !== leader;
  }, 30_000);
  await waitFor('node-1 drained', async () => (await readSnapshot(c.etcd!)).nodes.get('node-1')?.state === 'drained', 180_000, 500);
  const nodes = JSON.parse((await cli(c.etcdUrl, ['node', 'list', '--json'])).stdout);
  const n1 = nodes.find((n: { id: string }) => n.id === 'node-1');
  assert.equal(n1.state, 'drained');
  assert.deepEqual(n1.vms, []);
  const hist = await readHistory(c.etcd!);
  assert.ok(hist.filter((j) => j.reason === 'drain' && j.result === 'succeeded').length >= 6);
  for (const [node, n] of maxOverlap(hist, 'from')) assert.ok(n <= DEFAULT_CONFIG.maxOutboundPerNode, `${n} outbound at once from ${node}`);
  for (const [node, n] of maxOverlap(hist, 'to')) assert.ok(n <= DEFAULT_CONFIG.maxInboundPerNode, `${n} inbound at once to ${node}`);
  const list = JSON.parse((await cli(c.etcdUrl, ['migrations', 'list', '--json'])).stdout);
  for (const m of list) for (const k of ['id', 'vm', 'from', 'to', 'phase', 'result', 'downtimeMs']) assert.ok(k in m, k);
  await assertRunsOnce(c);
  const u = await cli(c.etcdUrl, ['node', 'uncordon', 'node-1']);
  assert.equal(u.code, 0);
  assert.equal((await readSnapshot(c.etcd!)).nodes.get('node-1')?.state, 'ready');
  await c.stopAll();
  clusters.pop();
});
