/**
 * VM disks on NBD exports that follow the VM: a `db` VM whose disk is an export of a real NBD
 * server (qemu-nbd, Debian's nbd-server) migrates between two agent processes under write load;
 * the guest's check of memory and disk passes on the target and its write-ahead log continues
 * there. A target that cannot reach the export refuses PrepareIncoming with FAILED_PRECONDITION
 * naming the export, and the source carries on untouched.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startAgents, stopAgents, sleep, codeOf, waitFor, type TestAgent } from '../support/agents';
import { LocalNbdServer, startNbdServer, startQemuNbd } from '../../storage/nbd/local-nbd-servers';

const MiB = 1024 * 1024;

let agents: TestAgent[] = [];
before(async () => { agents = await startAgents(2, 'disk'); });
after(async () => { await stopAgents(agents); });

const servers: Array<[string, () => Promise<LocalNbdServer>]> = [
  ['qemu-nbd', () => startQemuNbd({ export: { name: 'vmdisk', size: 32 * MiB } })],
  ['nbd-server', () => startNbdServer({ exports: [{ name: 'vmdisk', size: 32 * MiB }] })],
];

for (const [kind, start] of servers) {
  describe(`db VM with a disk on ${kind}`, () => {
    let s: LocalNbdServer;
    before(async () => { s = await start(); });
    after(async () => { await s?.dispose(); });

    test('migrates under write load; memory and disk check pass on the target; the WAL continues there', async () => {
      const [a, b] = agents;
      const name = `db-disk-${kind}`;
      await a.client.createVm({ name, memBytes: 128 * MiB, vcpus: 1, profile: 'db', disk: s.uri(), seed: 11 });
      await sleep(500);
      const src = await a.client.verifyVm(name);
      assert.equal(src.ok, true, src.detail);
      assert.equal(src.diskChecked, true);
      assert.equal(src.diskOk, true, src.diskDetail);
      assert.ok(src.diskAckedSeq > 20, `the guest writes its log on the source (acked ${src.diskAckedSeq})`);

      const r = await a.client.migrateVm(name, b.address, { verify: true, maxDowntimeMs: 20 });
      assert.equal(r.outcome, 'succeeded');
      assert.equal(r.verified, true, 'target memory equals source memory at pause');
      assert.deepEqual((await a.client.listVms()).map((v) => v.spec.name), [], 'source discarded its copy');

      const t1 = await b.client.verifyVm(name);
      assert.equal(t1.ok, true, t1.detail);
      assert.equal(t1.diskChecked, true);
      assert.equal(t1.diskOk, true, t1.diskDetail);
      assert.match(t1.diskDetail, /NBD export "vmdisk"/);
      assert.ok(t1.diskAckedSeq >= src.diskAckedSeq, `no acknowledged record lost (${t1.diskAckedSeq} >= ${src.diskAckedSeq})`);
      await sleep(400);
      const t2 = await b.client.verifyVm(name);
      assert.equal(t2.diskOk, true, t2.diskDetail);
      assert.ok(t2.diskAckedSeq > t1.diskAckedSeq + 20, `the WAL continues on the target (${t1.diskAckedSeq} -> ${t2.diskAckedSeq})`);
      assert.equal((await b.client.getVm(name)).state, 'running');
      await b.client.destroyVm(name);
    });
  });
}

describe('target that cannot reach the export', () => {
  let s: LocalNbdServer;
  // qemu-nbd --shared=1 admits one client: the source's. A second node's connection is never
  // served (the handshake times out), as when the target has no route to the storage network.
  before(async () => { s = await startQemuNbd({ export: { name: 'only-src', size: 32 * MiB }, shared: 1 }); });
  after(async () => { await s?.dispose(); });

  test('PrepareIncoming is refused with FAILED_PRECONDITION naming the export; the source is unchanged', async () => {
    const [a, b] = agents;
    const name = 'db-disk-refused';
    await a.client.createVm({ name, memBytes: 64 * MiB, vcpus: 1, profile: 'db', disk: s.uri(), seed: 5 });
    await sleep(300);
    const before = await a.client.verifyVm(name);
    assert.equal(before.diskOk, true, before.diskDetail);

    const { code, message } = await codeOf(a.client.migrateVm(name, b.address, { verify: true }));
    assert.equal(code, 'FAILED_PRECONDITION', message);
    assert.match(message, /NBD export "only-src"/);
    assert.match(message, /migration target cannot reach/);

    // Nothing reserved on the target; the VM runs on the source and its log still advances.
    assert.equal((await b.client.nodeInfo()).memUsedBytes, 0);
    const info = await a.client.getVm(name);
    assert.equal(info.state, 'running');
    const mid = await a.client.verifyVm(name);
    assert.equal(mid.ok, true, mid.detail);
    assert.equal(mid.diskOk, true, mid.diskDetail);
    assert.ok(mid.diskAckedSeq > before.diskAckedSeq, 'the WAL advanced during the refused attempt');
    await waitFor('the WAL to keep advancing', async () => (await a.client.verifyVm(name)).diskAckedSeq > mid.diskAckedSeq + 20, 5000);
    const end = await a.client.verifyVm(name);
    assert.equal(end.ok, true, end.detail);
    assert.equal(end.diskOk, true, end.diskDetail);
    await a.client.destroyVm(name);
  });
});

describe('failure after the pause, before commit', () => {
  let s: LocalNbdServer;
  before(async () => { s = await startQemuNbd({ export: { name: 'rollback', size: 32 * MiB } }); });
  after(async () => { await s?.dispose(); });

  test('target refuses after Complete (fenced): it held the WAL state, resumed and gave it up; the source resumes and its log continues', async () => {
    const [a, b] = agents;
    const name = 'db-disk-rollback';
    await a.client.createVm({ name, memBytes: 64 * MiB, vcpus: 1, profile: 'db', disk: s.uri(), seed: 3 });
    await sleep(300);
    // The target runs without etcd: a fenced migration cannot be recorded there, so it refuses after resuming.
    const done = a.client.migrateVm(name, b.address, { verify: true }, undefined, '', '', { vmRevision: '7', job: 'job-disk', attempt: 1 });
    const err = await codeOf(done);
    assert.equal(err.code, 'FAILED_PRECONDITION', err.message);
    await waitFor('the target to discard its copy', async () => (await b.client.nodeInfo()).memUsedBytes === 0);
    assert.equal((await a.client.getVm(name)).state, 'running');
    const v1 = await a.client.verifyVm(name);
    assert.equal(v1.ok, true, v1.detail);
    assert.equal(v1.diskOk, true, v1.diskDetail);
    await waitFor('the WAL to advance on the source again', async () => (await a.client.verifyVm(name)).diskAckedSeq > v1.diskAckedSeq + 20, 5000);
    const v2 = await a.client.verifyVm(name);
    assert.equal(v2.diskOk, true, v2.diskDetail);
    await a.client.destroyVm(name);
  });
});
