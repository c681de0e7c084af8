import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { issueIdentity, hostSan } from './issue';
import { describeCertificate } from './describe';
import { identityOf } from './identity';
import { pkiFixture, type PkiFixture } from './pki-fixture';
import { DroverError } from '../errors';

let pki: PkiFixture;
before(async () => { pki = await pkiFixture(); });
after(() => pki.cleanup());

test('issueIdentity writes NAME.crt/NAME.key by the profile: spiffe URI, CN role.name, host SANs, both EKUs', async () => {
  const id = await issueIdentity(pki.dir, { role: 'node', name: 'node-1', hosts: ['10.0.0.5', '::1', '[fe80::1]', 'Node-1.Example.com'], days: 10 });
  assert.equal(id.certPath, path.join(pki.dir, 'node-1.crt'));
  assert.equal(fs.statSync(id.keyPath).mode & 0o777, 0o600);
  const pem = fs.readFileSync(id.certPath, 'utf8');
  const s = describeCertificate(pem, id.certPath);
  assert.equal(s.subject, 'CN=node.node-1, O=drover, OU=node');
  assert.equal(s.issuer, 'CN=drover-ca, O=drover');
  assert.deepEqual(s.sans, [
    { type: 'uri', value: 'spiffe://drover/node/node-1' }, { type: 'ip', value: '10.0.0.5' }, { type: 'ip', value: '::1' },
    { type: 'ip', value: 'fe80::1' }, { type: 'dns', value: 'node-1.example.com' },
  ]);
  assert.deepEqual(s.identity, { role: 'node', name: 'node-1' });
  assert.deepEqual(s.extKeyUsage, ['serverAuth', 'clientAuth']);
  assert.equal(s.keyType, 'ec prime256v1');
  assert.equal(s.ca, false);
  assert.equal(s.serial, id.serial);
  const cert = new X509Certificate(pem);
  assert.ok(cert.checkIssued(new X509Certificate(fs.readFileSync(path.join(pki.dir, 'ca.crt')))));
  assert.ok(cert.checkIP('10.0.0.5') && cert.checkHost('node-1.example.com'));
  const days = (new Date(cert.validTo).getTime() - Date.now()) / 86_400_000;
  assert.ok(days > 9.9 && days < 10.1, `validity ${days}`);
});

test('openssl accepts the certificates for TLS client and server use (strict X.509 checks)', async () => {
  const id = await issueIdentity(pki.dir, { role: 'controller', name: 'migrator-0' });
  for (const purpose of ['sslclient', 'sslserver']) {
    const r = spawnSync('openssl', ['verify', '-x509_strict', '-purpose', purpose, '-CAfile', path.join(pki.dir, 'ca.crt'), id.certPath], { encoding: 'utf8' });
    assert.equal(r.status, 0, `${purpose}: ${r.stdout}${r.stderr}`);
  }
});

test('serials are random and re-issuing needs force', async () => {
  const a = await issueIdentity(pki.dir, { role: 'monitor', name: 'grafana' });
  await assert.rejects(issueIdentity(pki.dir, { role: 'monitor', name: 'grafana' }), (e: DroverError) => e.code === 'ALREADY_EXISTS' && /grafana\.crt already exists/.test(e.message));
  const b = await issueIdentity(pki.dir, { role: 'monitor', name: 'grafana', force: true });
  assert.notEqual(a.serial, b.serial);
  assert.deepEqual(identityOf(fs.readFileSync(b.certPath, 'utf8')), { role: 'monitor', name: 'grafana' });
});

test('bad role, name, host and validity are INVALID_ARGUMENT naming the value', async () => {
  const cases: [Parameters<typeof issueIdentity>[1], RegExp][] = [
    [{ role: 'root', name: 'x' }, /role "root" is not one of admin, controller, node, monitor/],
    [{ role: 'node', name: 'Node_1' }, /name "Node_1" must match/],
    [{ role: 'node', name: '-a' }, /name "-a" must match/],
    [{ role: 'node', name: 'a'.repeat(64) }, /must match/],
    [{ role: 'node', name: 'ca' }, /name "ca" is reserved/],
    [{ role: 'node', name: 'h', hosts: ['bad host'] }, /host "bad host" is not an IPv4 address, an IPv6 address or a DNS name/],
    [{ role: 'node', name: 'h', hosts: ['1.2.3.256'] }, /host "1\.2\.3\.256"/],
    [{ role: 'node', name: 'h', days: 0 }, /validity of 0 days/],
    [{ role: 'node', name: 'h', notBefore: new Date(2000, 1), notAfter: new Date(1999, 1) }, /is not after notBefore/],
  ];
  for (const [opts, re] of cases) {
    await assert.rejects(issueIdentity(pki.dir, opts), (e: DroverError) => e.code === 'INVALID_ARGUMENT' && re.test(e.message), JSON.stringify(opts));
  }
  assert.ok(!fs.existsSync(path.join(pki.dir, 'h.crt')), 'nothing written for a bad request');
  assert.deepEqual(hostSan('LOCALHOST'), { type: 'dns', value: 'localhost' });
  assert.deepEqual(hostSan('*.nodes.internal'), { type: 'dns', value: '*.nodes.internal' });
});

test('issuing without a CA names the missing CA file', async () => {
  const empty = fs.mkdtempSync(path.join(pki.dir, 'empty-'));
  await assert.rejects(issueIdentity(empty, { role: 'admin', name: 'alice' }), (e: DroverError) => e.code === 'NOT_FOUND' && e.message.includes(path.join(empty, 'ca.crt')));
});
