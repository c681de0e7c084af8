import { test } from 'node:test';
import assert from 'node:assert/strict';
import { estimateRoundOverheadMs, type TimedRound } from './round-overhead';

const MiB = 2 ** 20;
const round = (mib: number, ms: number, paceMiB = 0, throttle = 0): TimedRound => ({ wireBytes: mib * MiB, ms, paceBytesPerSec: paceMiB * MiB, throttle });

test('the per-round cost is what the rounds after the first took beyond their bytes at the stream\'s rate', () => {
  // A stream of 150 MiB/s and 30 ms per round (a loaded host): 60 MiB, then 6, 3, 2 MiB.
  const at = (mib: number) => round(mib, 30 + (mib / 150) * 1000);
  const est = estimateRoundOverheadMs([at(60), at(6), at(3), at(2)])!;
  assert.ok(Math.abs(est - 30) < 0.5, `${est} ms`);
  // A quiet host: 1 ms.
  const quiet = (mib: number) => round(mib, 1 + (mib / 300) * 1000);
  assert.ok(Math.abs(estimateRoundOverheadMs([quiet(60), quiet(6), quiet(1), quiet(0.2)])! - 1) < 0.1);
  // Round 1 slower per byte than the rest (the target touches every page first; measured at load 9): the later rounds' line, 4 ms.
  assert.ok(Math.abs(estimateRoundOverheadMs([round(52, 732), round(7.2, 4 + 7.2 * 9.7), round(2.6, 4 + 2.6 * 9.7), round(1.2, 4 + 1.2 * 9.7)])! - 4) < 0.01);
  // One round only: nothing to read it off.
  assert.equal(estimateRoundOverheadMs([at(60)]), undefined);
});

test('paced rounds are timed at their pace; throttled rounds count only when no round ran unthrottled', () => {
  // Under a 1 Gbit/s cap: round 1 at 12 MiB/s, later rounds at their Xen rate, 4 ms each beyond it.
  const paced = [round(30, 2500, 12), round(16, 4 + (16 / 24) * 1000, 24), round(4, 4 + (4 / 60) * 1000, 60), round(1, 4 + (1 / 100) * 1000, 100)];
  assert.ok(Math.abs(estimateRoundOverheadMs(paced)! - 4) < 0.01);
  // A throttled guest leaves the CPU to the migration: its rounds run faster (2 ms) than the unthrottled ones (30 ms).
  const rs = [round(60, 430), round(6, 70), round(3, 50), round(2, 43), round(1, 2, 0, 0.2), round(0.5, 2, 0, 0.6), round(0.3, 2, 0, 0.8)];
  assert.ok(Math.abs(estimateRoundOverheadMs(rs)! - 30) < 1, `${estimateRoundOverheadMs(rs)}`);
  // All throttled after round 1 (mmuncher): those rounds are all there is.
  assert.ok(estimateRoundOverheadMs([round(15, 60), round(22, 62 + 22 / 0.25, 0, 0.2), round(40, 30 + 40 / 0.25, 0, 0.6), round(40, 30 + 40 / 0.25, 0, 0.8)])! > 20);
});
