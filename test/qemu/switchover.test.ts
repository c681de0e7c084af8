/**
 * Protocol 2's switchover through the QEMU tunnel (migration/wire/protocol.ts, fault table,
 * tunnel rows), between two real `drover agent --hypervisor qemu` processes: the target runs the
 * guest, records its ownership (switchover.ts), then sends Owned; the source destroys its QEMU
 * only after Owned. A target that cannot record (a fence and no etcd) kills the QEMU it resumed
 * and refuses: the source QEMU, still in postmigrate, resumes (`cont`) and keeps beating.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startAgents, stopAgents, waitFor, codeOf, type TestAgent } from '../support/agents';
import type { MigrationResult } from '../../migration/types';

const MiB = 1024 * 1024;
let a: TestAgent, b: TestAgent;

before(async () => {
  [a, b] = await startAgents(2, 'qs', ['--hypervisor', 'qemu']);
});
after(() => stopAgents([a, b]));

/** The VM runs on `x`: state running and its heartbeat grows. */
async function beatsOn(x: TestAgent, name: string): Promise<void> {
  const v = await x.client.getVm(name);
  assert.equal(v.state, 'running');
  await waitFor(`${name} beats on ${x.proc.nodeId}`, async () => (await x.client.getVm(name)).heartbeatBeats > v.heartbeatBeats + 20, 10_000, 20);
}

test('QEMU tunnel: a target that resumed but cannot record its ownership refuses; the source QEMU resumes; a direct migration then waits for Owned', async () => {
  await a.client.createVm({ name: 'q-fence', memBytes: 64 * MiB, vcpus: 1, profile: 'idle', fillBytes: 16 * MiB });
  await beatsOn(a, 'q-fence');
  // 1. A fence this target cannot honour (it runs without etcd): it runs the guest (Activated),
  // fails to record, kills its QEMU and refuses FAILED_PRECONDITION "fenced".
  const phases: string[] = [];
  let failed: MigrationResult | undefined;
  const err = await codeOf(a.client.migrateVm('q-fence', b.address, {}, (e) => { phases.push(e.phase); if (e.result) failed = e.result; }, '', 'qs-1', { vmRevision: '777', job: 'job-q', attempt: 2 }));
  assert.equal(err.code, 'FAILED_PRECONDITION', err.message);
  assert.match(err.message, /fenced: node qs-1 has no etcd/, 'the target reached the ownership record, i.e. it had run the guest');
  assert.match(err.message, /the source VM resumed/);
  assert.ok(phases.includes('verifying'), `the source sent Complete (phases ${phases.join(',')})`);
  // the pause that ended in the resume is reported (QEMU STOP -> cont)
  assert.ok((failed?.pausedMs ?? 0) > 0, `failed result's pausedMs ${failed?.pausedMs}`);
  await beatsOn(a, 'q-fence');
  assert.deepEqual(await b.client.listVms(), [], 'nothing runs on the target');
  await waitFor('the target released its copy', async () => (await b.client.nodeInfo()).memUsedBytes === 0, 10_000);
  // 2. Direct (no fence): Owned right after Activated; the source QEMU is destroyed after it.
  const r = await a.client.migrateVm('q-fence', b.address, {});
  assert.equal(r.outcome, 'succeeded');
  assert.ok(r.pausedMs !== undefined && r.pausedMs >= r.downtimeMs - 1, `paused ${r.pausedMs} ms, downtime ${r.downtimeMs} ms`);
  await beatsOn(b, 'q-fence');
  assert.equal((await codeOf(a.client.getVm('q-fence'))).code, 'NOT_FOUND');
  assert.equal((await a.client.nodeInfo()).memUsedBytes, 0, 'the source QEMU is gone');
  await b.client.destroyVm('q-fence');
});
