/**
 * VMs lost to an agent restart: which ones the new registration's heartbeat proves lost (pure
 * snapshot), and the historical read for a record written after the registration (real etcd).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Etcd3 } from 'etcd3';
import { startLocalEtcd, type LocalEtcd } from '../../cluster/local-etcd';
import { readSnapshot, type ClusterSnapshot, type NodeView } from '../../cluster/etcd';
import { DEFAULT_CONFIG, keys, type VmRecord } from '../../cluster/keyspace';
import { missingFromRegistration, placedBeforeThen } from './restarted-agents';
import { isLostReason } from './lost-vms';

function node(id: string, reported: string[], registrationRev?: string): NodeView {
  const record = { id, address: '127.0.0.1:1', hypervisor: 'sim', memTotalBytes: 1 << 30, vcpusTotal: 4, registeredAt: 86_400_000 };
  const heartbeat = {
    id, address: record.address, memTotalBytes: 1 << 30, memUsedBytes: 0, vcpusTotal: 4, vcpusUsed: 0, at: 1,
    vms: reported.map((name) => ({ name, memBytes: 1, vcpus: 1, state: 'running', dirtyRateBytesPerSec: 0, cpu: 0 })),
    ...(registrationRev ? { registrationRev } : {}),
  };
  return { id, record, heartbeat, state: 'ready' };
}

function vm(name: string, p: Partial<VmRecord> = {}): VmRecord {
  return { name, spec: { name, memBytes: 1, vcpus: 1, profile: 'idle' }, node: 'n1', desiredNode: '', state: 'running', lastMovedAt: 0, lastFrom: '', error: '', job: '', createdAt: 0, ...p };
}

function snap(nodes: NodeView[], vms: [VmRecord, string][], owned: string[] = []): ClusterSnapshot {
  return {
    nodes: new Map(nodes.map((n) => [n.id, n])), vms: new Map(vms.map(([v, rev]) => [v.name, { value: v, modRevision: rev }])),
    jobs: new Map(), admission: { value: { jobs: [] }, modRevision: '0' }, config: DEFAULT_CONFIG,
    ownerships: new Map(owned.map((k) => [k, { value: { job: 'j', attempt: 1, vmRevision: '5', at: 0 }, modRevision: '9' }])),
  };
}

test('restarted agent: a VM placed before the registration and not held is lost at once, with the reason', () => {
  const { sure, unsure } = missingFromRegistration(snap([node('n1', ['held'], '100')], [[vm('gone'), '40'], [vm('held'), '41']]));
  assert.deepEqual(sure.map((l) => l.name), ['gone']);
  assert.deepEqual(unsure, []);
  assert.equal(sure[0].modRevision, '40');
  assert.ok(isLostReason(sure[0].reason));
  assert.match(sure[0].reason, /^lost: node n1 restarted at 1970-01-02T00:00:00.000Z \(registration revision 100\) without this VM/);
});

test('restarted agent: migrating, in a job, with a switchover record, being created or already lost is never reported', () => {
  const s = snap([node('n1', [], '100')], [
    [vm('moving', { state: 'migrating', job: 'j1' }), '40'],
    [vm('job-only', { job: 'j2' }), '40'],
    [vm('claimed'), '40'],
    [vm('resumed'), '40'],
    [vm('creating', { state: 'creating' }), '40'],
    [vm('already', { state: 'unknown', error: 'lost: node n1 ...' }), '40'],
    [vm('elsewhere', { node: 'n2' }), '40'],
  ], ['/drover/v1/owned/n2/claimed', '/drover/v1/owned/n1/resumed']);
  assert.deepEqual(missingFromRegistration(s), { sure: [], unsure: [] });
});

test('restarted agent: a heartbeat without a registration revision (an older agent) proves nothing; a newer record needs the history', () => {
  assert.deepEqual(missingFromRegistration(snap([node('n1', [])], [[vm('a'), '40']])), { sure: [], unsure: [] });
  const { sure, unsure } = missingFromRegistration(snap([node('n1', [], '100')], [[vm('a', { state: 'unknown', error: 'node n1 stopped heartbeating' }), '120']]));
  assert.deepEqual(sure, []);
  assert.deepEqual(unsure.map((u) => [u.name, u.registrationRev]), [['a', '100']]);
});

test('restarted agent: a VM a migration placed on the node before the registration (folded later) is lost at once; a placement on another node does not count', () => {
  const { sure, unsure } = missingFromRegistration(snap([node('n1', [], '100')], [
    [vm('folded-late', { placed: { node: 'n1', rev: '90' }, lastMovedAt: 5 }), '120'],
    [vm('placed-after', { placed: { node: 'n1', rev: '110' }, lastMovedAt: 5 }), '120'],
    [vm('placed-elsewhere', { placed: { node: 'n2', rev: '90' } }), '120'],
  ]));
  assert.deepEqual(sure.map((l) => l.name), ['folded-late']);
  assert.deepEqual(unsure.map((u) => u.name), ['placed-after', 'placed-elsewhere']);
});

let etcdProc: LocalEtcd;
let etcd: Etcd3;
before(async () => { etcdProc = await startLocalEtcd(); etcd = new Etcd3({ hosts: etcdProc.url }); });
after(async () => { etcd.close(); await etcdProc.stop(); });

test('restarted agent: a record written after the registration counts as placed before it only if it was already there, with the same move', async () => {
  const put = async (k: string, v: unknown) => String((await etcd.put(k).value(JSON.stringify(v)).exec()).header.revision);
  await put(keys.vm('old'), vm('old'));
  await put(keys.vm('moved'), vm('moved', { node: 'n2' }));
  await put(keys.vm('creating'), vm('creating', { state: 'creating' }));
  const reg = await put(keys.node('n1'), { id: 'n1' });
  await put(keys.vm('old'), vm('old', { state: 'unknown', error: 'node n1 stopped heartbeating' }));
  await put(keys.vm('moved'), vm('moved', { lastMovedAt: 5, lastFrom: 'n2' }));
  await put(keys.vm('creating'), vm('creating'));
  await put(keys.vm('new'), vm('new'));
  const s = await readSnapshot(etcd);
  s.nodes.set('n1', node('n1', [], reg));
  const { sure, unsure } = missingFromRegistration(s);
  assert.deepEqual(sure, []);
  const verdict = Object.fromEntries(await Promise.all(unsure.map(async (u) => [u.name, await placedBeforeThen(etcd, u)])));
  assert.deepEqual(verdict, { old: true, moved: false, creating: false, new: false });
});
