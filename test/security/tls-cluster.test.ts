/**
 * A local cluster as `drover up` runs it, secure by default: etcd with TLS and RBAC, every
 * process with its own certificate. The CLI (with the admin identity of DIR/drover.env) creates a
 * VM and migrates it end to end through the migrator, which presents its controller certificate
 * and names the target node; /metrics answers only over TLS and only to monitor/admin identities.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as https from 'node:https';
import * as path from 'node:path';
import { startCluster, cli, cliEnv, runningWhere } from '../cluster/support';
import { loadTlsFiles, type TlsFilePaths } from '../../lib/pki/tls-files';
import type { LocalCluster } from '../../services/local-cluster';

const clusters: (LocalCluster & { stopAll(): Promise<void> })[] = [];
after(async () => { for (const c of clusters) await c.stopAll(); });

/** GET https://address/metrics with `id` (or no client certificate); the status code or the error. */
function scrape(address: string, ca: string, id?: TlsFilePaths): Promise<number | Error> {
  const f = id ? loadTlsFiles(id) : undefined;
  return new Promise((resolve) => {
    const req = https.get({ host: '127.0.0.1', port: Number(address.split(':').pop()), path: '/metrics', ca: fs.readFileSync(ca), cert: f?.cert, key: f?.key, timeout: 5000 }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('error', (e) => resolve(e));
  });
}

test('a TLS local cluster: CLI with the admin identity, a migration end to end, /metrics for monitors only', async () => {
  const c = await startCluster({ nodes: 2, config: { autoRebalance: false } }); // TLS: the default
  clusters.push(c);
  const env = cliEnv(c);
  assert.match(c.etcdUrl, /^https:/);
  const mk = await cli(c.etcdUrl, ['vm', 'create', 't1', '--mem', '64MiB', '--profile', 'web', '--node', 'node-1'], undefined, env);
  assert.equal(mk.code, 0, mk.stdout + mk.stderr);
  const m = await cli(c.etcdUrl, ['migrate', 't1', '--to', 'node-2', '--wait', '--json'], undefined, env);
  assert.equal(m.code, 0, m.stdout + m.stderr);
  assert.equal((JSON.parse(m.stdout.trim().split('\n').pop()!) as { result: string }).result, 'succeeded');
  assert.deepEqual((await runningWhere(c)).get('t1'), ['node-2']);
  const plain = await cli(c.etcdUrl, ['vm', 'list'], undefined, { DROVER_CA: '', DROVER_CERT: '', DROVER_KEY: '' });
  assert.notEqual(plain.code, 0, 'no certificate, no access');

  // /metrics: HTTPS only, client certificate required, monitor or admin only.
  const pki = c.pki!;
  const yml = fs.readFileSync(path.join(c.opts.dir, 'prometheus.yml'), 'utf8');
  assert.match(yml, /scheme: https/);
  assert.ok(yml.includes(`cert_file: ${JSON.stringify(pki.monitor.cert)}`), yml);
  assert.equal(c.metricsTargets.length, 4);
  for (const t of c.metricsTargets) {
    assert.equal(await scrape(t.address, pki.caFile, pki.monitor), 200, `${t.name} monitor`);
    assert.equal(await scrape(t.address, pki.caFile, pki.of('node-1')), 403, `${t.name} node identity`);
    assert.ok(await scrape(t.address, pki.caFile) instanceof Error, `${t.name} without a certificate`);
  }
});
