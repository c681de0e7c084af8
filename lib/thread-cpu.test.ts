import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Worker } from 'node:worker_threads';
import { processCpuMsWithout, threadScans, THREAD_RESCAN_MS } from './thread-cpu';

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

test('the task list is scanned again only when threads come or go, or after THREAD_RESCAN_MS, not per reading', async () => {
  processCpuMsWithout('test-scan');
  const before = threadScans();
  for (let i = 0; i < 200; i++) processCpuMsWithout('test-scan');
  assert.ok(threadScans() - before <= 1, `200 readings in a burst scanned ${threadScans() - before} times`);
  // A thread that names itself after the scan its start caused is found by the timed rescan.
  const late = new Worker(`const { parentPort } = require('node:worker_threads'); parentPort.once('message', () => { require('node:fs').writeFileSync('/proc/thread-self/comm', 'test-scan-0'); const t = Date.now(); while (Date.now() - t < ${THREAD_RESCAN_MS * 3}); });`, { eval: true });
  await new Promise((r) => late.once('online', r));
  processCpuMsWithout('test-scan'); // the thread count changed: a scan, which sees the thread unnamed
  late.postMessage('go');
  await new Promise((r) => setTimeout(r, THREAD_RESCAN_MS + 100));
  const withAll = () => { const u = process.cpuUsage(); return (u.user + u.system) / 1000; };
  const a0 = withAll(), b0 = processCpuMsWithout('test-scan');
  await new Promise((r) => setTimeout(r, 600));
  const a1 = withAll(), b1 = processCpuMsWithout('test-scan');
  await new Promise((r) => late.once('exit', r));
  assert.ok(a1 - a0 > 100, `the whole process counts the spinning thread (${a1 - a0} ms)`);
  assert.ok(b1 - b0 < (a1 - a0) / 2, `without the late-named thread: ${b1 - b0} ms of ${a1 - a0} ms`);
});
