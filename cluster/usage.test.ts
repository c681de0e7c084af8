import { test } from 'node:test';
import assert from 'node:assert/strict';
import { nodeUsage } from './usage';
import { DEFAULT_CONFIG, newJob, type VmRecord } from './keyspace';
import type { ClusterSnapshot, NodeView } from './etcd';

const MiB = 2 ** 20;

function node(id: string, state: NodeView['state'] = 'ready', hbMem?: number): NodeView {
  const record = { id, address: `127.0.0.1:1`, hypervisor: 'sim', memTotalBytes: 512 * MiB, vcpusTotal: 4, registeredAt: 0 };
  const heartbeat = hbMem === undefined ? undefined : { id, address: record.address, memTotalBytes: hbMem, memUsedBytes: 0, vcpusTotal: 8, vcpusUsed: 0, vms: [], at: 0 };
  return { id, record, heartbeat, state };
}

function vm(name: string, nodeId: string, memMiB: number, vcpus = 1): VmRecord {
  return {
    name, spec: { name, memBytes: memMiB * MiB, vcpus, profile: 'idle' }, node: nodeId, desiredNode: '', state: 'running',
    lastMovedAt: 0, lastFrom: '', error: '', job: '', createdAt: 0,
  };
}

function snapshot(nodes: NodeView[], vms: VmRecord[], jobs: ReturnType<typeof newJob>[] = []): ClusterSnapshot {
  return {
    nodes: new Map(nodes.map((n) => [n.id, n])),
    vms: new Map(vms.map((v) => [v.name, { value: v, modRevision: '1' }])),
    jobs: new Map(jobs.map((j) => [j.id, { value: j, modRevision: '1' }])),
    admission: { value: { jobs: [] }, modRevision: '0' }, ownerships: new Map(),
    config: DEFAULT_CONFIG,
  };
}

test('usage: VM records count on their node; unplaced VMs count nowhere', () => {
  const u = nodeUsage(snapshot([node('a'), node('b')], [vm('x', 'a', 128), vm('y', 'a', 64, 2), vm('z', '', 256)]));
  assert.deepEqual(u.get('a'), { capacity: { memBytes: 512 * MiB, vcpus: 4 }, used: { memBytes: 192 * MiB, vcpus: 3 }, schedulable: true });
  assert.deepEqual(u.get('b')!.used, { memBytes: 0, vcpus: 0 });
});

test('usage: an incoming migration reserves its VM on the target', () => {
  const job = newJob({ id: 'm-1', vm: 'x', from: 'a', to: 'b', reason: 'manual' });
  const u = nodeUsage(snapshot([node('a'), node('b')], [vm('x', 'a', 128, 2)], [job]));
  assert.deepEqual(u.get('a')!.used, { memBytes: 128 * MiB, vcpus: 2 });
  assert.deepEqual(u.get('b')!.used, { memBytes: 128 * MiB, vcpus: 2 });
});

test('usage: capacity from the heartbeat when there is one; only ready nodes are schedulable', () => {
  const u = nodeUsage(snapshot([node('a', 'ready', 1024 * MiB), node('b', 'cordoned')], []));
  assert.deepEqual(u.get('a')!.capacity, { memBytes: 1024 * MiB, vcpus: 8 });
  assert.equal(u.get('b')!.schedulable, false);
});
