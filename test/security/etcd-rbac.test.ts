/**
 * etcd with TLS, client-certificate auth and Drover's RBAC (cluster/etcd-rbac.ts), against the real
 * etcd binary: the identities `drover up` issues (services/local-pki.ts), each connecting with its
 * own certificate, so etcd takes the user from the CN. A node writes only its own keys; VM records
 * and jobs are the controllers'; a monitor reads; no certificate, or one of another CA, gets nothing.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Etcd3 } from 'etcd3';
import { startLocalEtcd, type LocalEtcd } from '../../cluster/local-etcd';
import { connectEtcd } from '../../cluster/etcd';
import { enableRbac } from '../../cluster/etcd-rbac';
import { keys } from '../../cluster/keyspace';
import { ensureLocalPki, type LocalPki } from '../../services/local-pki';
import type { TlsFilePaths } from '../../lib/pki/tls-files';

let dir: string;
let pki: LocalPki;
let etcd: LocalEtcd;
const clients: Etcd3[] = [];

before(async () => {
  for (const k of ['DROVER_CA', 'DROVER_CERT', 'DROVER_KEY']) delete process.env[k];
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'drover-rbac-'));
  pki = await ensureLocalPki(path.join(dir, 'pki'), ['node-1', 'node-2'], ['migrator-1']);
  etcd = await startLocalEtcd({ dir: path.join(dir, 'etcd'), tls: pki.etcd });
  const admin = await connectEtcd(etcd.url, 3000, pki.admin);
  clients.push(admin);
  await enableRbac(admin, pki.etcdIdentities);
  await enableRbac(admin, pki.etcdIdentities); // safe to repeat (a restarted `drover up`)
});

after(async () => {
  for (const c of clients) c.close();
  await etcd?.stop();
  fs.rmSync(dir, { recursive: true, force: true });
});

async function as(paths: TlsFilePaths): Promise<Etcd3> {
  const c = await connectEtcd(etcd.url, 3000, paths);
  clients.push(c);
  return c;
}

const DENIED = /permission denied/i;
const put = (c: Etcd3, key: string) => c.put(key).value('{}').exec();

/** A raw etcd3 client (past Drover's own checks) and whether its first read fails within 4 s. */
async function rawReadFails(credentials: { rootCertificate: Buffer; certChain?: Buffer; privateKey?: Buffer }): Promise<boolean> {
  const c = new Etcd3({ hosts: etcd.url, dialTimeout: 2000, credentials });
  clients.push(c);
  try {
    await Promise.race([c.get(keys.config()).exec(), new Promise((_, r) => setTimeout(() => r(new Error('timeout')), 4000))]);
    return false;
  } catch {
    return true;
  }
}

test('etcd refuses a client without a certificate, and one whose certificate another CA issued', async () => {
  await assert.rejects(connectEtcd(etcd.url, 2000), /etcd at https:\/\/127\.0\.0\.1:\d+ is https: a client certificate is needed/);
  const ca = fs.readFileSync(pki.caFile);
  assert.equal(await rawReadFails({ rootCertificate: ca }), true, 'TLS without a client certificate');
  const other = await ensureLocalPki(path.join(dir, 'other-pki'), [], []);
  assert.equal(await rawReadFails({ rootCertificate: ca, certChain: fs.readFileSync(other.admin.cert), privateKey: fs.readFileSync(other.admin.key) }), true, 'an admin certificate of another CA');
  assert.equal(await rawReadFails({ rootCertificate: ca, certChain: fs.readFileSync(pki.admin.cert), privateKey: fs.readFileSync(pki.admin.key) }), false, 'the same call with the cluster admin succeeds');
});

test('a node identity writes its own nodes/, alive/ and owned/ keys and reads vms/, alive/, owned/, nothing else', async () => {
  const n1 = await as(pki.of('node-1'));
  await put(n1, keys.node('node-1'));
  await put(n1, keys.alive('node-1'));
  await put(n1, keys.ownership('node-1', 'web-1'));
  await n1.getAll().prefix(keys.vms()).exec();
  await n1.get(keys.alive('node-2')).exec(); // a paused source reads the target's lease and record
  await n1.getAll().prefix(keys.ownerships('node-2')).exec();
  await assert.rejects(put(n1, keys.node('node-2')), DENIED, "another node's record");
  await assert.rejects(put(n1, keys.alive('node-2')), DENIED, "another node's heartbeat");
  await assert.rejects(put(n1, keys.ownership('node-2', 'web-1')), DENIED, "another node's switchover record");
  await assert.rejects(put(n1, keys.vm('web-1')), DENIED, 'a VM record (ownership is the controllers)');
  await assert.rejects(put(n1, keys.job('j1')), DENIED, 'a job');
  await assert.rejects(put(n1, keys.config()), DENIED, 'the config');
  await assert.rejects(n1.delete().key(keys.node('node-2')).exec(), DENIED, 'deleting another node');
  await assert.rejects(n1.getAll().prefix(keys.jobs()).exec(), DENIED, 'reading jobs');
});

test('a controller writes VM records and jobs; a monitor only reads', async () => {
  const ctl = await as(pki.of('migrator-1'));
  await put(ctl, keys.vm('web-1'));
  await put(ctl, keys.job('j1'));
  await put(ctl, keys.admission());
  const mon = await as(pki.monitor);
  assert.equal((await mon.getAll().prefix(keys.vms()).keys()).length, 1);
  assert.ok(await mon.get(keys.job('j1')).string());
  await assert.rejects(put(mon, keys.vm('web-1')), DENIED);
  await assert.rejects(put(mon, keys.alive('node-1')), DENIED);
  // etcd's own server certificate names no etcd user: it authorizes nothing.
  await assert.rejects(connectEtcd(etcd.url, 2000, { ca: pki.caFile, cert: pki.etcd.certFile, key: pki.etcd.keyFile }), /cannot reach etcd.*(permission denied|user name)/i);
});
