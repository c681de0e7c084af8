import { test } from 'node:test';
import assert from 'node:assert/strict';
import { shouldStop, predictDowntimeMs, nextThrottle, decideStop, predictNextRound, RoundCurve, type RoundOutcome, type StopModelInput } from './stop-conditions';
import { resolvePolicy } from '../types';
import { roundRate, Pacer } from './rate-control';

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

test('under a cap every round runs at the cap (QEMU max-bandwidth), round 1 included; unlimited without one', () => {
  assert.equal(roundRate(0), 0);
  assert.equal(roundRate(1e9 / 8), 1e9 / 8);
  assert.equal(roundRate(8 * 2 ** 20), 8 * 2 ** 20, 'a cap below Xen\'s old 100 Mbit/s floor is the cap too');
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

const MiB = 2 ** 20;
/** After a 1 s round 1 of a 1 GiB guest at 1 GB/s: `dirty` left (dirtied over that second), the curve `wss`. */
const after = (dirty: number, wss: StopModelInput['wss'], over: Partial<StopModelInput> = {}): StopModelInput => ({ ...base, dirtyBytes: dirty, wss, dirtyRateBytesPerSec: dirty, ...over });

test('decideStop: a guest dirtying faster than the link stops after round 1, not after STALL_ROUNDS more', () => {
  // round 1 sent 512 MiB in 1 s and the guest dirtied 600 MiB meanwhile (a linear curve): one more round cannot shrink it
  const o = after(600 * MiB, [{ windowMs: 1000, bytes: 600 * MiB }], { throughputBytesPerSec: 512 * MiB });
  assert.equal(shouldStop(o, policy, 0), null, 'the observed rules alone would go on');
  assert.equal(decideStop(o, policy, 0), 'stalled');
  assert.ok(predictNextRound(o, policy).remainder >= 600 * MiB * 0.99);
});

test('decideStop: a working set that shrinks round by round goes on; one saturated above the target stops', () => {
  // web-like: 100 MB/s of writes, the next 100 MB round at 1 GB/s takes 100 ms and leaves about 10 MB
  const shrinking = after(100e6, [{ windowMs: 1000, bytes: 100e6 }]);
  assert.equal(decideStop(shrinking, policy, 0), null);
  const next = predictNextRound(shrinking, policy);
  assert.ok(Math.abs(next.ms - 100) < 1e-9 && Math.abs(next.remainder - 10e6) < 1e-3, JSON.stringify(next));
  // a 64 MiB working set rewritten within 10 ms: every round leaves all of it (67 ms of downtime at 1 GB/s)
  const saturated = after(64 * MiB, [{ windowMs: 10, bytes: 64 * MiB }, { windowMs: 1000, bytes: 64 * MiB }], { round: 2, sentPreviousRound: GiB / 2 });
  assert.equal(shouldStop(saturated, policy, 0), null);
  assert.equal(decideStop(saturated, policy, 0), 'stalled');
});

test("decideStop keeps the bounds: the target, Xen's max rounds and max sent factor, the timeout; no curve = the observed rules", () => {
  const shrinking = after(100e6, [{ windowMs: 1000, bytes: 100e6 }]);
  assert.equal(decideStop({ ...shrinking, dirtyBytes: 1e6 }, policy, 0), 'converged');
  assert.equal(decideStop({ ...shrinking, round: 30 }, policy, 0), 'max-rounds');
  assert.equal(decideStop({ ...shrinking, round: 5, sentTotal: 3 * GiB }, policy, 0), 'max-bytes');
  assert.equal(decideStop({ ...shrinking, round: 4, elapsedMs: 9000 }, policy, 10_000), 'timeout');
  assert.equal(decideStop({ ...shrinking, round: 5, roundsWithoutProgress: 3 }, policy, 0), 'stalled');
  assert.equal(decideStop(after(600 * MiB, []), policy, 0), null, 'without a measured point the model does not decide');
});

test('predictNextRound: under a cap the next round runs at the cap the pacer sets, not the measured rate', () => {
  const capped = resolvePolicy({ maxDowntimeMs: 5, bandwidthBytesPerSec: 1e9 / 8 });
  const o = after(20e6, [{ windowMs: 1000, bytes: 20e6 }], { throughputBytesPerSec: 50e6 });
  const next = predictNextRound(o, capped);
  assert.ok(Math.abs(next.ms - (20e6 / (1e9 / 8)) * 1000) < 1e-9, `${next.ms}`);
  assert.equal(decideStop(o, capped, 0), null, 'paced above the dirty rate, the rounds shrink');
  // a round's measured pace (13.2 MiB/s, a short round mostly the pacer's burst) below the guest's
  // 18.7 MiB/s would not shrink the 14 MiB left; at the cap the next round does
  const web = after(14.04 * MiB, [{ windowMs: 5011, bytes: 16.02 * MiB }, { windowMs: 751, bytes: 14.04 * MiB }], { round: 2, throughputBytesPerSec: 13.2 * MiB, dirtyRateBytesPerSec: 18.7 * MiB });
  assert.equal(decideStop(web, capped, 0), null);
  assert.ok(predictNextRound(web, capped).remainder < 0.8 * 14.04 * MiB);
});

test('RoundCurve keeps each round\'s point by the throttle it ran under', () => {
  const c = new RoundCurve();
  c.observe(900, 64 * MiB, 0);
  c.observe(60, 20 * MiB, 0);
  c.observe(0, MiB, 0); // an untimed round is no point
  c.observe(70, 2 * MiB, 0.2);
  assert.deepEqual(c.at(0), [{ windowMs: 900, bytes: 64 * MiB }, { windowMs: 60, bytes: 20 * MiB }]);
  assert.deepEqual(c.at(0.2), [{ windowMs: 70, bytes: 2 * MiB }]);
  assert.deepEqual(c.at(0.6), []);
});
