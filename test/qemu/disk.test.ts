/**
 * A QEMU VM whose disk is an NBD export (qemu-nbd) opened by both QEMUs: it migrates between two
 * agents with the disk staying where it is, and the target's QEMU holds the same export.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startAgents, stopAgents, waitFor, type TestAgent } from '../support/agents';
import { startQemuNbd, type LocalNbdServer } from '../../storage/nbd/local-nbd-servers';

const MiB = 1024 * 1024;
let a: TestAgent, b: TestAgent;
let nbd: LocalNbdServer;

before(async () => {
  nbd = await startQemuNbd({ export: { name: 'qdisk', size: 64 * MiB }, shared: 4 });
  [a, b] = await startAgents(2, 'qd', ['--hypervisor', 'qemu']);
});
after(async () => {
  await stopAgents([a, b]);
  await nbd.stop();
});

test('a QEMU VM with an NBD disk migrates; the disk stays on shared storage', async () => {
  const disk = nbd.uri();
  await a.client.createVm({ name: 'qd1', memBytes: 128 * MiB, vcpus: 1, profile: 'web', disk });
  const r = await a.client.migrateVm('qd1', b.address, { verify: true });
  assert.equal(r.outcome, 'succeeded');
  assert.equal(r.verified, true);
  const on = await b.client.getVm('qd1');
  assert.equal(on.spec.disk, disk);
  await waitFor('heartbeat on the target grows', async () => (await b.client.getVm('qd1')).heartbeatBeats > on.heartbeatBeats + 50, 5000, 20);
  // Only memory and device state crossed: far less than a 64 MiB disk would add to the 128 MiB guest.
  assert.ok(r.bytesSent < 200 * MiB, `sent ${r.bytesSent}`);
});

test('a QEMU VM whose export cannot be opened is refused with an error naming it', async () => {
  const bad = nbd.uri().replace(/\/qdisk$/, '/no-such-export');
  await assert.rejects(a.client.createVm({ name: 'qd3', memBytes: 64 * MiB, vcpus: 1, profile: 'idle', disk: bad }), (e: Error) => /no-such-export/.test(e.message));
  assert.deepEqual((await a.client.listVms()).map((v) => v.spec.name).filter((n) => n === 'qd3'), []);
});
