import { test } from 'node:test';
import assert from 'node:assert/strict';
import { shouldStop, predictDowntimeMs, nextThrottle, type RoundOutcome } from './stop-conditions';
import { resolvePolicy } from '../types';
import { roundRate, Pacer, XEN_START_RATE, XEN_RATE_MARGIN } from './rate-control';

const GiB = 2 ** 30;
const base: RoundOutcome = { round: 1, dirtyBytes: 100 * 2 ** 20, sentThisRound: GiB / 2, sentPreviousRound: NaN, sentTotal: GiB / 2, throughputBytesPerSec: 1e9, memBytes: GiB, elapsedMs: 1000, roundsWithoutProgress: 0 };
const policy = resolvePolicy({ maxDowntimeMs: 5 });

test('converges when the last round fits the downtime target', () => {
  assert.equal(shouldStop({ ...base, dirtyBytes: 1e6 }, policy, 0), 'converged'); // 1 ms + overhead
  assert.equal(shouldStop(base, policy, 0), null); // 105 ms predicted
  assert.ok(predictDowntimeMs(4e6, 1e9) > 4);
  assert.equal(predictDowntimeMs(1, 0), Infinity);
});

test('limits: rounds, bytes (3x RAM), stall, timeout', () => {
  assert.equal(shouldStop({ ...base, round: 30 }, policy, 0), 'max-rounds');
  assert.equal(shouldStop({ ...base, round: 5, sentTotal: 3 * GiB }, policy, 0), 'max-bytes');
  assert.equal(shouldStop({ ...base, round: 5, roundsWithoutProgress: 3 }, policy, 0), 'stalled');
  assert.equal(shouldStop({ ...base, round: 4, sentThisRound: 2e8, sentPreviousRound: 1e8, roundsWithoutProgress: 1 }, policy, 0), 'stalled');
  assert.equal(shouldStop({ ...base, round: 4, elapsedMs: 9000 }, policy, 10_000), 'timeout');
  assert.equal(shouldStop({ ...base, round: 4, elapsedMs: 1000 }, policy, 10_000), null);
});

test('Xen rate rule under a cap; unlimited without one', () => {
  const cap = 1e9 / 8;
  assert.equal(roundRate(1, 0, 0), 0);
  assert.equal(roundRate(1, 0, cap), XEN_START_RATE);
  assert.equal(roundRate(3, 50e6, cap), 50e6 + XEN_RATE_MARGIN);
  assert.equal(roundRate(3, 500e6, cap), cap);
  assert.equal(roundRate(3, 1e6, cap, true), cap);
});

test('pacer keeps within its rate', () => {
  const p = new Pacer();
  p.setRate(1e6, 1e5); // 1 MB/s, 100 kB burst
  assert.equal(p.reserve(5e4), 0);
  const wait = p.reserve(1e5); // 50 kB over the bucket -> ~50 ms
  assert.ok(wait > 40 && wait < 60, `wait ${wait}`);
  p.setRate(0);
  assert.equal(p.reserve(1e12), 0);
});

test('auto-converge steps: 20%, then half of the remaining speed per step, capped at 99%', () => {
  const steps: number[] = [];
  for (let t = 0, i = 0; i < 9; i++) { t = nextThrottle(t); steps.push(Math.round(t * 1000) / 1000); }
  assert.deepEqual(steps, [0.2, 0.6, 0.8, 0.9, 0.95, 0.975, 0.988, 0.99, 0.99]);
});
