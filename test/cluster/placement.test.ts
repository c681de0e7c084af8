/** Placement respects capacity; bad input exits 2 and writes nothing (real etcd, real agents). */
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { startCluster, cli, runningWhere, readSnapshot } from './support';
import type { LocalCluster } from '../../services/local-cluster';

let c: LocalCluster & { stopAll(): Promise<void> };
before(async () => { c = await startCluster({ nodes: 3, agentMem: '512MiB', config: { autoRebalance: false } }); });
after(async () => { await c?.stopAll(); });

test('new VMs are spread by capacity and never overfill a node', async () => {
  for (let i = 1; i <= 6; i++) {
    const r = await cli(c.etcdUrl, ['vm', 'create', `p${i}`, '--mem', '192MiB', '--profile', 'idle']);
    assert.equal(r.code, 0, r.stderr);
  }
  const nodes = JSON.parse((await cli(c.etcdUrl, ['node', 'list', '--json'])).stdout);
  for (const n of nodes) {
    assert.equal(n.vms.length, 2, `${n.id} has ${n.vms}`);
    assert.ok(n.memUsedBytes <= n.memTotalBytes);
  }
  // 512 MiB nodes with 384 MiB used: a 192 MiB VM fits nowhere.
  const big = await cli(c.etcdUrl, ['vm', 'create', 'toobig', '--mem', '192MiB', '--profile', 'idle']);
  assert.equal(big.code, 2);
  assert.match(big.stderr, /needs 192 MiB; the most free memory on any node is 128 MiB/);
  const vms = JSON.parse((await cli(c.etcdUrl, ['vm', 'list', '--json'])).stdout);
  assert.equal(vms.length, 6, 'nothing half-written');
  for (const v of vms) assert.deepEqual(Object.keys(v).filter((k) => ['name', 'node', 'state', 'memBytes'].includes(k)).length, 4);
  const where = await runningWhere(c);
  for (const v of vms) assert.deepEqual(where.get(v.name), [v.node]);
});

test('bad input: unknown VM or node, full node, unknown profile, etcd unreachable → one line, exit 2', async () => {
  const cases: [string[], RegExp][] = [
    [['migrate', 'nope', '--to', 'node-1'], /no VM named "nope"/],
    [['migrate', 'p1', '--to', 'node-9'], /no node named "node-9"/],
    [['vm', 'create', 'x1', '--mem', '64MiB', '--node', 'node-9'], /no node named "node-9"/],
    [['vm', 'create', 'x1', '--mem', '256MiB', '--node', 'node-1'], /node node-1 has 128 MiB free/],
    [['vm', 'create', 'x1', '--mem', '64MiB', '--profile', 'gamer'], /--profile "gamer"/],
    [['vm', 'create', 'p1', '--mem', '64MiB'], /already exists/],
    [['node', 'drain', 'node-7'], /no node named "node-7"/],
    [['migrations', 'cancel', 'm-none'], /no migration with id "m-none"/],
  ];
  for (const [args, re] of cases) {
    const r = await cli(c.etcdUrl, args);
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, re);
    assert.equal(r.stderr.trim().split('\n').length, 1, `one line: ${r.stderr}`);
  }
  const snap = await readSnapshot(c.etcd!);
  assert.equal(snap.vms.size, 6);
  assert.equal(snap.jobs.size, 0);
  const down = await cli('http://127.0.0.1:1', ['node', 'list']);
  assert.equal(down.code, 2);
  assert.match(down.stderr, /cannot reach etcd at http:\/\/127\.0\.0\.1:1/);
  const none = await cli('', ['node', 'list']);
  assert.equal(none.code, 2);
  assert.match(none.stderr, /no etcd given/);
});

test('draining the last schedulable node is refused and writes nothing', async () => {
  assert.equal((await cli(c.etcdUrl, ['node', 'cordon', 'node-2'])).code, 0);
  assert.equal((await cli(c.etcdUrl, ['node', 'cordon', 'node-3'])).code, 0);
  const r = await cli(c.etcdUrl, ['node', 'drain', 'node-1']);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /last schedulable node/);
  const nodes = JSON.parse((await cli(c.etcdUrl, ['node', 'list', '--json'])).stdout);
  assert.deepEqual(nodes.map((n: { state: string }) => n.state), ['ready', 'cordoned', 'cordoned']);
  await cli(c.etcdUrl, ['node', 'uncordon', 'node-2']);
  await cli(c.etcdUrl, ['node', 'uncordon', 'node-3']);
});
