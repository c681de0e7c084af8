/**
 * SIGHUP makes a TLS agent re-read its certificates: new connections get the new certificate,
 * a migration running meanwhile completes, and the reload is logged.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as tls from 'node:tls';
import { startAgents, stopAgents, waitFor, type TestAgent } from '../support/agents';
import { pkiFixture, type PkiFixture } from '../../lib/pki/pki-fixture';
import { issueIdentity } from '../../lib/pki/issue';
import type { TlsFiles } from '../../lib/pki/tls-files';

let pki: PkiFixture;
let client: TlsFiles;
let agents: TestAgent[] = [];

before(async () => {
  pki = await pkiFixture();
  client = await pki.identity({ role: 'admin', name: 'op' });
  agents = await startAgents(2, 'hup', [], { tls: { dir: pki.dir, client } });
});
after(async () => {
  await stopAgents(agents);
  pki.cleanup();
});

/** The serial number of the certificate the agent serves to a new connection (which negotiates TLS 1.3). */
function servedSerial(address: string): Promise<string> {
  const [host, port] = [address.replace(/:[0-9]+$/, ''), Number(address.split(':').pop())];
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host, port, ca: client.ca, cert: client.cert, key: client.key, ALPNProtocols: ['h2'], checkServerIdentity: () => undefined }, () => {
      const serial = s.getPeerCertificate().serialNumber;
      const protocol = s.getProtocol();
      s.destroy();
      if (protocol === 'TLSv1.3') resolve(serial);
      else reject(new Error(`agent negotiated ${protocol}, expected TLSv1.3`));
    });
    s.once('error', reject);
  });
}

test('SIGHUP reloads the certificates for new connections without dropping a running migration', async () => {
  const [a, b] = agents;
  const before = await servedSerial(a.address);
  await a.client.createVm({ name: 'h1', memBytes: 64 * 2 ** 20, vcpus: 1, profile: 'web' });
  const phases: string[] = [];
  const running = a.client.migrateVm('h1', b.address, { verify: true, bandwidthBytesPerSec: 16 * 2 ** 20 }, (e) => phases.push(e.phase), '', 'hup-1');
  await waitFor('the migration to copy pages', () => phases.includes('precopy'), 20_000, 20);
  const next = await issueIdentity(pki.dir, { role: 'node', name: 'hup-0', hosts: ['127.0.0.1'], force: true });
  a.proc.child.kill('SIGHUP');
  await waitFor('the reload log line', () => /certificates reloaded/.test(a.proc.stderrTail()), 15_000, 20);
  assert.ok(!phases.includes('done'), `reloaded while the migration ran (phases: ${[...new Set(phases)].join(', ')})`);
  const r = await running;
  assert.equal(r.outcome, 'succeeded');
  assert.equal(r.verified, true);
  const after = await servedSerial(a.address);
  assert.notEqual(after, before);
  assert.equal(after.toLowerCase().replace(/^0+/, ''), next.serial.toLowerCase().replace(/^0+/, ''));
  assert.equal((await a.client.listVms()).length, 0, 'the agent still answers with the new certificate');
  await b.client.destroyVm('h1');
});
