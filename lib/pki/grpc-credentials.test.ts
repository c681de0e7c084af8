/**
 * Mutual TLS over loopback with real certificates: a grpc-js server with serverCredentials and
 * the authorization interceptor (health service + two NodeAgent paths), and clients with good,
 * wrong-role, missing, foreign and expired certificates, and a client expecting another node.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { HealthImplementation, service as healthService } from 'grpc-health-check';
import { clientCredentials, peerIdentity, serverCredentials, serverIdentityCheck, type TlsSource } from './grpc-credentials';
import { authzInterceptor, type RefusalEvent } from './grpc-authz-interceptor';
import { CertificateReloader, type TlsFiles } from './tls-files';
import { issueIdentity } from './issue';
import { pkiFixture, type PkiFixture } from './pki-fixture';
import type { ExpectedIdentity } from './identity';

const raw = (p: string): grpc.MethodDefinition<Buffer, Buffer> => ({
  path: p, requestStream: false, responseStream: false,
  requestSerialize: (b) => b, requestDeserialize: (b) => b, responseSerialize: (b) => b, responseDeserialize: (b) => b,
});
const AGENT = { ListVms: raw('/drover.v1.NodeAgent/ListVms'), DestroyVm: raw('/drover.v1.NodeAgent/DestroyVm') };
const AgentClient = grpc.makeGenericClientConstructor(AGENT, 'NodeAgent');
const HealthClient = grpc.makeGenericClientConstructor(healthService as unknown as grpc.ServiceDefinition, 'Health');

let pki: PkiFixture;
let foreign: PkiFixture;
let nodeA: TlsFiles;
const refusals: RefusalEvent[] = [];
const servers: grpc.Server[] = [];

async function startServer(creds: grpc.ServerCredentials): Promise<string> {
  const server = new grpc.Server({ interceptors: [authzInterceptor({ onRefusal: (e) => refusals.push(e) })] });
  new HealthImplementation({ '': 'SERVING' }).addToServer(server);
  const echo: grpc.handleUnaryCall<Buffer, Buffer> = (call, cb) => cb(null, Buffer.from(JSON.stringify(peerIdentity(call) ?? null)));
  server.addService(AGENT, { ListVms: echo, DestroyVm: echo });
  const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', creds, (e, p) => (e ? reject(e) : resolve(p))));
  servers.push(server);
  return `127.0.0.1:${port}`;
}

let addr: string;
before(async () => {
  pki = await pkiFixture();
  foreign = await pkiFixture();
  nodeA = await pki.identity({ role: 'node', name: 'a', hosts: ['127.0.0.1'] });
  addr = await startServer(serverCredentials(nodeA));
});
after(() => {
  for (const s of servers) s.forceShutdown();
  pki.cleanup();
  foreign.cleanup();
});

type Outcome = { ok: true; value: unknown } | { ok: false; code: number; details: string };

function call(target: string, creds: grpc.ChannelCredentials, method: 'ListVms' | 'DestroyVm' | 'Check'): Promise<Outcome> {
  const client = method === 'Check' ? new HealthClient(target, creds) : new AgentClient(target, creds);
  const deadline = Date.now() + 10_000;
  const arg = method === 'Check' ? {} : Buffer.alloc(0);
  return new Promise((resolve) => {
    (client as unknown as Record<string, (a: unknown, o: object, cb: (e: grpc.ServiceError | null, v?: unknown) => void) => void>)[method](arg, { deadline }, (err, v) => {
      client.close();
      if (err) resolve({ ok: false, code: err.code, details: err.details });
      else resolve({ ok: true, value: Buffer.isBuffer(v) ? JSON.parse(v.toString()) : v });
    });
  });
}

const creds = (files: TlsSource, expect: ExpectedIdentity = { role: 'node', name: 'a' }) => clientCredentials(files, expect);

test('a controller calls an allowed method; the handler sees its identity', async () => {
  const ctl = await pki.identity({ role: 'controller', name: 'migrator-0' });
  assert.deepEqual(await call(addr, creds(ctl), 'ListVms'), { ok: true, value: { role: 'controller', name: 'migrator-0' } });
  assert.deepEqual(await call(addr, creds(ctl), 'DestroyVm'), { ok: true, value: { role: 'controller', name: 'migrator-0' } });
});

test('a monitor may read and check health, but DestroyVm is PERMISSION_DENIED naming role and method, and the refusal is reported', async () => {
  const mon = await pki.identity({ role: 'monitor', name: 'grafana' });
  assert.equal((await call(addr, creds(mon), 'ListVms')).ok, true);
  assert.deepEqual(await call(addr, creds(mon), 'Check'), { ok: true, value: { status: 'SERVING' } });
  const before = refusals.length;
  const r = await call(addr, creds(mon), 'DestroyVm');
  assert.equal(!r.ok && r.code, grpc.status.PERMISSION_DENIED);
  assert.match(!r.ok ? r.details : '', /^role monitor may not call drover\.v1\.NodeAgent\/DestroyVm/);
  assert.equal(refusals.length, before + 1);
  const ev = refusals[refusals.length - 1];
  assert.deepEqual([ev.method, ev.code, ev.identity], ['drover.v1.NodeAgent/DestroyVm', 'PERMISSION_DENIED', { role: 'monitor', name: 'grafana' }]);
  assert.match(ev.peer, /127\.0\.0\.1/);
});

test('a client without a certificate is refused in the TLS handshake (UNAVAILABLE), no handler runs', async () => {
  const before = refusals.length;
  const r = await call(addr, grpc.credentials.createSsl(nodeA.ca, null, null, { checkServerIdentity: serverIdentityCheck({ role: 'node' }) }), 'ListVms');
  assert.equal(!r.ok && r.code, grpc.status.UNAVAILABLE, JSON.stringify(r));
  assert.equal(refusals.length, before, 'refused before any call reached the interceptor');
});

test('a certificate from another CA, and an expired certificate, are refused in the handshake', async () => {
  const alien = await foreign.identity({ role: 'admin', name: 'mallory' });
  const alienCreds = clientCredentials({ ...alien, ca: nodeA.ca }, { role: 'node', name: 'a' });
  const r1 = await call(addr, alienCreds, 'ListVms');
  assert.equal(!r1.ok && r1.code, grpc.status.UNAVAILABLE, JSON.stringify(r1));
  await issueIdentity(pki.dir, { role: 'admin', name: 'old', notBefore: new Date(Date.now() - 10 * 86_400_000), notAfter: new Date(Date.now() - 86_400_000) });
  const old = { ...nodeA, cert: fs.readFileSync(path.join(pki.dir, 'old.crt')), key: fs.readFileSync(path.join(pki.dir, 'old.key')) };
  const r2 = await call(addr, creds(old), 'ListVms');
  assert.equal(!r2.ok && r2.code, grpc.status.UNAVAILABLE, JSON.stringify(r2));
});

test('a client expecting node b refuses a server with node a\'s certificate, naming both', async () => {
  const ctl = await pki.identity({ role: 'controller', name: 'c' });
  const r = await call(addr, creds(ctl, { role: 'node', name: 'b' }), 'ListVms');
  assert.equal(!r.ok && r.code, grpc.status.UNAVAILABLE);
  assert.match(!r.ok ? r.details : '', /spiffe:\/\/drover\/node\/a, expected node\/b/);
  const wrongRole = await call(addr, creds(ctl, { role: 'controller' }), 'ListVms');
  assert.match(!wrongRole.ok ? wrongRole.details : '', /spiffe:\/\/drover\/node\/a, expected controller\/\*/);
});

test('a server that does not trust the client CA: the client refuses a server from another CA too', async () => {
  const alienServer = await foreign.identity({ role: 'node', name: 'a', hosts: ['127.0.0.1'] });
  const target = await startServer(serverCredentials(alienServer));
  const ctl = await pki.identity({ role: 'controller', name: 'c2' });
  const r = await call(target, creds(ctl), 'ListVms');
  assert.equal(!r.ok && r.code, grpc.status.UNAVAILABLE);
});

test('without TLS the interceptor answers UNAUTHENTICATED', async () => {
  const target = await startServer(grpc.ServerCredentials.createInsecure());
  const before = refusals.length;
  const r = await call(target, grpc.credentials.createInsecure(), 'ListVms');
  assert.equal(!r.ok && r.code, grpc.status.UNAUTHENTICATED);
  assert.match(!r.ok ? r.details : '', /drover\.v1\.NodeAgent\/ListVms needs a client certificate/);
  assert.equal(refusals[before]?.code, 'UNAUTHENTICATED');
});

test('a server on a CertificateReloader serves new certificates to new connections after reload()', async () => {
  await issueIdentity(pki.dir, { role: 'node', name: 'hot', hosts: ['127.0.0.1'] });
  const reloader = new CertificateReloader({ ca: path.join(pki.dir, 'ca.crt'), cert: path.join(pki.dir, 'hot.crt'), key: path.join(pki.dir, 'hot.key') });
  const target = await startServer(serverCredentials(reloader));
  await issueIdentity(pki.dir, { role: 'controller', name: 'hot-client' });
  const ctl = new CertificateReloader({ ca: path.join(pki.dir, 'ca.crt'), cert: path.join(pki.dir, 'hot-client.crt'), key: path.join(pki.dir, 'hot-client.key') });
  const first = await call(target, creds(ctl, { role: 'node', name: 'hot' }), 'ListVms');
  assert.equal(first.ok, true, JSON.stringify(first));
  const next = await issueIdentity(pki.dir, { role: 'node', name: 'hot2', hosts: ['127.0.0.1'] });
  fs.copyFileSync(next.certPath, path.join(pki.dir, 'hot.crt'));
  fs.copyFileSync(next.keyPath, path.join(pki.dir, 'hot.key'));
  assert.equal(reloader.reload().ok, true);
  const second = await call(target, creds(ctl, { role: 'node', name: 'hot2' }), 'ListVms');
  assert.equal(second.ok, true, JSON.stringify(second));
});
