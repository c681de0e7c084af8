/**
 * A real TLS agent (a `drover agent` process, certificates from a throw-away CA) against every
 * method of lib/pki/authz.ts's table × every caller: admin, controller, node, monitor, no
 * certificate, another CA's certificate, an expired certificate. Then the reservation rules of
 * the data plane (source identity, AbortIncoming's token) and the refusal counter.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as https from 'node:https';
import * as net from 'node:net';
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { startAgents, stopAgents, waitFor, codeOf, type TestAgent } from '../support/agents';
import { pkiFixture, type PkiFixture } from '../../lib/pki/pki-fixture';
import { issueIdentity } from '../../lib/pki/issue';
import { clientCredentials, serverIdentityCheck } from '../../lib/pki/grpc-credentials';
import { AUTHZ_TABLE } from '../../lib/pki/authz';
import { ROLES, type Role } from '../../lib/pki/identity';
import type { TlsFiles } from '../../lib/pki/tls-files';
import { ReceiverClientConn } from '../../migration/transport/receiver-client';
import { frames } from '../../migration/wire/protocol';
import type { DroverError } from '../../lib/errors';
import type { VmSpec } from '../../hypervisor/types';

let pki: PkiFixture;
let foreign: PkiFixture;
let agents: TestAgent[] = [];
let metricsAddr = '';
const ids = {} as Record<Role, TlsFiles>;
const NODE = 'authz-0';

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

before(async () => {
  pki = await pkiFixture();
  foreign = await pkiFixture();
  for (const role of ROLES) ids[role] = await pki.identity({ role, name: `${role}-x` });
  metricsAddr = `127.0.0.1:${await freePort()}`;
  agents = await startAgents(1, 'authz', ['--metrics-listen', metricsAddr], { tls: { dir: pki.dir, client: ids.admin } });
});
after(async () => {
  await stopAgents(agents);
  pki.cleanup();
  foreign.cleanup();
});

/** A protobuf string field (wire type 2). */
function stringField(field: number, value: string): Buffer {
  const v = Buffer.from(value);
  return Buffer.concat([Buffer.from([(field << 3) | 2, v.length]), v]);
}

/** A request that passes the method's own source check for `caller` (PrepareIncoming names it as source_node). */
function bodyFor(method: string, caller: string): Buffer {
  return method.endsWith('/PrepareIncoming') ? stringField(3, caller) : Buffer.alloc(0);
}

/** Calls `method` with raw bytes; resolves with the first answer (OK on a response message) or the status. */
function rawCall(creds: grpc.ChannelCredentials, method: string, body: Buffer): Promise<{ code: number; details: string }> {
  const client = new grpc.Client(agents[0].address, creds);
  return new Promise((resolve) => {
    const call = client.makeBidiStreamRequest(`/${method}`, (b: Buffer) => b, (b: Buffer) => b, new grpc.Metadata(), { deadline: Date.now() + 10_000 });
    let settled = false;
    const done = (code: number, details: string) => {
      if (settled) return;
      settled = true;
      call.cancel();
      client.close();
      resolve({ code, details });
    };
    call.on('data', () => done(grpc.status.OK, 'a response'));
    call.on('status', (s: grpc.StatusObject) => done(s.code, s.details));
    call.on('error', () => { /* the status follows */ });
    call.write(body);
    call.end();
  });
}

const expectAgent = { role: 'node' as const, name: NODE };
const REFUSED = new Set([grpc.status.UNAUTHENTICATED, grpc.status.PERMISSION_DENIED, grpc.status.UNAVAILABLE]);

test('every method of the authorization table × every role: allowed roles get past authorization, the others PERMISSION_DENIED naming role and method', async () => {
  const methods = Object.keys(AUTHZ_TABLE);
  assert.ok(methods.length >= 15);
  for (const method of methods) {
    for (const role of ROLES) {
      const r = await rawCall(clientCredentials(ids[role], expectAgent), method, bodyFor(method, `${role}-x`));
      const what = `${role} → ${method}: ${grpc.status[r.code]} ${r.details}`;
      if (AUTHZ_TABLE[method].roles.includes(role)) {
        assert.ok(!REFUSED.has(r.code), what);
      } else {
        assert.equal(r.code, grpc.status.PERMISSION_DENIED, what);
        assert.match(r.details, new RegExp(`^role ${role} may not call ${method.replace(/[./]/g, '\\$&')}`), what);
      }
    }
  }
});

test('no client certificate, another CA\'s certificate and an expired certificate are refused in the handshake for every method', async () => {
  const alien = await foreign.identity({ role: 'admin', name: 'mallory' });
  await issueIdentity(pki.dir, { role: 'admin', name: 'old', notBefore: new Date(Date.now() - 10 * 86_400_000), notAfter: new Date(Date.now() - 86_400_000) });
  const expired = { ...ids.admin, cert: fs.readFileSync(path.join(pki.dir, 'old.crt')), key: fs.readFileSync(path.join(pki.dir, 'old.key')) };
  const callers: [string, grpc.ChannelCredentials][] = [
    ['no certificate', grpc.credentials.createSsl(ids.admin.ca, null, null, { checkServerIdentity: serverIdentityCheck(expectAgent) })],
    ['another CA', clientCredentials({ ...alien, ca: ids.admin.ca }, expectAgent)],
    ['expired', clientCredentials(expired, expectAgent)],
    ['plain text', grpc.credentials.createInsecure()],
  ];
  for (const method of Object.keys(AUTHZ_TABLE)) {
    for (const [who, creds] of callers) {
      const r = await rawCall(creds, method, Buffer.alloc(0));
      assert.ok(r.code === grpc.status.UNAVAILABLE || r.code === grpc.status.UNAUTHENTICATED, `${who} → ${method}: ${grpc.status[r.code]} ${r.details}`);
    }
  }
});

const spec = (name: string): VmSpec => ({ name, memBytes: 16 * 2 ** 20, vcpus: 1, profile: 'idle' });

/** A data-plane client presenting node `name`'s certificate. */
async function nodeConn(name: string): Promise<ReceiverClientConn> {
  const files = await pki.identity({ role: 'node', name });
  return new ReceiverClientConn(agents[0].address, clientCredentials(files, expectAgent));
}

async function released(): Promise<void> {
  await waitFor('the target to release its reservation', async () => (await agents[0].client.nodeInfo()).memUsedBytes === 0);
}

test('PrepareIncoming naming another source node is PERMISSION_DENIED naming both', async () => {
  const a = await nodeConn('src-a');
  const e = await codeOf(a.prepare(spec('p1'), 'src-b', ''));
  assert.equal(e.code, 'PERMISSION_DENIED');
  assert.match(e.message, /node src-a may not call drover\.v1\.MigrationReceiver\/PrepareIncoming: the source is node src-b/);
  assert.equal((await agents[0].client.nodeInfo()).memUsedBytes, 0, 'nothing reserved');
  a.close();
});

test('AbortIncoming with a wrong or empty token, or from another node, is refused and the reservation stays; a Start from another node is refused', async () => {
  const a = await nodeConn('src-c');
  const b = await nodeConn('src-d');
  const r = await a.prepare(spec('p2'), 'src-c', '');
  const reserved = (await agents[0].client.nodeInfo()).memUsedBytes;
  assert.ok(reserved > 0);
  for (const token of ['', 'not-the-token']) {
    const e = await codeOf(a.release(r.migrationId, token));
    assert.equal(e.code, 'PERMISSION_DENIED', token);
    assert.match(e.message, new RegExp(`${token ? 'wrong' : 'empty'} token for migration ${r.migrationId}`));
  }
  const other = await codeOf(b.release(r.migrationId, r.token));
  assert.equal(other.code, 'PERMISSION_DENIED');
  assert.match(other.message, /node src-d may not call drover\.v1\.MigrationReceiver\/AbortIncoming for migration .*: the source is node src-c/);
  const start = await new Promise<DroverError>((resolve) => {
    const ch = b.open(10_000);
    ch.onAck(() => undefined, resolve);
    ch.write(frames.start(r.migrationId, r.token, 4096, (16 * 2 ** 20) / 4096));
  });
  assert.equal(start.code, 'PERMISSION_DENIED');
  assert.match(start.message, /node src-d may not call drover\.v1\.MigrationReceiver\/Transfer/);
  assert.equal((await agents[0].client.nodeInfo()).memUsedBytes, reserved, 'the reservation stays');
  await a.release(r.migrationId, r.token);
  await released();
  a.close();
  b.close();
});

/** GET https://metricsAddr/metrics as `id` (a TLS agent serves /metrics over HTTPS, monitor/admin only). */
function scrape(id: TlsFiles): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = https.get({ host: '127.0.0.1', port: Number(metricsAddr.split(':')[1]), path: '/metrics', ca: id.ca, cert: id.cert, key: id.key }, (res) => {
      let body = '';
      res.on('data', (d) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
  });
}

test('refusals are counted in drover_authz_refusals_total{method,code,role}', async () => {
  assert.equal((await scrape(ids.node)).status, 403, 'a node identity may not read metrics');
  const text = (await scrape(ids.monitor)).body;
  const line = (method: string, code: string, role: string) => text.split('\n').find((l) => l.startsWith('drover_authz_refusals_total{')
    && l.includes(`method="${method}"`) && l.includes(`code="${code}"`) && l.includes(`role="${role}"`));
  const destroy = line('drover.v1.NodeAgent/DestroyVm', 'PERMISSION_DENIED', 'monitor');
  assert.ok(destroy && Number(destroy.split(' ').pop()) >= 1, text.split('\n').filter((l) => l.includes('authz')).join('\n'));
  assert.ok(line('drover.v1.NodeAgent/CreateVm', 'PERMISSION_DENIED', 'node'));
  assert.ok(line('drover.v1.MigrationReceiver/AbortIncoming', 'PERMISSION_DENIED', 'node'), 'in-handler refusals are counted too');
});
