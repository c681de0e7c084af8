/**
 * Faults of QEMU migrations between agent processes: the VM is never lost. Target agent killed
 * mid-migration, cancel, a hypervisor mismatch, a bad QEMU binary.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { startAgents, stopAgents, waitFor, codeOf, type TestAgent } from '../support/agents';
import { startAgent } from '../../services/node-agent/agent-process';
import { AgentClient } from '../../services/node-agent/client/agent-client';
import type { MigrationEventInfo } from '../../services/node-agent/client/agent-codec';

const MiB = 1024 * 1024;
const all: TestAgent[] = [];
after(() => stopAgents(all));

/** The VM runs on `x`: state running and the heartbeat grows. */
async function runsOn(x: TestAgent, name: string): Promise<void> {
  const v = await x.client.getVm(name);
  assert.equal(v.state, 'running');
  await waitFor(`${name} beats on ${x.proc.nodeId}`, async () => (await x.client.getVm(name)).heartbeatBeats > v.heartbeatBeats + 50, 5000, 20);
}

test('target agent killed mid-migration: the source VM keeps running', async () => {
  const [a, b] = await startAgents(2, 'qk', ['--hypervisor', 'qemu']);
  all.push(a, b);
  await a.client.createVm({ name: 'q-kill', memBytes: 256 * MiB, vcpus: 1, profile: 'idle', fillBytes: 200 * MiB });
  let killed = false;
  const events: MigrationEventInfo[] = [];
  const p = a.client.migrateVm('q-kill', b.address, { bandwidthBytesPerSec: 40 * MiB }, (e) => {
    events.push(e);
    if (!killed && e.phase === 'precopy' && e.sentBytes > 20 * MiB) {
      killed = true;
      b.proc.kill();
    }
  });
  const err = await codeOf(p);
  assert.ok(killed, 'the target was killed during pre-copy');
  assert.match(err.code, /ABORTED|UNAVAILABLE/);
  assert.match(err.message, /source keeps running|target/);
  await runsOn(a, 'q-kill');
  assert.equal((await a.client.getVm('q-kill')).state, 'running');
  await a.client.destroyVm('q-kill');
});

test('cancel during pre-copy: CANCELLED, the source keeps running, the target discards its QEMU', async () => {
  const [a, b] = await startAgents(2, 'qc', ['--hypervisor', 'qemu']);
  all.push(a, b);
  await a.client.createVm({ name: 'q-cancel', memBytes: 256 * MiB, vcpus: 1, profile: 'idle', fillBytes: 200 * MiB });
  let asked = false;
  const p = a.client.migrateVm('q-cancel', b.address, { bandwidthBytesPerSec: 40 * MiB }, (e) => {
    if (!asked && e.phase === 'precopy' && e.sentBytes > 10 * MiB) {
      asked = true;
      void a.client.cancelMigration(e.migrationId);
    }
  });
  const err = await codeOf(p);
  assert.equal(err.code, 'CANCELLED', err.message);
  await runsOn(a, 'q-cancel');
  await waitFor('the target released its reservation', async () => (await b.client.nodeInfo()).memUsedBytes === 0, 5000);
  // and it can migrate after all
  const r = await a.client.migrateVm('q-cancel', b.address, {});
  assert.equal(r.outcome, 'succeeded');
  await runsOn(b, 'q-cancel');
});

test('a QEMU source and a sim target: refused naming both stream kinds, the VM stays', async () => {
  const [a] = await startAgents(1, 'qx', ['--hypervisor', 'qemu']);
  const [s] = await startAgents(1, 'sx');
  all.push(a, s);
  await a.client.createVm({ name: 'q-mix', memBytes: 64 * MiB, vcpus: 1, profile: 'idle' });
  const err = await codeOf(a.client.migrateVm('q-mix', s.address, {}));
  assert.equal(err.code, 'FAILED_PRECONDITION');
  assert.match(err.message, /qemu tunnel.*page stream/);
  await runsOn(a, 'q-mix');
  await waitFor('the sim target released its reservation', async () => (await s.client.nodeInfo()).memUsedBytes === 0, 5000);
});

test('a bad hypervisor binary: CreateVm fails with an error naming the command line', async () => {
  const proc = await startAgent('qbad', ['--hypervisor', 'qemu', '--qemu-binary', '/nonexistent/qemu-system-x86_64']);
  const client = new AgentClient(proc.address);
  all.push({ proc, client, address: proc.address });
  await client.waitReady();
  const err = await codeOf(client.createVm({ name: 'q-bad', memBytes: 64 * MiB, vcpus: 1, profile: 'idle' }));
  assert.equal(err.code, 'FAILED_PRECONDITION');
  assert.match(err.message, /QEMU failed to start \(binary not found: \/nonexistent\/qemu-system-x86_64\)/);
  assert.match(err.message, /\/nonexistent\/qemu-system-x86_64 -name q-bad .*-m 64/);
  assert.deepEqual(await client.listVms(), []);
  assert.equal((await client.nodeInfo()).memUsedBytes, 0);
});
