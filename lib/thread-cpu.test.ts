import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Worker } from 'node:worker_threads';
import { processCpuMsWithout } from './thread-cpu';

/** A worker thread that names itself `name` and spins for `ms`. */
function spinner(name: string, ms: number): Promise<void> {
  const code = `require('node:fs').writeFileSync('/proc/thread-self/comm', ${JSON.stringify(name)}); const t = Date.now(); while (Date.now() - t < ${ms});`;
  return new Promise((resolve, reject) => {
    const w = new Worker(code, { eval: true });
    w.once('exit', () => resolve());
    w.once('error', reject);
  });
}

test('a named busy thread is left out of the process CPU; an unnamed one is counted', async () => {
  const withAll = () => { const u = process.cpuUsage(); return (u.user + u.system) / 1000; };
  const a0 = withAll(), b0 = processCpuMsWithout('test-guest');
  const vcpu = spinner('test-guest-0', 600); // measured while it runs: an ended thread leaves /proc/self/task
  await new Promise((r) => setTimeout(r, 500));
  const a1 = withAll(), b1 = processCpuMsWithout('test-guest');
  await vcpu;
  assert.ok(a1 - a0 > 100, `the whole process counts the spinning thread (${a1 - a0} ms)`);
  assert.ok(b1 - b0 < (a1 - a0) / 2, `without it: ${b1 - b0} ms of ${a1 - a0} ms`);
  const c0 = processCpuMsWithout('test-guest');
  await spinner('other', 300);
  assert.ok(processCpuMsWithout('test-guest') - c0 > 50, 'another thread is counted');
});
