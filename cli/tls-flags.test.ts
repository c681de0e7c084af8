/** The TLS flags: certificates from flags or env, --insecure with its warning, and the refusals (exit 2 lines). */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { parse, UsageError } from './args';
import { TLS_OPTIONS, tlsFromFlags, tlsPaths } from './tls-flags';
import { pkiFixture, type PkiFixture } from '../lib/pki/pki-fixture';
import { CertificateReloader } from '../lib/pki/tls-files';

let pki: PkiFixture;
before(async () => {
  pki = await pkiFixture();
  await pki.identity({ role: 'admin', name: 'op' });
});
after(() => pki.cleanup());

const flags = (...argv: string[]) => parse(argv, TLS_OPTIONS, 'vm list');
const files = () => ['--ca', path.join(pki.dir, 'ca.crt'), '--cert', path.join(pki.dir, 'op.crt'), '--key', path.join(pki.dir, 'op.key')];

test('certificates from flags load with their identity; reloadable gives a CertificateReloader', () => {
  const c = tlsFromFlags(flags(...files()), 'vm list');
  assert.equal(c.mode, 'tls');
  assert.deepEqual(c.mode === 'tls' && !(c.source instanceof CertificateReloader) && c.source.identity, { role: 'admin', name: 'op' });
  const r = tlsFromFlags(flags(...files()), 'agent', { reloadable: true });
  assert.ok(r.mode === 'tls' && r.source instanceof CertificateReloader);
});

test('env fallbacks DROVER_CA, DROVER_CERT, DROVER_KEY; a partial set names what is missing', () => {
  const [, ca, , cert, , key] = files();
  assert.deepEqual(tlsPaths(flags(), 'vm list', { DROVER_CA: ca, DROVER_CERT: cert, DROVER_KEY: key }), { ca, cert, key });
  assert.throws(() => tlsPaths(flags('--ca', ca), 'vm list', {}), /vm list: --cert and --key missing/);
});

test('neither certificates nor --insecure: refused (one line), or plain text with the warning where allowed', () => {
  const warned: string[] = [];
  const saved = { ...process.env };
  for (const k of ['DROVER_CA', 'DROVER_CERT', 'DROVER_KEY']) delete process.env[k];
  try {
    assert.throws(() => tlsFromFlags(flags(), 'vm list'), (e) => e instanceof UsageError && /^vm list: no certificates: give --ca, --cert and --key .* or --insecure for plain text$/.test(e.message));
    assert.deepEqual(tlsFromFlags(flags(), 'agent', { whenMissing: 'insecure', warn: (l) => warned.push(l) }), { mode: 'insecure' });
    assert.deepEqual(tlsFromFlags(flags('--insecure'), 'vm list', { warn: (l) => warned.push(l) }), { mode: 'insecure' });
  } finally {
    Object.assign(process.env, saved);
  }
  assert.deepEqual(warned, ['drover: --insecure: agent runs in plain text, no authentication', 'drover: --insecure: vm list runs in plain text, no authentication']);
  assert.throws(() => tlsFromFlags(flags('--insecure', ...files()), 'vm list'), /--insecure and certificates .* exclude each other/);
});

test('a bad certificate file is a usage error naming the file', () => {
  const bad = ['--ca', path.join(pki.dir, 'ca.crt'), '--cert', path.join(pki.dir, 'nope.crt'), '--key', path.join(pki.dir, 'op.key')];
  assert.throws(() => tlsFromFlags(flags(...bad), 'vm list'), (e) => e instanceof UsageError && e.message.includes('nope.crt'));
});
