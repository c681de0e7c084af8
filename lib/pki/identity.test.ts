import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { X509Certificate } from 'node:crypto';
import { checkIdentity, identityOf, parseSpiffeId, spiffeId, commonNameOf } from './identity';
import { pkiFixture, type PkiFixture } from './pki-fixture';
import { x509 } from './x509-lib';
import { generateKeyPair, keyAlgorithm } from './keys';

let pki: PkiFixture;
before(async () => { pki = await pkiFixture(); });
after(() => pki.cleanup());

test('spiffe ids: format and strict parsing', () => {
  assert.equal(spiffeId({ role: 'node', name: 'a' }), 'spiffe://drover/node/a');
  assert.equal(commonNameOf({ role: 'admin', name: 'alice' }), 'admin.alice');
  assert.deepEqual(parseSpiffeId('spiffe://drover/controller/migrator-0'), { role: 'controller', name: 'migrator-0' });
  for (const bad of ['spiffe://other/node/a', 'spiffe://drover/root/a', 'spiffe://drover/node/A', 'spiffe://drover/node/a/b', 'spiffe://drover/node/', 'https://drover/node/a']) {
    assert.equal(parseSpiffeId(bad), undefined, bad);
  }
});

test('identityOf reads PEM, DER, X509Certificate and peer-certificate forms alike', async () => {
  const files = await pki.identity({ role: 'controller', name: 'sched' });
  const pem = files.cert.toString();
  const cert = new X509Certificate(pem);
  const want = { role: 'controller', name: 'sched' };
  assert.deepEqual(identityOf(pem), want);
  assert.deepEqual(identityOf(cert), want);
  assert.deepEqual(identityOf(cert.raw), want);
  assert.deepEqual(identityOf({ raw: cert.raw } as never), want);
  assert.equal(identityOf(undefined), undefined);
  assert.equal(identityOf('not a certificate'), undefined);
  assert.equal(identityOf(fs.readFileSync(`${pki.dir}/ca.crt`, 'utf8')), undefined, 'the CA has no identity');
});

async function certWithUris(uris: string[]): Promise<string> {
  const keys = await generateKeyPair('ecdsa-p256');
  const c = await x509.X509CertificateGenerator.createSelfSigned({
    name: 'CN=x', keys, signingAlgorithm: keyAlgorithm('ecdsa-p256'),
    extensions: [new x509.SubjectAlternativeNameExtension(uris.map((value) => ({ type: 'url' as const, value })))],
  });
  return c.toString('pem');
}

test('zero or two Drover URIs mean no identity; other URIs are ignored', async () => {
  assert.equal(identityOf(await certWithUris([])), undefined);
  assert.equal(identityOf(await certWithUris(['spiffe://drover/node/a', 'spiffe://drover/admin/a'])), undefined);
  assert.equal(identityOf(await certWithUris(['spiffe://drover/node/a', 'spiffe://evil/admin/a'])), undefined, 'a foreign spiffe id makes it ambiguous');
  assert.deepEqual(identityOf(await certWithUris(['https://example.com/x', 'spiffe://drover/node/a'])), { role: 'node', name: 'a' });
});

test('checkIdentity names what it found and what it expected', async () => {
  const a = (await pki.identity({ role: 'node', name: 'a' })).cert.toString();
  assert.equal(checkIdentity(a, { role: 'node', name: 'a' }), undefined);
  assert.equal(checkIdentity(a, { role: 'node' }), undefined);
  assert.equal(checkIdentity(a, {}), undefined);
  assert.match(checkIdentity(a, { role: 'node', name: 'b' })!.message, /is spiffe:\/\/drover\/node\/a, expected node\/b/);
  assert.match(checkIdentity(a, { role: 'admin' })!.message, /expected admin\/\*/);
  assert.match(checkIdentity(await certWithUris([]), { role: 'node' })!.message, /has no Drover identity \(expected node\/\*\)/);
});
