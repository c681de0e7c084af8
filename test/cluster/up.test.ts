/** `drover up`: foreground cluster with drover.env; Ctrl-C (SIGINT) stops every process. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { droverBin } from '../../services/local-cluster';
import { connectEtcd } from '../../cluster/etcd';
import { cli, waitFor } from './support';

test('drover up (mutual TLS by default) writes DIR/drover.env once, runs N agents, 2 schedulers and 2 migrators, and SIGINT stops everything', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'drover-up-'));
  const up = spawn(process.execPath, [droverBin(), 'up', '--nodes', '2', '--dir', dir, '--mem-capacity', '512MiB'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  up.stdout.on('data', (d) => { out += d; });
  up.stderr.on('data', (d) => { out += d; });
  const exited = new Promise<number | null>((r) => up.once('exit', (code) => r(code)));
  try {
    const env = await waitFor('drover.env', async () => fs.existsSync(path.join(dir, 'drover.env')) && fs.readFileSync(path.join(dir, 'drover.env'), 'utf8'), 30_000);
    await waitFor('cluster up', async () => /cluster up/.test(out), 60_000);
    // Written once, when the cluster is ready: everything a client needs is in it from the start.
    const vars = Object.fromEntries(env.trim().split('\n').map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
    assert.deepEqual(Object.keys(vars).sort(), ['DROVER_CA', 'DROVER_CERT', 'DROVER_ETCD', 'DROVER_KEY', 'DROVER_METRICS']);
    assert.match(vars.DROVER_ETCD, /^https:\/\/127\.0\.0\.1:\d+$/);
    assert.equal(vars.DROVER_CA, path.join(dir, 'pki', 'ca.crt'));
    assert.equal(vars.DROVER_METRICS.split(',').length, 6);
    const url = vars.DROVER_ETCD;
    const noCert = await cli(url, ['node', 'list']);
    assert.equal(noCert.code, 2, 'no certificate: refused');
    assert.match(noCert.stderr, /client certificate is needed/);
    const nodes = JSON.parse((await cli(url, ['node', 'list', '--json'], undefined, vars)).stdout);
    assert.deepEqual(nodes.map((n: { id: string; state: string }) => `${n.id}:${n.state}`), ['node-1:ready', 'node-2:ready']);
    up.kill('SIGINT');
    const code = await Promise.race([exited, new Promise<string>((r) => setTimeout(() => r('timeout'), 30_000))]);
    assert.equal(code, 0, out);
    await assert.rejects(connectEtcd(url, 1000, { ca: vars.DROVER_CA, cert: vars.DROVER_CERT, key: vars.DROVER_KEY }), /cannot reach etcd/, 'etcd stopped');
    for (const f of ['node-1.log', 'node-2.log', 'scheduler-1.log', 'migrator-1.log', 'scheduler-2.log', 'migrator-2.log']) assert.ok(fs.existsSync(path.join(dir, f)), f);
  } finally {
    up.kill('SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
