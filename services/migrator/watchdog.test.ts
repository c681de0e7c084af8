import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Watchdog } from './watchdog';

function clock(start = 1000): { now: () => number; advance(ms: number): void } {
  let t = start;
  return { now: () => t, advance: (ms) => { t += ms; } };
}

const limits = { completionTimeoutMs: 60_000, progressTimeoutMs: 10_000, memBytes: 256 * 2 ** 20 };

test('watchdog: quiet while bytes keep moving within the limits', () => {
  const c = clock();
  const w = new Watchdog(limits, c.now);
  for (let i = 1; i <= 5; i++) {
    c.advance(9_000);
    w.progress(i * 100);
    assert.equal(w.check(), undefined);
  }
});

test('watchdog: progress timeout when bytes sent stay unchanged', () => {
  const c = clock();
  const w = new Watchdog(limits, c.now);
  w.progress(100);
  c.advance(6_000);
  w.progress(100); // the same counter again is no progress
  c.advance(4_001);
  assert.equal(w.check(), 'progress timeout: no data moved for 10 s');
});

test('watchdog: the first event counts as progress, even at 0 bytes', () => {
  const c = clock();
  const w = new Watchdog(limits, c.now);
  c.advance(9_000);
  w.progress(0);
  c.advance(9_000);
  assert.equal(w.check(), undefined);
});

test('watchdog: completion timeout names the limit and the VM size, and wins over progress', () => {
  const c = clock();
  const w = new Watchdog({ ...limits, progressTimeoutMs: 1_000 }, c.now);
  c.advance(60_001);
  assert.equal(w.check(), 'completion timeout: not done after 60 s (256 MiB VM)');
});

test('watchdog: exactly at a limit is still within it', () => {
  const c = clock();
  const w = new Watchdog(limits, c.now);
  c.advance(10_000);
  assert.equal(w.check(), undefined);
});
