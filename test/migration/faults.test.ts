/**
 * Failures before commit leave the VM running on the source, unchanged, and the target
 * discards its copy: cancel mid-round, target process killed, source process killed.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startAgents, stopAgents, sleep, waitFor, codeOf } from '../support/agents';
import type { MigrationEventInfo } from '../../services/node-agent/client/agent-codec';
import type { AgentClient } from '../../services/node-agent/client/agent-client';
import type { MigrationResult } from '../../migration/types';

const MiB = 2 ** 20;
/** A cap that keeps round 1 of a 64 MiB fill running for several seconds. */
const SLOW = { bandwidthBytesPerSec: 8 * MiB, verify: false };

/** Starts a migration and resolves once round 1 has sent `bytes`; returns the id and the pending result. */
async function migrationInRound1(src: AgentClient, vm: string, target: string, bytes = 4 * MiB) {
  let id = '';
  let seen!: () => void;
  const inRound = new Promise<void>((r) => { seen = r; });
  const done = src.migrateVm(vm, target, SLOW, (e: MigrationEventInfo) => {
    id = e.migrationId;
    if (e.phase === 'precopy' && e.sentBytes >= bytes) seen();
  });
  done.catch(() => undefined);
  await Promise.race([inRound, done]);
  return { id: () => id, done };
}

/** After a failed migration the VM runs on the source as before: running, its own check passes, it keeps beating. */
async function assertRunsOnSource(src: AgentClient, vm: string): Promise<void> {
  const before = await src.getVm(vm);
  assert.equal(before.state, 'running');
  await sleep(200);
  const check = await src.verifyVm(vm);
  assert.equal(check.ok, true, check.detail);
  assert.ok(check.heartbeatBeats > before.heartbeatBeats, 'the guest keeps running on the source');
}

test('a migration cancelled mid-round leaves the source running and unchanged', async () => {
  const agents = await startAgents(2, 'cancel');
  try {
    const [a, b] = agents;
    await a.client.createVm({ name: 'c1', memBytes: 256 * MiB, vcpus: 1, profile: 'web', seed: 1 });
    const m = await migrationInRound1(a.client, 'c1', b.address);
    const phase = await a.client.cancelMigration(m.id());
    assert.equal(phase, 'precopy');
    const err = await codeOf(m.done);
    assert.equal(err.code, 'CANCELLED', err.message);
    await assertRunsOnSource(a.client, 'c1');
    await waitFor('the target to discard its copy', async () => (await b.client.nodeInfo()).memUsedBytes === 0);
    assert.deepEqual(await b.client.listVms(), []);
    // Cancelling a migration that no longer runs is NOT_FOUND, not a crash.
    assert.equal((await codeOf(a.client.cancelMigration(m.id()))).code, 'NOT_FOUND');
  } finally {
    await stopAgents(agents);
  }
});

test('the target process killed mid-migration: the source resumes', async () => {
  const agents = await startAgents(2, 'tkill');
  try {
    const [a, b] = agents;
    await a.client.createVm({ name: 't1', memBytes: 256 * MiB, vcpus: 1, profile: 'db', seed: 2 });
    const m = await migrationInRound1(a.client, 't1', b.address);
    b.proc.kill();
    const err = await codeOf(m.done);
    assert.ok(['UNAVAILABLE', 'ABORTED', 'CANCELLED', 'INTERNAL'].includes(err.code), `${err.code}: ${err.message}`);
    await assertRunsOnSource(a.client, 't1');
  } finally {
    await stopAgents(agents);
  }
});

test('the source process killed mid-migration: the target discards its copy', async () => {
  const agents = await startAgents(2, 'skill');
  try {
    const [a, b] = agents;
    await a.client.createVm({ name: 's1', memBytes: 256 * MiB, vcpus: 1, profile: 'web', seed: 3 });
    const m = await migrationInRound1(a.client, 's1', b.address);
    assert.ok((await b.client.nodeInfo()).memUsedBytes > 0, 'the target holds a reservation');
    a.proc.kill();
    await codeOf(m.done);
    await waitFor('the target to discard its copy', async () => (await b.client.nodeInfo()).memUsedBytes === 0, 20_000);
    assert.deepEqual(await b.client.listVms(), [], 'no VM runs on the target');
  } finally {
    await stopAgents(agents);
  }
});

test('a target that refuses after Complete (it resumed, then fenced itself): the source resumes; a direct migration then succeeds', async () => {
  const agents = await startAgents(2, 'refuse');
  try {
    const [a, b] = agents;
    assert.equal((await codeOf(a.client.migrateVm('nope', b.address, {}))).code, 'NOT_FOUND');
    assert.equal((await codeOf(a.client.getVm('nope'))).code, 'NOT_FOUND');
    assert.equal((await codeOf(a.client.cancelMigration('m-nope'))).code, 'NOT_FOUND');
    await a.client.createVm({ name: 'r1', memBytes: 64 * MiB, vcpus: 1, profile: 'web' });
    // 1. A fence the target cannot honour (it runs without etcd): it verifies, resumes, cannot
    // record its ownership, destroys its copy and refuses; the source must resume.
    const phases: string[] = [];
    let failed: MigrationResult | undefined;
    const fenced = a.client.migrateVm('r1', b.address, { verify: true }, (e) => { phases.push(e.phase); if (e.result) failed = e.result; }, '', 'n2', { vmRevision: '12345', job: 'job-x', attempt: 1 });
    const err = await codeOf(fenced);
    assert.equal(err.code, 'FAILED_PRECONDITION', err.message);
    assert.match(err.message, /fenced/);
    assert.ok(phases.includes('verifying'), `the source sent Complete (phases ${phases.join(',')})`);
    // The pause that ended in the rollback is downtime too: the failed result reports it.
    assert.equal(failed?.outcome, 'failed');
    assert.ok((failed?.pausedMs ?? 0) > 0, `pausedMs ${failed?.pausedMs} of a pause that ended in a resume`);
    assert.equal((await a.client.getVm('r1')).state, 'running', 'the source resumed');
    assert.equal((await a.client.verifyVm('r1')).ok, true);
    assert.deepEqual(await b.client.listVms(), [], 'nothing runs on the target');
    await waitFor('the target to release its copy', async () => (await b.client.nodeInfo()).memUsedBytes === 0);
    // 2. Direct (no fence): Owned right after Activated; the VM runs on the target only.
    const r = await a.client.migrateVm('r1', b.address, { verify: true });
    assert.equal(r.outcome, 'succeeded');
    assert.equal(r.verified, true);
    assert.equal((await b.client.getVm('r1')).state, 'running');
    assert.equal((await codeOf(a.client.getVm('r1'))).code, 'NOT_FOUND');
  } finally {
    await stopAgents(agents);
  }
});
