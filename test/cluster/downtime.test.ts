/**
 * Honest downtime (issue 12 item 3): each attempt of a cluster migration records `downtimeMs`
 * (STOP -> RESUME), `guestBlackoutMs` (the guest's largest heartbeat gap across the switchover)
 * and `pausedMs` (how long the source VM was paused); the job history, `migrations list --json`
 * and the source agent's `drover_vm_paused_seconds` histogram agree. TLS cluster, real processes.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as https from 'node:https';
import { startCluster, cli, cliEnv, readHistory } from './support';
import { loadTlsFiles, type TlsFilePaths } from '../../lib/pki/tls-files';
import type { LocalCluster } from '../../services/local-cluster';

const clusters: (LocalCluster & { stopAll(): Promise<void> })[] = [];
after(async () => { for (const c of clusters) await c.stopAll(); });

/** GET https://address/metrics with the monitor identity: the body. */
function scrape(address: string, ca: string, id: TlsFilePaths): Promise<string> {
  const f = loadTlsFiles(id);
  return new Promise((resolve, reject) => {
    const req = https.get({ host: '127.0.0.1', port: Number(address.split(':').pop()), path: '/metrics', ca: fs.readFileSync(ca), cert: f.cert, key: f.key, timeout: 5000 }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => { body += d.toString(); });
      res.on('end', () => resolve(body));
    });
    req.on('error', reject);
  });
}

/** The value of one sample line `name{labels} value` (0 when absent). */
function sample(text: string, name: string, labels: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${name}{${labels}}`) || (labels === '' && l.startsWith(`${name} `)));
  return line ? Number(line.split(' ').pop()) : 0;
}

test('a cluster migration: history, migrations list --json and drover_vm_paused_seconds agree on downtimeMs, guestBlackoutMs and pausedMs', async () => {
  const c = await startCluster({ nodes: 2, config: { autoRebalance: false } });
  clusters.push(c);
  const env = cliEnv(c);
  const mk = await cli(c.etcdUrl, ['vm', 'create', 'dt', '--mem', '64MiB', '--profile', 'web', '--node', 'node-1'], undefined, env);
  assert.equal(mk.code, 0, mk.stdout + mk.stderr);
  const m = await cli(c.etcdUrl, ['migrate', 'dt', '--to', 'node-2', '--wait', '--json'], undefined, env);
  assert.equal(m.code, 0, m.stdout + m.stderr);
  const id = (JSON.parse(m.stdout.trim().split('\n').pop()!) as { id: string }).id;

  const h = (await readHistory(c.etcd!)).find((j) => j.id === id)!;
  assert.equal(h.result, 'succeeded');
  assert.equal(h.attemptLog?.length, 1, JSON.stringify(h.attemptLog));
  const a = h.attemptLog![0];
  assert.equal(a.attempt, 1);
  assert.equal(a.result, 'succeeded');
  assert.ok(a.downtimeMs > 0, `downtime ${a.downtimeMs} ms`);
  assert.ok(a.guestBlackoutMs >= a.downtimeMs - 1, `the guest's blackout ${a.guestBlackoutMs} ms covers the downtime ${a.downtimeMs} ms`);
  assert.ok(a.pausedMs >= a.downtimeMs - 0.2, `the source was paused ${a.pausedMs} ms, at least the downtime ${a.downtimeMs} ms`);
  assert.ok(a.pausedMs < 5000, `paused ${a.pausedMs} ms`);
  assert.equal(Math.round(h.downtimeMs * 10) / 10, a.downtimeMs);
  assert.equal(h.guestBlackoutMs, a.guestBlackoutMs);
  assert.equal(h.pausedMs, a.pausedMs);

  const list = JSON.parse((await cli(c.etcdUrl, ['migrations', 'list', '--json'], undefined, env)).stdout) as { id: string; downtimeMs: number; guestBlackoutMs: number; pausedMs: number; attemptLog: typeof h.attemptLog }[];
  const row = list.find((j) => j.id === id)!;
  assert.deepEqual(row.attemptLog, h.attemptLog);
  assert.deepEqual([row.guestBlackoutMs, row.pausedMs], [a.guestBlackoutMs, a.pausedMs]);
  assert.equal(Math.round(row.downtimeMs * 10) / 10, a.downtimeMs);

  // The source agent observed the same pause (seconds; the record rounds to 0.1 ms).
  const src = c.metricsTargets.find((t) => t.name === 'node-1')!;
  const text = await scrape(src.address, c.pki!.caFile, c.pki!.monitor);
  assert.equal(sample(text, 'drover_vm_paused_seconds_count', 'result="succeeded"'), 1, text.split('\n').filter((l) => l.includes('paused')).join('\n'));
  assert.ok(Math.abs(sample(text, 'drover_vm_paused_seconds_sum', 'result="succeeded"') * 1000 - a.pausedMs) < 0.1, 'histogram sum = the record');
});
