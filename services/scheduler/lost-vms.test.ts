import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LostVmTracker, isLostReason } from './lost-vms';
import { DEFAULT_CONFIG, type VmRecord } from '../../cluster/keyspace';
import type { ClusterSnapshot, NodeView } from '../../cluster/etcd';

const GRACE = 5000;

function node(id: string, reported: string[] | undefined, at: number): NodeView {
  const record = { id, address: '127.0.0.1:1', hypervisor: 'sim', memTotalBytes: 1 << 30, vcpusTotal: 4, registeredAt: 0 };
  const heartbeat = reported === undefined ? undefined : {
    id, address: record.address, memTotalBytes: 1 << 30, memUsedBytes: 0, vcpusTotal: 4, vcpusUsed: 0, at,
    vms: reported.map((name) => ({ name, memBytes: 1, vcpus: 1, state: 'running', dirtyRateBytesPerSec: 0, cpu: 0 })),
  };
  return { id, record, heartbeat, state: heartbeat ? 'ready' : 'unknown' };
}

function vm(name: string, p: Partial<VmRecord> = {}): VmRecord {
  return { name, spec: { name, memBytes: 1, vcpus: 1, profile: 'idle' }, node: 'n1', desiredNode: '', state: 'running', lastMovedAt: 0, lastFrom: '', error: '', job: '', createdAt: 0, ...p };
}

function snap(nodes: NodeView[], vms: VmRecord[]): ClusterSnapshot {
  return {
    nodes: new Map(nodes.map((n) => [n.id, n])), vms: new Map(vms.map((v) => [v.name, { value: v, modRevision: '7' }])),
    jobs: new Map(), admission: { value: { jobs: [] }, modRevision: '0' }, ownerships: new Map(), config: DEFAULT_CONFIG,
  };
}

test('lost VMs: a running VM its live node stops reporting is lost after the grace period, with node and since', () => {
  const t = new LostVmTracker(GRACE);
  const t0 = 1_000_000;
  assert.deepEqual(t.check(snap([node('n1', [], t0)], [vm('a')]), t0), []);
  assert.deepEqual(t.check(snap([node('n1', [], t0 + 4000)], [vm('a')]), t0 + 4000), [], 'within the grace period');
  const lost = t.check(snap([node('n1', [], t0 + 5000)], [vm('a')]), t0 + 5000);
  assert.equal(lost.length, 1);
  assert.equal(lost[0].name, 'a');
  assert.equal(lost[0].modRevision, '7');
  assert.match(lost[0].reason, /node n1 .* since 1970-01-01T00:16:40.000Z/);
  assert.ok(isLostReason(lost[0].reason));
});

test('lost VMs: a stale heartbeat proves nothing; a VM reported again is forgotten', () => {
  const t = new LostVmTracker(GRACE);
  const t0 = 1_000_000;
  t.check(snap([node('n1', [], t0)], [vm('a')]), t0);
  assert.deepEqual(t.check(snap([node('n1', [], t0)], [vm('a')]), t0 + 9000), [], 'same heartbeat as when first missed');
  t.check(snap([node('n1', ['a'], t0 + 9500)], [vm('a')]), t0 + 9500);
  assert.deepEqual(t.check(snap([node('n1', [], t0 + 10_000)], [vm('a')]), t0 + 10_000), [], 'the clock restarts');
});

test('lost VMs: not lost when in a job, being created, just created or moved, its node dead, or already marked', () => {
  const t = new LostVmTracker(GRACE);
  const t0 = 1_000_000;
  const vms = [
    vm('job', { job: 'm-1', state: 'migrating' }), vm('creating', { state: 'creating' }), vm('new', { createdAt: t0 - 1000 }),
    vm('moved', { lastMovedAt: t0 - 1000 }), vm('dead', { node: 'n2', state: 'unknown' }), vm('marked', { state: 'unknown', error: 'lost: node n1 ...' }),
  ];
  for (const dt of [0, 3000, 6000]) assert.deepEqual(t.check(snap([node('n1', [], t0 + dt), node('n2', undefined, 0)], vms), t0 + dt), [], `at +${dt} ms`);
  // A VM unknown because its node died, whose node came back without it, is lost too.
  const back = [vm('dead', { node: 'n2', state: 'unknown', error: 'node n2 stopped heartbeating' })];
  t.check(snap([node('n2', [], t0)], back), t0);
  assert.equal(t.check(snap([node('n2', [], t0 + 6000)], back), t0 + 6000).length, 1);
});
