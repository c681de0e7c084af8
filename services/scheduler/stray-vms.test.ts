import { test } from 'node:test';
import assert from 'node:assert/strict';
import { findStrays, splitReason, STRAY_HEARTBEAT_MARGIN_MS } from './stray-vms';
import { DEFAULT_CONFIG, keys, type OwnershipClaim, type VmRecord } from '../../cluster/keyspace';
import type { ClusterSnapshot, NodeView } from '../../cluster/etcd';

const T = 1_000_000;

/** A live node whose heartbeat (written at `at`) lists `vms` with their states. */
function node(id: string, vms: Record<string, string>, at = T): NodeView {
  const record = { id, address: '127.0.0.1:1', hypervisor: 'sim', memTotalBytes: 1 << 30, vcpusTotal: 4, registeredAt: 0 };
  const heartbeat = {
    id, address: record.address, memTotalBytes: 1 << 30, memUsedBytes: 0, vcpusTotal: 4, vcpusUsed: 0, at,
    vms: Object.entries(vms).map(([name, state]) => ({ name, memBytes: 1, vcpus: 1, state, dirtyRateBytesPerSec: 0, cpu: 0 })),
  };
  return { id, record, heartbeat, state: 'ready' };
}

function vm(p: Partial<VmRecord> = {}): VmRecord {
  return { name: 'v', spec: { name: 'v', memBytes: 1, vcpus: 1, profile: 'idle' }, node: 'n2', desiredNode: '', state: 'unknown', lastMovedAt: 0, lastFrom: '', error: 'node n2 stopped heartbeating', job: '', createdAt: 0, ...p };
}

function snap(nodes: NodeView[], v: VmRecord, ownerships: [string, OwnershipClaim][] = []): ClusterSnapshot {
  return {
    nodes: new Map(nodes.map((n) => [n.id, n])), vms: new Map([[v.name, { value: v, modRevision: '9' }]]),
    jobs: new Map(), admission: { value: { jobs: [] }, modRevision: '0' }, config: DEFAULT_CONFIG,
    ownerships: new Map(ownerships.map(([k, c]) => [k, { value: c, modRevision: '3' }])),
  };
}

test('stray VMs: an unknown VM that one live node runs is adopted there, fenced on its record revision', () => {
  const s = findStrays(snap([node('n1', { v: 'running' })], vm()));
  assert.equal(s.length, 1);
  assert.equal(s[0].kind, 'adopt');
  assert.equal(s[0].kind === 'adopt' && s[0].node, 'n1');
  assert.equal(s[0].modRevision, '9');
});

test('stray VMs: nothing to adopt when the VM runs nowhere, is only paused, is in a job, or is running as recorded', () => {
  assert.deepEqual(findStrays(snap([node('n1', {})], vm())), [], 'runs nowhere: stays unknown (lost)');
  assert.deepEqual(findStrays(snap([node('n1', { v: 'paused' })], vm())), [], 'a paused copy (held after a switchover) is not where it runs');
  assert.deepEqual(findStrays(snap([node('n1', { v: 'running' })], vm({ job: 'm-1' }))), [], 'the job settles it');
  assert.deepEqual(findStrays(snap([node('n1', { v: 'running' })], vm({ state: 'running' }))), [], 'not unknown');
  assert.deepEqual(findStrays(snap([node('n2', { v: 'running' })], vm())), [], 'its own node: the liveness rule brings it back');
});

test('stray VMs: a pending switchover record blocks adoption; a tombstone does not', () => {
  const claim: OwnershipClaim = { job: 'm-1', attempt: 1, vmRevision: '5', at: T };
  assert.deepEqual(findStrays(snap([node('n1', { v: 'running' })], vm(), [[keys.ownership('n1', 'v'), claim]])), []);
  const tomb: OwnershipClaim = { ...claim, vmRevision: '', fenced: true };
  assert.equal(findStrays(snap([node('n1', { v: 'running' })], vm(), [[keys.ownership('n1', 'v'), tomb]])).length, 1);
});

test('stray VMs: a heartbeat from before the last move is no evidence', () => {
  const moved = T - STRAY_HEARTBEAT_MARGIN_MS + 1;
  assert.deepEqual(findStrays(snap([node('n1', { v: 'running' })], vm({ lastMovedAt: moved }))), []);
  assert.equal(findStrays(snap([node('n1', { v: 'running' })], vm({ lastMovedAt: moved - 1 }))).length, 1);
});

test('stray VMs: two nodes running it is a split, named once in the record', () => {
  const nodes = [node('n1', { v: 'running' }), node('n3', { v: 'running' })];
  const s = findStrays(snap(nodes, vm()));
  assert.equal(s.length, 1);
  assert.equal(s[0].kind, 'split');
  assert.match(s[0].kind === 'split' ? s[0].reason : '', /^split: running on n1 and n3 at once/);
  assert.deepEqual(findStrays(snap(nodes, vm({ error: splitReason(['n1', 'n3']) }))), [], 'already named: no write every round');
});
