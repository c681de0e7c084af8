/**
 * QEMU's native TLS migration set up by the agents (protocol.ts "QEMU native"): two TLS agents
 * (`drover agent --hypervisor qemu`, certificates from a throw-away CA) make the two QEMUs
 * migrate straight to each other with tls-creds-x509 from their node certificates, while the
 * Transfer stream keeps the control and the switchover; a target configured for the tunnel only
 * makes the same Start fall back to the tunnel. At the driver: the target QEMU's tls-authz lets
 * in only the source node's certificate DN (another node's certificate from the same CA is
 * refused, its VM keeps running), and the right source then migrates to the same listener.
 * Faults of the native path: cancel, and the target agent killed mid-migration (its QEMU may
 * outlive it): the source VM keeps running.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startAgents, stopAgents, waitFor, codeOf, destroyEverywhere, type TestAgent } from '../support/agents';
import { pkiFixture, type PkiFixture } from '../../lib/pki/pki-fixture';
import { QemuHypervisor } from '../../hypervisor/qemu/qemu-hypervisor';
import { certificateDn } from '../../hypervisor/qemu/migration-tls';
import type { VmSpec } from '../../hypervisor/types';
import type { TlsFiles } from '../../lib/pki/tls-files';

const MiB = 1024 * 1024;
let pki: PkiFixture;
let a: TestAgent, b: TestAgent, c: TestAgent;

before(async () => {
  pki = await pkiFixture();
  const tls = { dir: pki.dir, client: await pki.identity({ role: 'controller', name: 'ctl' }) };
  [a, b] = await startAgents(2, 'qn', ['--hypervisor', 'qemu'], { tls });
  [c] = await startAgents(1, 'qt', ['--hypervisor', 'qemu', '--qemu-migration', 'tunnel'], { tls });
});
after(async () => {
  await stopAgents([a, b, c].filter(Boolean));
  pki.cleanup();
});

/** The last completed QEMU migration in `agent`'s log: its transport ('tls', 'tunnel') and multifd channels. */
function lastCompleted(agent: TestAgent): { transport?: string; multifdChannels?: number } | undefined {
  const lines = agent.proc.stderrTail().split('\n').filter((l) => l.includes('"qemu migration completed"'));
  return lines.length ? (JSON.parse(lines.at(-1)!) as { transport?: string; multifdChannels?: number }) : undefined;
}

/** The transport of the last completed QEMU migration in `agent`'s log ('tls', 'tunnel'). */
function lastTransport(agent: TestAgent): string | undefined {
  return lastCompleted(agent)?.transport;
}

/** Migrates `name` from `from` to `to` (node `toNode`), checks it arrived and beats; returns the result. */
async function migrate(name: string, from: TestAgent, to: TestAgent, toNode: string, streams = 1) {
  const r = await from.client.migrateVm(name, to.address, { verify: true, streams }, undefined, '', toNode);
  assert.equal(r.outcome, 'succeeded');
  assert.ok(r.downtimeMs > 0 && r.downtimeMs < 1000, `downtime ${r.downtimeMs} ms`);
  assert.ok(r.hypervisorDowntimeMs !== undefined && r.hypervisorDowntimeMs >= 0);
  assert.ok(r.pageBytes >= 16 * MiB, `QEMU sent ${r.pageBytes} bytes`);
  assert.deepEqual((await from.client.listVms()).map((v) => v.spec.name), []);
  const on = await to.client.getVm(name);
  assert.equal(on.nodeId, toNode);
  await waitFor('heartbeat on the target grows', async () => (await to.client.getVm(name)).heartbeatBeats > on.heartbeatBeats + 50, 5000, 20);
  assert.equal((await to.client.verifyVm(name)).ok, true);
  return r;
}

test('TLS agents: QEMU migrates natively over TLS between the QEMUs; a tunnel-only target falls back to the tunnel', async () => {
  const spec: VmSpec = { name: 'qn-web', memBytes: 128 * MiB, vcpus: 1, profile: 'web', fillBytes: 48 * MiB };
  await a.client.createVm(spec);
  await migrate(spec.name, a, b, 'qn-1');
  assert.equal(lastTransport(a), 'tls', 'the source agent used native TLS');
  // b asks for native TLS, c is configured for the tunnel only: the same Start falls back
  await migrate(spec.name, b, c, 'qt-0');
  assert.equal(lastTransport(b), 'tunnel', 'the tunnel carried it');
  await c.client.destroyVm(spec.name);
});

test('TLS agents, --streams 3: the QEMUs migrate natively over 3 multifd TLS channels; the guest runs on the target', async () => {
  const spec: VmSpec = { name: 'qn-mfd', memBytes: 128 * MiB, vcpus: 1, profile: 'web', fillBytes: 48 * MiB };
  await a.client.createVm(spec);
  try {
    const r = await migrate(spec.name, a, b, 'qn-1', 3);
    // The count is the target's answer (Accepted.qemu_multifd_channels); QEMU fails a migration whose two sides disagree on it.
    assert.deepEqual({ transport: lastCompleted(a)?.transport, channels: lastCompleted(a)?.multifdChannels }, { transport: 'tls', channels: 3 });
    assert.equal(r.mode, 'precopy', 'multifd excludes post-copy (QEMU 7.2)');
  } finally {
    await destroyEverywhere(spec.name, a, b);
  }
});

test("driver: the target QEMU's tls-authz refuses another node's certificate; the source node's gets in", async () => {
  const target = await pki.identity({ role: 'node', name: 'tq', hosts: ['127.0.0.1'] });
  const good = await pki.identity({ role: 'node', name: 'sq', hosts: ['127.0.0.1'] });
  const evil = await pki.identity({ role: 'node', name: 'eq', hosts: ['127.0.0.1'] });
  const hv = (f: TlsFiles) => new QemuHypervisor({ migration: { transport: 'tls', host: '127.0.0.1', tls: f.paths } });
  const [ht, hg, he] = [hv(target), hv(good), hv(evil)];
  try {
    const spec: VmSpec = { name: 'qn-authz', memBytes: 64 * MiB, vcpus: 1, profile: 'idle', fillBytes: 8 * MiB };
    const dst = await ht.createIncoming(spec);
    const dn = certificateDn(good.cert);
    assert.equal(dn, 'CN=node.sq,O=drover,OU=node');
    const ep = await dst.stream.startIncoming({ listen: { authzIdentity: dn } });
    assert.equal(ep.tcp?.tls, true);
    assert.ok(ep.tcp!.port > 0);
    const [srcGood, srcEvil] = await Promise.all([hg.createDomain(spec), he.createDomain(spec)]);
    await assert.rejects(srcEvil.stream.migrateOut(ep, { deadlineMs: 20_000 }), (e: Error & { code?: string }) => {
      assert.equal(e.code, 'ABORTED', e.message);
      return true;
    });
    assert.equal(await srcEvil.status(), 'running', 'the refused source keeps running');
    assert.equal(await dst.status(), 'inmigrate', 'the target still waits for the right source');
    const r = await srcGood.stream.migrateOut(ep, { deadlineMs: 30_000 });
    assert.equal(r.status, 'completed');
    await dst.waitBeats(dst.heartbeat().beats, 5000);
    assert.equal(await dst.status(), 'running');
  } finally {
    await Promise.all([ht.close(), hg.close(), he.close()]);
  }
});

/** The VM runs on `x`: state running and the heartbeat grows. */
async function runsOn(x: TestAgent, name: string): Promise<void> {
  const v = await x.client.getVm(name);
  assert.equal(v.state, 'running');
  await waitFor(`${name} beats on ${x.proc.nodeId}`, async () => (await x.client.getVm(name)).heartbeatBeats > v.heartbeatBeats + 50, 5000, 20);
}

test('native TLS: cancel during pre-copy, then the target agent killed mid-migration: the source VM keeps running', async () => {
  const spec: VmSpec = { name: 'qn-fault', memBytes: 128 * MiB, vcpus: 1, profile: 'idle', fillBytes: 96 * MiB };
  await a.client.createVm(spec);
  let asked = false;
  const cancelled = await codeOf(a.client.migrateVm(spec.name, b.address, { bandwidthBytesPerSec: 16 * MiB }, (e) => {
    if (!asked && e.phase === 'precopy' && e.sentBytes > 8 * MiB) {
      asked = true;
      void a.client.cancelMigration(e.migrationId);
    }
  }, '', 'qn-1'));
  assert.ok(asked, 'cancel was asked during pre-copy');
  assert.equal(cancelled.code, 'CANCELLED', cancelled.message);
  await runsOn(a, spec.name);
  await waitFor('the target released its reservation', async () => (await b.client.nodeInfo()).memUsedBytes === 0, 10_000);
  let killed = false;
  const err = await codeOf(a.client.migrateVm(spec.name, b.address, { bandwidthBytesPerSec: 16 * MiB }, (e) => {
    if (!killed && e.phase === 'precopy' && e.sentBytes > 8 * MiB) {
      killed = true;
      b.proc.kill();
    }
  }, '', 'qn-1'));
  assert.ok(killed, 'the target agent was killed during pre-copy');
  assert.match(err.code, /ABORTED|UNAVAILABLE/, err.message);
  await runsOn(a, spec.name);
  await a.client.destroyVm(spec.name);
});
