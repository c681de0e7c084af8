/** Keyspace, fencing and job transactions against a real local etcd (no mocks). */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import type { Etcd3 } from 'etcd3';
import { startLocalEtcd, type LocalEtcd } from '../../cluster/local-etcd';
import { connectEtcd, casJson, getJson, readSnapshot, readHistory } from '../../cluster/etcd';
import { createJob, cancelJob } from '../../cluster/jobs';
import { keys, type VmRecord, type JobRecord, type NodeRecord, type NodeHeartbeat } from '../../cluster/keyspace';
import { startRegistration } from '../../services/node-agent/registration';
import type { NodeInfo } from '../../services/node-agent/client/agent-codec';

let etcdProc: LocalEtcd;
let etcd: Etcd3;
before(async () => { etcdProc = await startLocalEtcd(); etcd = await connectEtcd(etcdProc.url); });
after(async () => { etcd?.close(); await etcdProc?.stop(); });

const MiB = 2 ** 20;
const info = (vms: string[] = []) => async (): Promise<NodeInfo> => ({
  nodeId: 'x', hypervisor: 'sim', memTotalBytes: 1024 * MiB, memUsedBytes: vms.length * 64 * MiB, vcpusTotal: 8, vcpusUsed: vms.length, protocolVersion: 1,
  vms: vms.map((name) => ({ spec: { name, memBytes: 64 * MiB, vcpus: 1, profile: 'idle' as const }, state: 'running', nodeId: 'x', dirtyRateBytesPerSec: 5, touchedBytes: 0, cpu: 0.1, heartbeatBeats: 0, heartbeatLastMs: 0, heartbeatMaxGapMs: 0, heartbeatResumeGapMs: -1 })),
});

function vmRec(name: string, node: string): VmRecord {
  return { name, spec: { name, memBytes: 64 * MiB, vcpus: 1, profile: 'idle' }, node, desiredNode: '', state: 'running', lastMovedAt: 0, lastFrom: '', error: '', job: '', createdAt: Date.now() };
}

test('registration writes the node and a leased heartbeat; stop removes the heartbeat only', async () => {
  const r1 = startRegistration({ etcdUrl: etcdProc.url, nodeId: 'n1', address: '127.0.0.1:1', info: info(['v1']), heartbeatMs: 100, log: () => {} });
  const r2 = startRegistration({ etcdUrl: etcdProc.url, nodeId: 'n2', address: '127.0.0.1:2', info: info(), heartbeatMs: 100, log: () => {} });
  await Promise.all([r1.ready, r2.ready]);
  const rec = await getJson<NodeRecord>(etcd, keys.node('n1'));
  assert.equal(rec?.value.address, '127.0.0.1:1');
  const hb = await getJson<NodeHeartbeat>(etcd, keys.alive('n1'));
  assert.deepEqual(hb?.value.vms.map((v) => [v.name, v.dirtyRateBytesPerSec, v.cpu]), [['v1', 5, 0.1]]);
  let snap = await readSnapshot(etcd);
  assert.equal(snap.nodes.get('n1')?.state, 'ready');
  await r1.stop();
  snap = await readSnapshot(etcd);
  assert.equal(snap.nodes.get('n1')?.state, 'unknown');
  assert.equal(snap.nodes.get('n2')?.state, 'ready');
  await r2.stop();
});

test('connecting to an unreachable etcd fails fast with UNAVAILABLE', async () => {
  const t0 = Date.now();
  await assert.rejects(connectEtcd('http://127.0.0.1:1', 1000), (e: Error & { code?: string }) => e.code === 'UNAVAILABLE' && /cannot reach etcd/.test(e.message));
  assert.ok(Date.now() - t0 < 5000);
});

test('fenced writes: of two writers that read the same revision, one wins', async () => {
  await etcd.put(keys.vm('f1')).value(JSON.stringify(vmRec('f1', 'n1')));
  const cur = (await getJson<VmRecord>(etcd, keys.vm('f1')))!;
  const [a, b] = await Promise.all([
    casJson(etcd, keys.vm('f1'), cur.modRevision, { ...cur.value, node: 'n2' }),
    casJson(etcd, keys.vm('f1'), cur.modRevision, { ...cur.value, node: 'n3' }),
  ]);
  assert.equal(Number(a) + Number(b), 1);
  assert.equal(await casJson(etcd, keys.vm('f1'), '0', cur.value), false, 'create-only write refuses an existing key');
});

test('a VM is in at most one job; cancel of a queued job is immediate; after switchover refused', async () => {
  const r = startRegistration({ etcdUrl: etcdProc.url, nodeId: 'n3', address: '127.0.0.1:3', info: info(), heartbeatMs: 100, log: () => {} });
  await r.ready;
  await etcd.put(keys.vm('j1')).value(JSON.stringify(vmRec('j1', 'n9')));
  await etcd.put(keys.node('n9')).value(JSON.stringify({ id: 'n9', address: 'x', hypervisor: 'sim', memTotalBytes: 1, vcpusTotal: 1, registeredAt: 0 }));
  const results = await Promise.allSettled([createJob(etcd, { vm: 'j1', to: 'n3', reason: 'manual' }), createJob(etcd, { vm: 'j1', to: 'n3', reason: 'manual' })]);
  const ok = results.filter((x) => x.status === 'fulfilled') as PromiseFulfilledResult<JobRecord>[];
  assert.equal(ok.length, 1, 'exactly one job');
  const job = ok[0].value;
  await assert.rejects(createJob(etcd, { vm: 'j1', to: 'n3', reason: 'manual' }), /already being migrated/);
  await assert.rejects(createJob(etcd, { vm: 'nope', to: 'n3', reason: 'manual' }), /no VM named "nope"/);
  await assert.rejects(createJob(etcd, { vm: 'j1', to: 'zz', reason: 'manual' }), /no node named "zz"/);
  assert.equal(await cancelJob(etcd, job.id), 'cancelled');
  const h = (await readHistory(etcd)).find((j) => j.id === job.id);
  assert.equal(h?.result, 'cancelled');
  assert.equal((await getJson<VmRecord>(etcd, keys.vm('j1')))!.value.job, '');
  await assert.rejects(cancelJob(etcd, job.id), /already finished/);
  // A committed job: cancel is refused.
  const j2 = await createJob(etcd, { vm: 'j1', to: 'n3', reason: 'manual' });
  const cur = (await getJson<JobRecord>(etcd, keys.job(j2.id)))!;
  await casJson(etcd, keys.job(j2.id), cur.modRevision, { ...cur.value, phase: 'committed', committed: true });
  await assert.rejects(cancelJob(etcd, j2.id), (e: Error & { code?: string }) => e.code === 'FAILED_PRECONDITION' && /past switchover/.test(e.message));
  const snap = await readSnapshot(etcd);
  assert.ok(snap.jobs.has(j2.id));
  assert.ok(![...snap.jobs.keys()].includes(job.id), 'history is not part of the snapshot');
  await r.stop();
});
