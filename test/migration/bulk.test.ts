/**
 * The bulk channel between mutual-TLS agents (real `drover agent` processes, real TLS): a
 * migration's page batches go over raw TLS sockets to the target's bulk listener and verify (the
 * target's image digest equals the paused source's memory, the guest's own check passes there),
 * over one and two sockets. A target started with `--bulk off`, or whose bulk port cannot be
 * reached, takes the batches over gRPC instead and verifies; `--transport bulk` against it fails
 * and the VM keeps running on the source. A socket with a wrong join token, a certificate of
 * another node or one from another CA is closed without an answer and the running migration
 * still verifies. A bulk socket cut mid-round rolls back: the VM runs on the source, the target
 * discards its copy, and a second migration succeeds. A round longer than the target's idle
 * timeout, during which stream 0 carries no frame (the batches all go over the sockets), does not
 * trip it.
 *
 * Cuts and unreachable ports use a second loopback address: the source dials the bulk port on
 * the host it reached the target's gRPC at, so a gRPC proxy on 127.0.0.2 makes it dial
 * 127.0.0.2:PORT, where a test proxy may (or may not) listen.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import * as tls from 'node:tls';
import { startAgents, stopAgents, codeOf, sleep, waitFor, type TestAgent } from '../support/agents';
import { startTcpProxy } from '../support/tcp-proxy';
import { pkiFixture, type PkiFixture } from '../../lib/pki/pki-fixture';
import { tlsClientOptions } from '../../lib/pki/tls-options';
import { BulkSocket } from '../../migration/transport/bulk-socket';
import { PROTOCOL_VERSION, type Frame } from '../../migration/wire/protocol';
import { loadTlsFiles, type TlsFiles } from '../../lib/pki/tls-files';
import type { VmSpec } from '../../hypervisor/types';

const MiB = 2 ** 20;
const PAGE = 4096;

let pki: PkiFixture;
let foreign: PkiFixture;
let agents: TestAgent[] = [];
let noBulk: TestAgent[] = [];

before(async () => {
  pki = await pkiFixture();
  foreign = await pkiFixture('drover-foreign-');
  const client = await pki.identity({ role: 'controller', name: 'ctl' });
  agents = await startAgents(2, 'bulk', [], { tls: { dir: pki.dir, client } });
  noBulk = await startAgents(1, 'nobulk', ['--bulk', 'off'], { tls: { dir: pki.dir, client } });
});
after(async () => {
  await stopAgents([...agents, ...noBulk]);
  pki.cleanup();
  foreign.cleanup();
});

const spec = (name: string, memBytes = 96 * MiB): VmSpec => ({ name, memBytes, vcpus: 1, profile: 'web', fillBytes: memBytes / 2, seed: 11 });

/** Checks the VM verified, runs on `to` (its guest check passes, its heartbeat grows) and left `from`. */
async function runsOn(vm: string, to: TestAgent, from: TestAgent): Promise<void> {
  const v = await to.client.getVm(vm);
  await sleep(200);
  const check = await to.client.verifyVm(vm);
  assert.equal(check.ok, true, check.detail);
  assert.ok(check.heartbeatBeats > v.heartbeatBeats, 'the guest runs on the target');
  assert.deepEqual((await from.client.listVms()).map((x) => x.spec.name), []);
}

/** Creates `vm` on agent 0, runs `body`, and removes the VM from every agent afterwards. */
async function withVm(vm: string, body: () => Promise<void>): Promise<void> {
  await agents[0].client.createVm(spec(vm));
  try {
    await body();
  } finally {
    for (const a of [...agents, ...noBulk]) await a.client.destroyVm(vm).catch(() => undefined);
  }
}

for (const streams of [1, 2]) {
  test(`a TLS migration over ${streams} bulk socket(s) verifies`, async () => {
    const [a, b] = agents;
    await withVm(`b${streams}`, async () => {
      const r = await a.client.migrateVm(`b${streams}`, b.address, { verify: true, streams, transport: 'bulk' }, undefined, '', 'bulk-1');
      assert.equal(r.outcome, 'succeeded');
      assert.equal(r.transport, 'bulk', 'the page batches took the bulk channel');
      assert.equal(r.verified, true, 'the target image digest equals the paused source memory');
      await runsOn(`b${streams}`, b, a);
    });
  });
}

test('a target that does not offer the bulk channel takes the batches over gRPC (auto) and verifies; --transport bulk fails and the VM stays', async () => {
  const [a] = agents;
  const [c] = noBulk;
  await withVm('nb1', async () => {
    const err = await codeOf(a.client.migrateVm('nb1', c.address, { verify: true, transport: 'bulk' }, undefined, '', 'nobulk-0'));
    assert.equal(err.code, 'FAILED_PRECONDITION', err.message);
    assert.match(err.message, /does not offer the bulk channel/);
    assert.equal((await a.client.getVm('nb1')).state, 'running');
    await waitFor('the target to release its reservation', async () => (await c.client.nodeInfo()).memUsedBytes === 0);
    const r = await a.client.migrateVm('nb1', c.address, { verify: true, streams: 2 }, undefined, '', 'nobulk-0');
    assert.equal(r.transport, 'grpc');
    assert.equal(r.verified, true);
    await runsOn('nb1', c, a);
  });
});

test('a bulk port that cannot be reached falls back to gRPC (auto) and verifies', async () => {
  const [a, b] = agents;
  // The source reaches gRPC through 127.0.0.2, so it dials 127.0.0.2:BULKPORT, where nothing listens.
  const grpcProxy = await startTcpProxy(b.address, { listenHost: '127.0.0.2' });
  await withVm('fb1', async () => {
    try {
      const r = await a.client.migrateVm('fb1', grpcProxy.address, { verify: true }, undefined, '', 'bulk-1');
      assert.equal(r.transport, 'grpc', 'the refused bulk dial fell back to a Transfer stream');
      assert.equal(r.verified, true);
      await runsOn('fb1', b, a);
    } finally {
      await grpcProxy.close();
    }
  });
});

test('a round longer than the idle timeout, with every batch on the bulk socket, does not trip stream 0\'s idle timeout', async () => {
  process.env.DROVER_RECEIVE_IDLE_TIMEOUT_MS = '2500';
  let pair: TestAgent[] = [];
  try {
    pair = await startAgents(2, 'idle', [], { tls: { dir: pki.dir, client: await pki.identity({ role: 'controller', name: 'ctl-idle' }) } });
  } finally {
    delete process.env.DROVER_RECEIVE_IDLE_TIMEOUT_MS;
  }
  const [a, b] = pair;
  try {
    await a.client.createVm(spec('id1'));
    // 48 MiB at 8 MiB/s: round 1 alone lasts ~6 s, more than twice the 2.5 s timeout.
    const r = await a.client.migrateVm('id1', b.address, { verify: true, transport: 'bulk', bandwidthBytesPerSec: 8 * MiB }, undefined, '', 'idle-1');
    assert.equal(r.transport, 'bulk');
    assert.equal(r.verified, true);
    assert.ok(r.totalMs > 5000, `the migration outlasted the idle timeout (${r.totalMs} ms)`);
  } finally {
    await stopAgents(pair);
  }
});

/** Dials the target's bulk port with `files`, sends a joining Start for `migrationId` with `token`; resolves with whether any answer came before the socket closed. */
async function intrude(bulkAddress: string, files: TlsFiles, migrationId: string, token: string): Promise<{ answered: boolean; error: string }> {
  const [host, port] = [bulkAddress.slice(0, bulkAddress.lastIndexOf(':')), Number(bulkAddress.slice(bulkAddress.lastIndexOf(':') + 1))];
  const socket = tls.connect({ ...tlsClientOptions(files, { role: 'node', name: 'bulk-1' }), host, port, servername: 'drover' });
  const s = new BulkSocket(socket, bulkAddress);
  const start: Frame = { kind: 'start', protocolVersion: PROTOCOL_VERSION, migrationId, token, pageSize: PAGE, pageCount: (96 * MiB) / PAGE, streamIndex: 1, streamCount: 2, bulk: 'tls' };
  s.write(start);
  let answered = false;
  s.on('data', () => { answered = true; });
  return new Promise((resolve) => {
    s.on('error', (e: Error) => resolve({ answered, error: e.message }));
    s.on('end', () => resolve({ answered, error: 'ended' }));
  });
}

test('a wrong join token, another node\'s certificate or another CA\'s on the bulk socket is refused; the migration still verifies', async () => {
  const [a, b] = agents;
  const bulkAddress = b.proc.bulkAddress!;
  assert.ok(bulkAddress, 'the target announced its bulk listener');
  const sameIdentity = loadTlsFiles({ ca: path.join(pki.dir, 'ca.crt'), cert: path.join(pki.dir, 'bulk-0.crt'), key: path.join(pki.dir, 'bulk-0.key') });
  const otherNode = await pki.identity({ role: 'node', name: 'bulk-9' });
  const alien = await foreign.identity({ role: 'node', name: 'bulk-0' });
  await withVm('in1', async () => {
    // Capped so the migration is still running while the intruders knock.
    let sending = false;
    const migration = a.client.migrateVm('in1', b.address, { verify: true, transport: 'bulk', bandwidthBytesPerSec: 24 * MiB }, (e) => { if (e.phase === 'precopy' && e.sentBytes > 0) sending = true; }, 'm-intruded', 'bulk-1');
    await waitFor('the migration to send pages (its sockets joined)', () => sending);
    for (const [who, files] of [['the source identity, wrong token', sameIdentity], ['another node', otherNode], ['another CA', alien]] as const) {
      const r = await intrude(bulkAddress, files, 'm-intruded', 'not-the-join-token');
      assert.equal(r.answered, false, `${who}: no answer on the refused socket (${r.error})`);
    }
    const r = await migration;
    assert.equal(r.outcome, 'succeeded');
    assert.equal(r.transport, 'bulk');
    assert.equal(r.verified, true, 'nothing the intruders sent reached the image');
    await runsOn('in1', b, a);
  });
});

test('a bulk socket cut mid-round rolls back: the VM runs on the source, a second migration succeeds', async () => {
  const [a, b] = agents;
  const bulkPort = Number(b.proc.bulkAddress!.split(':').pop());
  const grpcProxy = await startTcpProxy(b.address, { listenHost: '127.0.0.2' });
  const bulkProxy = await startTcpProxy(`127.0.0.1:${bulkPort}`, { listenHost: '127.0.0.2', listenPort: bulkPort, cutAfter: { connection: 1, bytes: 4 * MiB } });
  await withVm('cut1', async () => {
    try {
      const err = await codeOf(a.client.migrateVm('cut1', grpcProxy.address, { verify: true, transport: 'bulk', bandwidthBytesPerSec: 32 * MiB }, undefined, '', 'bulk-1'));
      assert.ok(bulkProxy.stats.cutAfterDone, 'the proxy cut the bulk socket');
      assert.match(err.code, /UNAVAILABLE|ABORTED|CANCELLED/, err.message);
      const v0 = await a.client.getVm('cut1');
      assert.equal(v0.state, 'running');
      await sleep(300);
      assert.ok((await a.client.getVm('cut1')).heartbeatBeats > v0.heartbeatBeats, 'the guest keeps running on the source');
      assert.equal((await a.client.verifyVm('cut1')).ok, true);
      await waitFor('the target to discard its copy', async () => (await b.client.nodeInfo()).memUsedBytes === 0);
    } finally {
      await grpcProxy.close();
      await bulkProxy.close();
    }
    const r = await a.client.migrateVm('cut1', b.address, { verify: true, transport: 'bulk' }, undefined, '', 'bulk-1');
    assert.equal(r.transport, 'bulk');
    assert.equal(r.verified, true);
    await runsOn('cut1', b, a);
  });
});

test('a bad --transport value is one usage line naming the flag (exit 2); over gRPC INVALID_ARGUMENT naming it', async () => {
  const bin = path.resolve(__dirname, '..', '..', '..', 'bin', 'drover');
  for (const args of [['migrate', 'v', '--from', '127.0.0.1:1', '--to', '127.0.0.1:2', '--insecure', '--transport', 'quic'], ['bench', '--transport', 'grpc,quic']]) {
    const r = spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8' });
    assert.equal(r.status, 2, r.stderr);
    const lines = r.stderr.trim().split('\n').filter((l) => !/--insecure/.test(l));
    assert.equal(lines.length, 1, r.stderr);
    assert.match(lines[0], /--transport "quic" is not a data transport \(expected auto, grpc, bulk\)/);
  }
  await withVm('bt1', async () => {
    const err = await codeOf(agents[0].client.migrateVm('bt1', agents[1].address, { transport: 'quic' as never }, undefined, '', 'bulk-1'));
    assert.equal(err.code, 'INVALID_ARGUMENT');
    assert.match(err.message, /policy\.transport must be one of auto, grpc, bulk, got "quic"/);
    assert.equal((await agents[0].client.getVm('bt1')).state, 'running');
  });
});
