import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { X509Certificate } from 'node:crypto';
import { initCa, loadCa } from './ca';
import { DroverError } from '../errors';

const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), 'drover-ca-'));

test('initCa writes a self-signed P-256 CA, the key 0600; loadCa reads it back', async () => {
  const dir = tmp();
  try {
    const ca = await initCa(dir, { days: 30, commonName: 'test-ca' });
    assert.equal(fs.statSync(ca.keyPath).mode & 0o777, 0o600);
    const cert = new X509Certificate(fs.readFileSync(ca.certPath));
    assert.equal(cert.ca, true);
    assert.match(cert.subject, /CN=test-ca/);
    assert.equal(cert.publicKey.asymmetricKeyDetails?.namedCurve, 'prime256v1');
    assert.ok(cert.verify(cert.publicKey), 'self-signed');
    const days = (new Date(cert.validTo).getTime() - Date.now()) / 86_400_000;
    assert.ok(days > 29.9 && days < 30.1, `validity ${days} days`);
    const loaded = await loadCa(dir);
    assert.equal(loaded.keyType, 'ecdsa-p256');
    assert.equal(loaded.cert.fingerprint256, cert.fingerprint256);
  } finally { fs.rmSync(dir, { recursive: true, force: true }); }
});

test('initCa refuses to overwrite an existing CA unless force', async () => {
  const dir = tmp();
  try {
    const first = await initCa(dir);
    const before = fs.readFileSync(first.certPath, 'utf8');
    await assert.rejects(initCa(dir), (e: DroverError) => e.code === 'ALREADY_EXISTS' && /ca\.crt already exists .*--force/.test(e.message));
    assert.equal(fs.readFileSync(first.certPath, 'utf8'), before, 'untouched');
    fs.rmSync(first.certPath);
    await assert.rejects(initCa(dir), /ca\.key already exists/, 'a lone key is not overwritten either');
    await initCa(dir, { force: true });
    assert.notEqual(fs.readFileSync(first.certPath, 'utf8'), before);
    assert.equal(fs.statSync(first.keyPath).mode & 0o777, 0o600);
  } finally { fs.rmSync(dir, { recursive: true, force: true }); }
});

test('an Ed25519 CA works; bad options and missing or mismatched files are named', async () => {
  const dir = tmp();
  const other = tmp();
  try {
    await initCa(dir, { keyType: 'ed25519' });
    assert.equal((await loadCa(dir)).keyType, 'ed25519');
    await assert.rejects(initCa(other, { days: 0 }), /validity of 0 days/);
    await assert.rejects(initCa(other, { commonName: 'bad/cn' }), /CA common name "bad\/cn"/);
    await assert.rejects(loadCa(other), (e: DroverError) => e.code === 'NOT_FOUND' && e.message.includes(path.join(other, 'ca.crt')));
    await initCa(other);
    fs.copyFileSync(path.join(dir, 'ca.key'), path.join(other, 'ca.key'));
    await assert.rejects(loadCa(other), /CA key .*ca\.key is not the key of .*ca\.crt/);
    fs.writeFileSync(path.join(other, 'ca.key'), 'garbage');
    await assert.rejects(loadCa(other), /CA key .*ca\.key is not PEM/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
    fs.rmSync(other, { recursive: true, force: true });
  }
});
