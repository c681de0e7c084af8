/**
 * `drover demo`, the README's main job, end to end as a user runs it: a local TLS cluster on the
 * sim hypervisor rebalances by itself, drains a node, and every VM ends running on exactly one
 * node with its guest check passing; the command exits 0 with "all good.".
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { droverBin } from '../../services/local-cluster';

/** The demo's own bound on balancing is 180 s; beyond that (and its stop) something hangs. */
const DEMO_TIMEOUT_MS = 300_000;

test('drover demo rebalances, drains, and checks every VM: exit 0, "all good."', { timeout: DEMO_TIMEOUT_MS + 10_000 }, async () => {
  const demo = spawn(process.execPath, [droverBin(), 'demo'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  demo.stdout.on('data', (d) => { out += d; });
  demo.stderr.on('data', (d) => { out += d; });
  const timer = setTimeout(() => demo.kill('SIGKILL'), DEMO_TIMEOUT_MS);
  const code = await new Promise<number | null>((r) => demo.once('exit', (c) => r(c)));
  clearTimeout(timer);
  assert.equal(code, 0, `drover demo exited ${code}:\n${out.slice(-3000)}`);
  assert.match(out, /all good\./);
  assert.match(out, /rebalance\s+succeeded/, 'the rebalancer moved VMs');
  assert.match(out, /drain\s+succeeded/, 'the drain moved VMs');
  assert.doesNotMatch(out, /not ok|MISMATCH|running on: .*,/, 'every VM runs once and checks out');
});
