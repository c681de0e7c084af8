/**
 * QEMU VMs hosted and migrated by two real `drover agent --hypervisor qemu` processes: QEMU's
 * stream travels over the agents' gRPC Transfer stream (the QEMU tunnel of protocol.ts). Small
 * TCG guests; every migration must leave the guest beating on the target and nothing on the source.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startAgents, stopAgents, waitFor, sleep, type TestAgent } from '../support/agents';
import type { VmSpec } from '../../hypervisor/types';
import type { MigrationEventInfo } from '../../services/node-agent/client/agent-codec';

const MiB = 1024 * 1024;
let a: TestAgent, b: TestAgent;

before(async () => {
  [a, b] = await startAgents(2, 'qm', ['--hypervisor', 'qemu']);
});
after(() => stopAgents([a, b]));

/** Creates `spec` on a, migrates it to b, checks the guest beats on b; returns the result and events. */
async function migrateAndCheck(spec: VmSpec, policy: { maxDowntimeMs?: number; bandwidthBytesPerSec?: number } = {}) {
  await a.client.createVm(spec);
  const before = await a.client.getVm(spec.name);
  assert.equal(before.state, 'running');
  let events: MigrationEventInfo[] = [];
  let r;
  try {
    r = await a.client.migrateVm(spec.name, b.address, { verify: true, ...policy }, (e) => events.push(e));
  } catch (err) {
    // QEMU 7.2 TCG under heavy host load: now and then the guest stops (CPU exception, '!') right
    // after an incoming migration, so the target never beats. The agents must then roll back:
    // the VM runs on the source again and nothing is on the target. Checked, then migrated again.
    const e = err as Error;
    if (!/did not run .*heartbeat stuck/.test(e.message)) throw err;
    assert.match(e.message, /the source VM resumed/);
    assert.equal((await a.client.getVm(spec.name)).state, 'running');
    await waitFor('the target discarded its copy', async () => (await b.client.listVms()).length === 0, 10_000);
    events = [];
    r = await a.client.migrateVm(spec.name, b.address, { verify: true, ...policy }, (e) => events.push(e));
  }
  assert.equal(r.outcome, 'succeeded');
  assert.equal(r.verified, true);
  assert.ok(r.pageBytes >= (spec.fillBytes ?? 0) / 2, `QEMU sent ${r.pageBytes} bytes`);
  assert.ok(r.bytesSent >= r.pageBytes, `tunnel carried ${r.bytesSent} ≥ QEMU's ${r.pageBytes}`);
  assert.ok(r.rounds >= 1);
  // downtime is measured, not copied: source STOP to target RESUME (QEMU's events), QEMU's own
  // figure beside it, and the guest's blackout, which cannot be shorter than the vCPUs were stopped
  assert.ok(r.downtimeMs > 0, `downtime ${r.downtimeMs} ms`);
  assert.ok(r.hypervisorDowntimeMs !== undefined && r.hypervisorDowntimeMs >= 0, `QEMU's downtime ${r.hypervisorDowntimeMs}`);
  assert.ok(r.guestBlackoutMs !== undefined && r.guestBlackoutMs >= r.downtimeMs - 20, `blackout ${r.guestBlackoutMs} ms vs downtime ${r.downtimeMs} ms`);
  // progress means something: rounds = dirty syncs, sent bytes grow, the last event is done
  assert.equal(events.at(-1)!.phase, 'done');
  assert.ok(events.some((e) => e.phase === 'precopy' && e.sentBytes > 0));
  // the VM left the source and runs on the target: its heartbeat keeps growing
  assert.deepEqual((await a.client.listVms()).map((v) => v.spec.name), []);
  const on = await b.client.getVm(spec.name);
  assert.equal(on.nodeId, 'qm-1');
  await waitFor('heartbeat on the target grows', async () => (await b.client.getVm(spec.name)).heartbeatBeats > on.heartbeatBeats + 50, 5000, 20);
  const v = await b.client.verifyVm(spec.name);
  assert.equal(v.ok, true, v.detail);
  assert.match(v.detail, /memory verification N\/A/);
  await b.client.destroyVm(spec.name);
  return { r, events };
}

test('idle: migrates through the agents and keeps beating on the target', async () => {
  const { r } = await migrateAndCheck({ name: 'q-idle', memBytes: 128 * MiB, vcpus: 1, profile: 'idle' });
  assert.ok(r.downtimeMs < 1000, `downtime ${r.downtimeMs} ms`); // loose: shared 2-core CI; the bench measures it
});

test('web: migrates through the agents at the default 5 ms target', async () => {
  const { r } = await migrateAndCheck({ name: 'q-web', memBytes: 128 * MiB, vcpus: 1, profile: 'web' });
  assert.ok(r.downtimeMs < 1000, `downtime ${r.downtimeMs} ms (${r.mode})`);
});

test('mmuncher (fast WSS) at a strict 1 ms target: the policy switches (post-copy) and it completes', async () => {
  const { r, events } = await migrateAndCheck({ name: 'q-much', memBytes: 192 * MiB, vcpus: 1, profile: 'mmuncher', wssBytes: 48 * MiB }, { maxDowntimeMs: 1 });
  assert.equal(r.stopReason, 'stalled', 'pre-copy did not converge: the policy acted');
  assert.equal(r.mode, 'postcopy');
  assert.ok(events.some((e) => e.phase === 'activating'), 'post-copy shows as the target running the VM');
  assert.ok(r.downtimeMs < 100, `downtime ${r.downtimeMs} ms`);
});

test('db: skewed writes over a larger working set arrive and keep beating', async () => {
  const { r } = await migrateAndCheck({ name: 'q-db', memBytes: 128 * MiB, vcpus: 1, profile: 'db' });
  assert.ok(r.downtimeMs < 1000, `downtime ${r.downtimeMs} ms (${r.mode}, ${r.stopReason})`);
});

test('a bandwidth cap is honoured (max-bandwidth) and the VM still arrives', async () => {
  const t0 = Date.now();
  const { r } = await migrateAndCheck({ name: 'q-cap', memBytes: 128 * MiB, vcpus: 1, profile: 'idle', fillBytes: 48 * MiB }, { bandwidthBytesPerSec: 32 * MiB });
  const secs = (Date.now() - t0) / 1000;
  assert.ok(r.totalMs >= 1000, `48 MiB at 32 MiB/s took ${r.totalMs} ms`);
  assert.ok(secs < 30);
});

test('VerifyVm on the source reports the heartbeat; GetVm/ListVms/DestroyVm work', async () => {
  await a.client.createVm({ name: 'q-life', memBytes: 64 * MiB, vcpus: 1, profile: 'idle' });
  const info = await a.client.nodeInfo();
  assert.equal(info.hypervisor, 'qemu');
  assert.deepEqual(info.vms.map((v) => v.spec.name), ['q-life']);
  const v = await a.client.verifyVm('q-life');
  assert.equal(v.ok, true);
  assert.ok(v.heartbeatBeats > 0);
  await sleep(50);
  assert.ok((await a.client.getVm('q-life')).heartbeatBeats > v.heartbeatBeats - 1);
  await a.client.destroyVm('q-life');
  assert.deepEqual(await a.client.listVms(), []);
});
