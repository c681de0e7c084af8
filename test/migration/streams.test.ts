/**
 * Migrations over several gRPC Transfer streams (`transport: 'grpc'`; the bulk channel's own
 * tests are bulk.test.ts) between mutual-TLS agents (real `drover agent` processes): over 2 and 4 streams a dirtying VM moves and verifies (the target's image digest
 * equals the paused source's memory, the guest's own check passes there). A secondary stream cut
 * mid-migration (a TCP proxy in front of the target closes the second connection) fails the whole
 * migration: the VM keeps running on the source, the target discards its copy, and a follow-up
 * migration verifies.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { startAgents, stopAgents, codeOf, sleep, waitFor, destroyEverywhere, type TestAgent } from '../support/agents';
import { pkiFixture, type PkiFixture } from '../../lib/pki/pki-fixture';
import type { VmSpec } from '../../hypervisor/types';
import { startTcpProxy } from '../support/tcp-proxy';

const MiB = 2 ** 20;

let pki: PkiFixture;
let agents: TestAgent[] = [];

before(async () => {
  pki = await pkiFixture();
  agents = await startAgents(2, 'ms', [], { tls: { dir: pki.dir, client: await pki.identity({ role: 'controller', name: 'ctl' }) } });
});
after(async () => {
  await stopAgents(agents);
  pki.cleanup();
});

const spec = (name: string, memBytes = 96 * MiB): VmSpec => ({ name, memBytes, vcpus: 1, profile: 'web', fillBytes: memBytes / 2, seed: 7 });

/** Migrates `vm` from a to b over `streams` streams (through a counting proxy) and checks it verified and runs on b. */
async function migratesAndVerifies(vm: string, streams: number): Promise<void> {
  const [a, b] = agents;
  const proxy = await startTcpProxy(b.address);
  let r;
  try {
    r = await a.client.migrateVm(vm, proxy.address, { verify: true, streams, transport: 'grpc' }, undefined, '', 'ms-1');
  } finally {
    await proxy.close();
  }
  assert.equal(proxy.stats.connections, streams, 'one connection per stream');
  assert.equal(r.outcome, 'succeeded');
  assert.equal(r.verified, true, 'the target image digest equals the paused source memory');
  const v = await b.client.getVm(vm);
  await sleep(200);
  const check = await b.client.verifyVm(vm);
  assert.equal(check.ok, true, check.detail);
  assert.ok(check.heartbeatBeats > v.heartbeatBeats, 'the guest runs on the target');
  assert.deepEqual((await a.client.listVms()).map((x) => x.spec.name), []);
}

for (const streams of [2, 4]) {
  test(`a dirtying VM migrates over ${streams} TLS streams and verifies`, async () => {
    const [a, b] = agents;
    await a.client.createVm(spec(`s${streams}`));
    try {
      await migratesAndVerifies(`s${streams}`, streams);
    } finally {
      await destroyEverywhere(`s${streams}`, a, b);
    }
  });
}

test('a secondary stream cut mid-migration rolls back: the VM runs on the source, a follow-up migration verifies', async () => {
  const [a, b] = agents;
  await a.client.createVm(spec('cut1'));
  // Connection 1 carries PrepareIncoming and stream 0; connection 2 is stream 1.
  const proxy = await startTcpProxy(b.address, { cutAfter: { connection: 2, bytes: 4 * MiB } });
  try {
    const err = await codeOf(a.client.migrateVm('cut1', proxy.address, { verify: true, streams: 2, bandwidthBytesPerSec: 32 * MiB, transport: 'grpc' }, undefined, '', 'ms-1'));
    assert.ok(proxy.stats.cutAfterDone, 'the proxy cut stream 1');
    assert.match(err.code, /UNAVAILABLE|ABORTED|CANCELLED|INTERNAL/, err.message);
    const v0 = await a.client.getVm('cut1');
    assert.equal(v0.state, 'running');
    await sleep(300);
    const v1 = await a.client.getVm('cut1');
    assert.ok(v1.heartbeatBeats > v0.heartbeatBeats, 'the guest keeps running on the source');
    assert.equal((await a.client.verifyVm('cut1')).ok, true);
    await waitFor('the target to discard its copy', async () => (await b.client.nodeInfo()).memUsedBytes === 0);
    await migratesAndVerifies('cut1', 2);
  } finally {
    await proxy.close();
    await destroyEverywhere('cut1', a, b);
  }
});

test('a bad --streams value is one usage line naming the flag, exit 2', () => {
  const bin = path.resolve(__dirname, '..', '..', '..', 'bin', 'drover');
  for (const [args, re] of [
    [['migrate', 'v', '--from', '127.0.0.1:1', '--to', '127.0.0.1:2', '--insecure', '--streams', '9'], /--streams "9" is not a stream count \(expected 1\.\.8 or auto\)/],
    [['bench', '--streams', '1,two'], /--streams "two" is not a stream count/],
  ] as [string[], RegExp][]) {
    const r = spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8' });
    assert.equal(r.status, 2, r.stderr);
    const lines = r.stderr.trim().split('\n').filter((l) => !/--insecure/.test(l));
    assert.equal(lines.length, 1, r.stderr);
    assert.match(lines[0], re);
  }
});
