/** The convergence decision of stream-migrated pre-copy (convergence.ts): a pure function of a sample. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { ConvergenceSample, StreamMigrationProgress } from '../../hypervisor/stream-migration';
import { convergenceDecider, convergencePolicy, decideConvergence, decidePageRound, notConverging, DEFAULT_PRECOPY_LIMITS, type PageRoundSample } from './convergence';
import { resolvePolicy } from '../types';

const MiB = 1024 * 1024;

test('policy: converging pre-copy is left alone, a dirty rate near the link is not', () => {
  const p: StreamMigrationProgress = {
    status: 'active', rounds: 3, remainingBytes: 100 * MiB, dirtyRateBytesPerSec: 10 * MiB,
    transferRateBytesPerSec: 500 * MiB, transferredBytes: 300 * MiB, totalRamBytes: 256 * MiB,
    expectedDowntimeMs: 200, elapsedMs: 1000, postcopy: false, throttlePercent: 0,
  };
  assert.equal(notConverging(p, [200 * MiB, 100 * MiB], 5, 100, 800, 'auto'), '');
  assert.match(notConverging({ ...p, dirtyRateBytesPerSec: 450 * MiB }, [], 5, 100, 800, 'auto'), /dirty rate/);
  assert.match(notConverging(p, [60 * MiB, 70 * MiB, 65 * MiB], 5, 100, 800, 'auto'), /not shrinking/);
  assert.equal(notConverging({ ...p, remainingBytes: 1 * MiB }, [60 * MiB, 70 * MiB, 65 * MiB], 5, 100, 800, 'auto'), '');
  assert.match(notConverging(p, [], 5, 100, 800, 'immediate'), /requested/);
});

// A sample that converges on every rule but the limits: small dirty rate, shrinking dirty set, early.
const slow: StreamMigrationProgress = {
  status: 'active', rounds: 3, remainingBytes: 100 * MiB, dirtyRateBytesPerSec: 10 * MiB,
  transferRateBytesPerSec: 500 * MiB, transferredBytes: 300 * MiB, totalRamBytes: 256 * MiB,
  expectedDowntimeMs: 200, elapsedMs: 1000, postcopy: false, throttlePercent: 0,
};
const shrinking = [200 * MiB, 100 * MiB];

test('the default limits are the engine defaults (30 rounds, 3x RAM), as the QEMU driver had them', () => {
  assert.deepEqual(DEFAULT_PRECOPY_LIMITS, { maxRounds: 30, maxBytesFactor: 3 });
  assert.equal(notConverging({ ...slow, rounds: 29 }, shrinking, 5, 100, 800, 'auto'), '');
  assert.match(notConverging({ ...slow, rounds: 30 }, shrinking, 5, 100, 800, 'auto'), /^30 rounds$/);
  assert.equal(notConverging({ ...slow, transferredBytes: 3 * 256 * MiB }, shrinking, 5, 100, 800, 'auto'), '');
  assert.match(notConverging({ ...slow, transferredBytes: 3 * 256 * MiB + 1 }, shrinking, 5, 100, 800, 'auto'), /> 3× RAM/);
});

test("maxRounds and maxBytesFactor of the MigrationPolicy are honoured", () => {
  const limits = convergencePolicy(resolvePolicy({ maxRounds: 5, maxBytesFactor: 1.5 }));
  assert.equal(limits.maxRounds, 5);
  assert.equal(limits.maxBytesFactor, 1.5);
  assert.equal(notConverging({ ...slow, rounds: 4, transferredBytes: 100 * MiB }, shrinking, 5, 100, 800, 'auto', limits), '');
  assert.match(notConverging({ ...slow, rounds: 5, transferredBytes: 100 * MiB }, shrinking, 5, 100, 800, 'auto', limits), /^5 rounds$/);
  assert.match(notConverging({ ...slow, rounds: 4, transferredBytes: 1.5 * 256 * MiB + 1 }, shrinking, 5, 100, 800, 'auto', limits), /> 1.5× RAM/);
  // a larger limit lets pre-copy run on where the default would have acted
  const generous = convergencePolicy(resolvePolicy({ maxRounds: 100, maxBytesFactor: 10 }));
  assert.equal(notConverging({ ...slow, rounds: 40, transferredBytes: 5 * 256 * MiB }, shrinking, 5, 100, 800, 'auto', generous), '');
});

test('decision: continue while converging; post-copy when the target offers it, else throttle, else continue', () => {
  const s: ConvergenceSample = { progress: slow, atSync: shrinking, sinceFirstPassMs: 100, firstPassMs: 800, downtimeLimitMs: 5, postcopyAvailable: true };
  const auto = convergencePolicy(resolvePolicy({}));
  assert.deepEqual(decideConvergence(s, auto), { action: 'continue' });
  const racing = { ...s, progress: { ...slow, dirtyRateBytesPerSec: 450 * MiB } };
  const pc = decideConvergence(racing, auto);
  assert.equal(pc.action, 'postcopy');
  assert.match(pc.action === 'postcopy' ? pc.reason : '', /dirty rate/);
  assert.equal(decideConvergence({ ...racing, postcopyAvailable: false }, auto).action, 'throttle');
  assert.deepEqual(decideConvergence({ ...racing, postcopyAvailable: false }, { ...auto, throttle: false }), { action: 'continue' });
  assert.equal(decideConvergence(s, { ...auto, mode: 'immediate' }).action, 'postcopy');
  // the bound decider gives the same answers
  assert.deepEqual(convergenceDecider(auto)(racing), pc);
  // the round limit from the policy reaches the decision
  const few = convergencePolicy(resolvePolicy({ maxRounds: 3 }));
  assert.equal(decideConvergence(s, few).action, 'postcopy');
});

test('the page engine: post-copy after the first pass for a guest beyond 2x the link, throttling on a stall within it', () => {
  const base: PageRoundSample = { round: 1, stop: null, dirtyRateBytesPerSec: 3e9, linkRateBytesPerSec: 1e9, postcopyAvailable: true, canThrottle: true, throttling: false };
  const auto = { postcopy: 'auto' as const };
  const fast = decidePageRound(base, auto);
  assert.equal(fast.action, 'postcopy');
  assert.match(fast.action === 'postcopy' ? fast.reason : '', /dirties 3\.00 GB\/s, the link moves 1\.00 GB\/s \(more than 2x\)/);
  assert.deepEqual(decidePageRound(base, {}), { action: 'continue' }, 'absent = never: pre-copy, no throttle before a stall');
  assert.deepEqual(decidePageRound({ ...base, postcopyAvailable: false }, auto), { action: 'continue' }, 'no offer, no post-copy');
  const within: PageRoundSample = { ...base, round: 3, stop: 'stalled', dirtyRateBytesPerSec: 1.5e9 };
  assert.equal(decidePageRound(within, auto).action, 'throttle');
  assert.equal(decidePageRound({ ...within, canThrottle: false }, auto).action, 'postcopy', 'may not be throttled: post-copy');
  assert.equal(decidePageRound({ ...within, dirtyRateBytesPerSec: 5e9 }, auto).action, 'postcopy', 'beyond 2x on a stall: post-copy');
  assert.equal(decidePageRound({ ...within, dirtyRateBytesPerSec: 5e9 }, { postcopy: 'never' }).action, 'throttle', '--postcopy never: throttling');
  assert.deepEqual(decidePageRound({ ...within, canThrottle: false }, { postcopy: 'never' }), { action: 'continue' }, 'neither allowed: pre-copy stops as it stops');
  assert.equal(decidePageRound({ ...within, stop: null, throttling: true }, auto).action, 'throttle', 'once throttling, each round that does not fit takes a step');
  assert.equal(decidePageRound({ ...base, dirtyRateBytesPerSec: 1e6 }, { postcopy: 'always' }).action, 'postcopy', 'always: after the first pass');
});
