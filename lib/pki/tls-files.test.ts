import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { issueIdentity } from './issue';
import { CertificateReloader, loadTlsFiles, type TlsFilePaths } from './tls-files';
import { pkiFixture, type PkiFixture } from './pki-fixture';
import { DroverError } from '../errors';

let pki: PkiFixture;
let other: PkiFixture;
before(async () => { pki = await pkiFixture(); other = await pkiFixture(); });
after(() => { pki.cleanup(); other.cleanup(); });

const paths = (dir: string, name: string): TlsFilePaths => ({ ca: path.join(dir, 'ca.crt'), cert: path.join(dir, `${name}.crt`), key: path.join(dir, `${name}.key`) });

test('loadTlsFiles loads a good set and states its identity', async () => {
  await issueIdentity(pki.dir, { role: 'node', name: 'a' });
  const f = loadTlsFiles(paths(pki.dir, 'a'), { requireIdentity: true });
  assert.deepEqual(f.identity, { role: 'node', name: 'a' });
  assert.match(f.cert.toString(), /BEGIN CERTIFICATE/);
  assert.match(f.key.toString(), /BEGIN PRIVATE KEY/);
});

test('missing, non-PEM, mismatched, foreign-CA, expired and not-yet-valid files are refused naming the file', async () => {
  await issueIdentity(pki.dir, { role: 'node', name: 'b' });
  await issueIdentity(other.dir, { role: 'node', name: 'b' });
  await issueIdentity(pki.dir, { role: 'node', name: 'old', notBefore: new Date(Date.now() - 10 * 86_400_000), notAfter: new Date(Date.now() - 86_400_000) });
  await issueIdentity(pki.dir, { role: 'node', name: 'future', notBefore: new Date(Date.now() + 86_400_000), notAfter: new Date(Date.now() + 2 * 86_400_000) });
  const p = paths(pki.dir, 'b');
  const junk = path.join(pki.dir, 'junk.pem');
  fs.writeFileSync(junk, 'hello');
  const cases: [TlsFilePaths, string, RegExp][] = [
    [{ ...p, cert: path.join(pki.dir, 'nope.crt') }, 'NOT_FOUND', /certificate .*nope\.crt does not exist/],
    [{ ...p, ca: junk }, 'INVALID_ARGUMENT', /CA certificate .*junk\.pem is not PEM/],
    [{ ...p, key: junk }, 'INVALID_ARGUMENT', /private key .*junk\.pem is not PEM/],
    [{ ...p, key: path.join(pki.dir, 'a.key') }, 'INVALID_ARGUMENT', /private key .*a\.key is not the key of certificate .*b\.crt/],
    [{ ...p, ca: path.join(other.dir, 'ca.crt') }, 'FAILED_PRECONDITION', /certificate .*b\.crt .* is not issued by the CA in .*ca\.crt/],
    [paths(pki.dir, 'old'), 'FAILED_PRECONDITION', /certificate .*old\.crt expired at/],
    [paths(pki.dir, 'future'), 'FAILED_PRECONDITION', /certificate .*future\.crt is not valid before/],
    [{ ...p, cert: p.ca, key: path.join(pki.dir, 'ca.key') }, 'FAILED_PRECONDITION', /has no Drover identity/],
  ];
  for (const [files, code, re] of cases) {
    assert.throws(() => loadTlsFiles(files, { requireIdentity: true }), (e: DroverError) => e.code === code && re.test(e.message), `${JSON.stringify(files)} -> ${code} ${re}`);
  }
});

test('CertificateReloader keeps the last good set when the new files are bad, and tells its listeners of a good one', async () => {
  const first = await issueIdentity(pki.dir, { role: 'node', name: 'r' });
  const r = new CertificateReloader(paths(pki.dir, 'r'));
  const seen: string[] = [];
  r.addIdentityCertificateListener((u) => seen.push(u!.certificate.toString()));
  await Promise.resolve();
  assert.equal(seen.length, 1, 'a new listener gets the current set right away');
  const good = r.current();
  fs.writeFileSync(first.keyPath, 'broken');
  const bad = r.reload();
  assert.equal(bad.ok, false);
  assert.match(!bad.ok ? bad.error.message : '', /private key .*r\.key is not PEM/);
  assert.equal(r.current(), good, 'the last good set stays');
  assert.equal(seen.length, 1, 'listeners are not told of a bad set');
  await issueIdentity(pki.dir, { role: 'node', name: 'r', force: true });
  const ok = r.reload();
  assert.equal(ok.ok, true);
  assert.notEqual(r.current().cert.toString(), good.cert.toString());
  assert.equal(seen.length, 2);
  assert.equal(seen[1], r.current().cert.toString());
  assert.throws(() => new CertificateReloader(paths(pki.dir, 'missing')), /missing\.crt does not exist/);
});
