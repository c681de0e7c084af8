import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as tls from 'node:tls';
import type { AddressInfo } from 'node:net';
import { tlsClientOptions, tlsServerOptions } from './tls-options';
import { pkiFixture, type PkiFixture } from './pki-fixture';
import type { TlsFiles } from './tls-files';

let pki: PkiFixture;
let server: tls.Server;
let port: number;
let node: TlsFiles;
before(async () => {
  pki = await pkiFixture();
  node = await pki.identity({ role: 'node', name: 'a', hosts: ['127.0.0.1'] });
  server = tls.createServer(tlsServerOptions(node), (s) => s.end('hello'));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  port = (server.address() as AddressInfo).port;
});
after(() => { server.close(); pki.cleanup(); });

function connect(opts: tls.ConnectionOptions): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ ...opts, host: '127.0.0.1', port }, () => undefined);
    let data = '';
    s.on('data', (d) => { data += d; });
    s.on('end', () => resolve(data));
    s.on('error', reject);
  });
}

test('plain TLS: identity-checked and host-name-checked clients get through, TLS 1.3 negotiated', async () => {
  const mon = await pki.identity({ role: 'monitor', name: 'prom' });
  assert.equal(await connect(tlsClientOptions(mon, { role: 'node', name: 'a' })), 'hello');
  assert.equal(await connect(tlsClientOptions(mon)), 'hello', 'SAN IP 127.0.0.1 matches the host');
  assert.equal(tlsServerOptions(node).minVersion, 'TLSv1.3');
});

test('plain TLS: a wrong server identity is refused naming both; a client without a certificate is refused', async () => {
  const mon = await pki.identity({ role: 'monitor', name: 'prom2' });
  await assert.rejects(connect(tlsClientOptions(mon, { role: 'node', name: 'b' })), /spiffe:\/\/drover\/node\/a, expected node\/b/);
  await assert.rejects(connect({ ca: node.ca, checkServerIdentity: () => undefined }), /certificate required|socket hang up|ECONNRESET|alert/i);
});
