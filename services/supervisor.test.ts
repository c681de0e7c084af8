import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { Supervisor, restartDelay, DEFAULT_BACKOFF, type RestartEvent } from './supervisor';

const FAST = { firstMs: 40, factor: 2, maxMs: 150, stableMs: 60_000 };

function node(code: string) {
  return () => spawn(process.execPath, ['-e', code], { stdio: 'ignore' });
}

async function until(what: string, f: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!f()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

test('supervisor: the backoff doubles from the first delay and stays at the cap', () => {
  assert.deepEqual([1, 2, 3, 4, 5, 6, 7, 8].map((n) => restartDelay(n)), [500, 1000, 2000, 4000, 8000, 16_000, 30_000, 30_000]);
  assert.equal(restartDelay(100, DEFAULT_BACKOFF), 30_000);
});

test('supervisor: a child that keeps dying is restarted with growing delays, still retried at the cap, and logged', async () => {
  const events: RestartEvent[] = [];
  const lines: string[] = [];
  const s = new Supervisor((l, e) => { lines.push(l); if (e) events.push(e); }, FAST);
  let starts = 0;
  s.add('crasher', () => { starts++; return node('process.exit(3)')(); });
  await until('five restarts', () => events.length >= 5);
  s.stop();
  assert.deepEqual(events.slice(0, 5).map((e) => e.delayMs), [40, 80, 150, 150, 150]);
  assert.ok(events.every((e) => e.code === 3 && e.signal === null && e.name === 'crasher'));
  assert.match(lines[0], /^supervisor: crasher exited \(code 3\); restarting in 40 ms \(failure 1 in a row\)$/);
  const n = starts;
  await new Promise((r) => setTimeout(r, 400));
  assert.ok(starts <= n + 1, 'no restarts after stop');
});

test('supervisor: kill -9 of a running child restarts it (signal logged); a clean exit is not restarted', async () => {
  const lines: string[] = [];
  const s = new Supervisor((l) => lines.push(l), FAST);
  const first = s.add('svc', node('setInterval(() => {}, 1000)'));
  await until('spawned', () => first.pid !== undefined);
  first.kill('SIGKILL');
  await until('restarted', () => s.child('svc') !== first && s.child('svc')!.pid !== undefined);
  assert.match(lines[0], /^supervisor: svc exited \(signal SIGKILL\); restarting in 40 ms/);
  const second = s.child('svc')!;
  const gone = new Promise((r) => second.once('exit', r));
  s.stop();
  second.kill('SIGTERM');
  await gone;
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(s.child('svc'), second, 'not restarted during stop');

  const clean: string[] = [];
  const c = new Supervisor((l) => clean.push(l), FAST);
  const once = c.add('oneshot', node('process.exit(0)'));
  await new Promise((r) => once.once('exit', r));
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(c.child('oneshot'), once);
  assert.deepEqual(clean, ['supervisor: oneshot exited cleanly (code 0); not restarted']);
  c.stop();
});
