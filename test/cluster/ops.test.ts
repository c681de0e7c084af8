/** The cluster-operations API against a real local etcd: refusals write nothing, marks, config, cancel. */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import type { Etcd3 } from 'etcd3';
import { startLocalEtcd, type LocalEtcd } from '../../cluster/local-etcd';
import { connectEtcd, casJson, getJson, readSnapshot } from '../../cluster/etcd';
import { keys, type NodeMark, type OwnershipClaim, type VmRecord } from '../../cluster/keyspace';
import { cli } from './support';
import {
  cancelMigration, cordonNode, createVmRecord, drainNode, getConfig, listVms, requestMigration, setConfig, uncordonNode,
} from '../../cluster/ops';
import { startRegistration, type Registration } from '../../services/node-agent/registration';
import type { NodeInfo } from '../../services/node-agent/client/agent-codec';

const MiB = 2 ** 20;
let etcdProc: LocalEtcd;
let etcd: Etcd3;
const regs: Registration[] = [];

const info = async (): Promise<NodeInfo> => ({ nodeId: 'x', hypervisor: 'sim', memTotalBytes: 1024 * MiB, memUsedBytes: 0, vcpusTotal: 8, vcpusUsed: 0, protocolVersion: 1, vms: [] });

before(async () => {
  etcdProc = await startLocalEtcd();
  etcd = await connectEtcd(etcdProc.url);
  for (const id of ['n1', 'n2']) regs.push(startRegistration({ etcdUrl: etcdProc.url, nodeId: id, address: `127.0.0.1:${id === 'n1' ? 1 : 2}`, info, heartbeatMs: 100, log: () => {} }));
  await Promise.all(regs.map((r) => r.ready));
});
after(async () => {
  for (const r of regs) await r.stop();
  etcd?.close();
  await etcdProc?.stop();
});

test('ops: VM create refusals name what is short and write nothing; a fitting VM is written pending', async () => {
  const spec = (name: string, mem: number) => ({ name, memBytes: mem * MiB, vcpus: 1, profile: 'idle' as const });
  await assert.rejects(createVmRecord(etcd, spec('big', 2048), 'n1'), { code: 'RESOURCE_EXHAUSTED', message: 'node n1 has 1024 MiB free, VM "big" needs 2048 MiB' });
  await assert.rejects(createVmRecord(etcd, spec('big', 2048), ''), /needs 2048 MiB; the most free memory on any node is 1024 MiB/);
  await assert.rejects(createVmRecord(etcd, spec('x', 64), 'n9'), /no node named "n9" \(nodes: n1, n2\)/);
  assert.equal((await listVms(etcd)).length, 0);
  const rec = await createVmRecord(etcd, spec('ok-1', 64), 'n1');
  assert.equal(rec.state, 'pending');
  await assert.rejects(createVmRecord(etcd, spec('ok-1', 64), ''), { code: 'ALREADY_EXISTS' });
});

test('ops: cordon and uncordon are idempotent and say what they found', async () => {
  assert.deepEqual(await cordonNode(etcd, 'n2'), { kind: 'cordoned' });
  assert.deepEqual(await cordonNode(etcd, 'n2'), { kind: 'already', state: 'cordoned' });
  assert.deepEqual(await uncordonNode(etcd, 'n2'), { kind: 'uncordoned', was: 'cordoned' });
  assert.deepEqual(await uncordonNode(etcd, 'n2'), { kind: 'not-cordoned' });
  await assert.rejects(cordonNode(etcd, 'n7'), { code: 'NOT_FOUND' });
});

test('ops: a drain the evacuation check refuses writes no mark; the last schedulable node cannot be drained', async () => {
  await assert.rejects(drainNode(etcd, 'n1', () => [{ vm: 'ok-1', reason: 'no room' }]), { code: 'RESOURCE_EXHAUSTED', message: 'cannot drain n1: ok-1: no room' });
  assert.equal(await getJson<NodeMark>(etcd, keys.mark('n1')), undefined);
  await cordonNode(etcd, 'n2');
  await assert.rejects(drainNode(etcd, 'n1', () => []), /last schedulable node/);
  await uncordonNode(etcd, 'n2');
  assert.deepEqual(await drainNode(etcd, 'n2', () => []), { kind: 'draining', vms: 0 });
  assert.deepEqual(await drainNode(etcd, 'n2', () => []), { kind: 'already', state: 'draining' });
  await uncordonNode(etcd, 'n2');
});

test('ops: config fields are set one CAS at a time, others kept', async () => {
  await setConfig(etcd, { aggressiveness: 5 });
  await setConfig(etcd, { maxConcurrent: 7 });
  const cfg = await getConfig(etcd);
  assert.equal(cfg.aggressiveness, 5);
  assert.equal(cfg.maxConcurrent, 7);
});

test('ops: a migration not started yet is cancelled at once and releases its VM', async () => {
  const v = await getJson<VmRecord>(etcd, keys.vm('ok-1'));
  assert.ok(await casJson(etcd, keys.vm('ok-1'), v!.modRevision, { ...v!.value, node: 'n1', state: 'running' }));
  const job = await requestMigration(etcd, { vm: 'ok-1', to: 'n2', reason: 'manual' });
  assert.deepEqual(await cancelMigration(etcd, job.id), { kind: 'cancelled-before-start' });
  const snap = await readSnapshot(etcd);
  assert.equal(snap.jobs.size, 0);
  assert.equal(snap.vms.get('ok-1')!.value.job, '');
});

test('ops: while a VM is migrating, vm list and vm show name the node whose switchover record is fenced on its revision', async () => {
  const rec = await createVmRecord(etcd, { name: 'moving', memBytes: 64 * MiB, vcpus: 1, profile: 'idle' }, 'n1');
  const put = await etcd.put(keys.vm('moving')).value(JSON.stringify({ ...rec, node: 'n1', state: 'migrating', job: 'j-1' } satisfies VmRecord)).exec();
  const intentRev = String(put.header.revision);
  const claim = (p: Partial<OwnershipClaim>): string => JSON.stringify({ job: 'j-1', attempt: 1, vmRevision: intentRev, at: Date.now(), ...p } satisfies OwnershipClaim);
  const where = async () => {
    const list = await cli(etcdProc.url, ['vm', 'list', '--json']);
    assert.equal(list.code, 0, list.stderr);
    const show = await cli(etcdProc.url, ['vm', 'show', 'moving']);
    assert.equal(show.code, 0, show.stderr);
    const row = (JSON.parse(list.stdout) as { name: string; node: string; state: string }[]).find((r) => r.name === 'moving')!;
    return { list: `${row.node}:${row.state}`, show: (JSON.parse(show.stdout) as VmRecord).node };
  };
  assert.deepEqual(await where(), { list: 'n1:migrating', show: 'n1' }, 'no record: the source');
  await etcd.put(keys.ownership('n2', 'moving')).value(claim({ vmRevision: '1' }));
  assert.deepEqual(await where(), { list: 'n1:migrating', show: 'n1' }, 'a record of an older intent does not count');
  await etcd.put(keys.ownership('n2', 'moving')).value(claim({}));
  assert.deepEqual(await where(), { list: 'n2:migrating', show: 'n2' }, "the target's record: it runs there");
  await etcd.delete().key(keys.ownership('n2', 'moving'));
  await etcd.put(keys.ownership('n2', 'moving')).value(claim({ vmRevision: '', fenced: true }));
  assert.deepEqual(await where(), { list: 'n1:migrating', show: 'n1' }, 'a tombstone is no claim');
  await etcd.put(keys.ownership('n1', 'moving')).value(claim({ sourceResumed: true }));
  assert.deepEqual(await where(), { list: 'n1:migrating', show: 'n1' }, "the source's resume record: it runs on the source");
  await etcd.delete().prefix(keys.allOwnerships());
  await etcd.delete().key(keys.vm('moving'));
});
