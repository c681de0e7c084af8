/**
 * A fixed bulk port (`drover agent --bulk-listen HOST:PORT`, for firewalled clusters): real
 * mutual-TLS agents; the target's bulk listener binds exactly that port and a migration's batches
 * reach it there. The source reaches the target's gRPC through 127.0.0.2 (as through a firewall's
 * forwarded ports), so it dials 127.0.0.2:PORT, where only a forward of that one port to the
 * target's 127.0.0.1:PORT listens: a migration over the bulk channel that verifies, with
 * connections through that forward, used the fixed port. A port in use, a malformed value and
 * the flag beside --bulk off are one line naming the flag, exit 2.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as net from 'node:net';
import * as path from 'node:path';
import { spawn } from 'node:child_process';
import { startAgents, stopAgents, sleep, withoutInsecureWarning, type TestAgent } from '../support/agents';
import { startTcpProxy } from '../support/tcp-proxy';
import { pkiFixture, type PkiFixture } from '../../lib/pki/pki-fixture';
import { freePort } from '../../lib/free-port';
import type { VmSpec } from '../../hypervisor/types';

const MiB = 2 ** 20;
const bin = path.resolve(__dirname, '..', '..', '..', 'bin', 'drover');

let pki: PkiFixture;
let source: TestAgent[] = [];
let target: TestAgent[] = [];
let bulkPort = 0;

before(async () => {
  pki = await pkiFixture();
  const client = await pki.identity({ role: 'controller', name: 'ctl' });
  bulkPort = await freePort();
  source = await startAgents(1, 'fixsrc', [], { tls: { dir: pki.dir, client } });
  target = await startAgents(1, 'fixdst', ['--bulk-listen', `127.0.0.1:${bulkPort}`], { tls: { dir: pki.dir, client } });
});
after(async () => {
  await stopAgents([...source, ...target]);
  pki.cleanup();
});

/** Runs `drover agent` with `args` until it exits; its exit code and stderr. */
function agentExit(args: string[]): Promise<{ status: number | null; stderr: string }> {
  const child = spawn(process.execPath, [bin, 'agent', '--listen', '127.0.0.1:0', '--node-id', 'badbulk', '--insecure', ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (b: Buffer) => { stderr += b.toString(); });
  return new Promise((resolve) => child.once('exit', (status) => resolve({ status, stderr })));
}

/** Asserts `drover agent` with `args` exits 2 with one line on stderr matching `re`. */
async function refused(args: string[], re: RegExp): Promise<void> {
  const r = await agentExit(args);
  assert.equal(r.status, 2, r.stderr);
  const lines = withoutInsecureWarning(r.stderr).trim().split('\n');
  assert.equal(lines.length, 1, r.stderr);
  assert.match(lines[0], re);
}

test('the bulk listener binds the --bulk-listen port and a migration over the bulk channel reaches it there', async () => {
  const [a] = source, [b] = target;
  assert.equal(b.proc.bulkAddress, `127.0.0.1:${bulkPort}`, 'the target announces the fixed port');
  const grpcForward = await startTcpProxy(b.address, { listenHost: '127.0.0.2' });
  const bulkForward = await startTcpProxy(`127.0.0.1:${bulkPort}`, { listenHost: '127.0.0.2', listenPort: bulkPort });
  const spec: VmSpec = { name: 'fixed1', memBytes: 96 * MiB, vcpus: 1, profile: 'web', fillBytes: 48 * MiB, seed: 11 };
  await a.client.createVm(spec);
  try {
    const r = await a.client.migrateVm('fixed1', grpcForward.address, { verify: true, transport: 'bulk', streams: 2 }, undefined, '', 'fixdst-0');
    assert.equal(r.transport, 'bulk');
    assert.equal(r.verified, true);
    assert.equal(bulkForward.stats.connections, 2, 'both bulk sockets were dialled at the fixed port');
    const v = await b.client.getVm('fixed1');
    await sleep(200);
    const check = await b.client.verifyVm('fixed1');
    assert.equal(check.ok, true, check.detail);
    assert.ok(check.heartbeatBeats > v.heartbeatBeats, 'the guest runs on the target');
  } finally {
    await grpcForward.close();
    await bulkForward.close();
    for (const x of [a, b]) await x.client.destroyVm('fixed1').catch(() => undefined);
  }
});

test('a --bulk-listen port in use is one line naming the flag, exit 2', async () => {
  const holder = net.createServer();
  await new Promise<void>((r) => holder.listen(0, '127.0.0.1', () => r()));
  const port = (holder.address() as net.AddressInfo).port;
  try {
    await refused(['--bulk-listen', `127.0.0.1:${port}`], new RegExp(`^drover: --bulk-listen "127\\.0\\.0\\.1:${port}": cannot listen \\(.*EADDRINUSE.*\\)$`));
  } finally {
    holder.close();
  }
});

test('a malformed --bulk-listen, and --bulk-listen with --bulk off, are one line naming the flag, exit 2', async () => {
  await refused(['--bulk-listen', 'nope'], /^drover: --bulk-listen "nope" is not HOST:PORT$/);
  await refused(['--bulk-listen', '127.0.0.1:70000'], /^drover: --bulk-listen "127\.0\.0\.1:70000" is not HOST:PORT$/);
  await refused(['--bulk', 'off', '--bulk-listen', '127.0.0.1:7443'], /^drover: --bulk-listen cannot be used with --bulk off/);
});
