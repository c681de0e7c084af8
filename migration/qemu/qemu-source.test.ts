/** The engine's policy as the QEMU driver gets it (qemu-source.ts). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { qemuDowntimeLimitMs, qemuPolicy } from './qemu-source';
import { resolvePolicy } from '../types';

test("QEMU's downtime-limit is half the downtime target (the switchover's fixed costs get the rest), at least 1 ms", () => {
  assert.equal(qemuDowntimeLimitMs(5), 2);
  assert.equal(qemuDowntimeLimitMs(1), 1);
  assert.equal(qemuDowntimeLimitMs(2), 1);
  assert.equal(qemuDowntimeLimitMs(300), 150);
});

test('qemuPolicy: uncapped bandwidth stays uncapped, a cap and the deadline carry over, post-copy is left to the policy', () => {
  const free = qemuPolicy(resolvePolicy({ maxDowntimeMs: 5 }), 2 ** 30);
  assert.equal(free.downtimeLimitMs, 2);
  assert.equal(free.maxBandwidthBytesPerSec, undefined);
  assert.equal(free.postcopy, 'auto');
  assert.equal(free.throttle, true);
  const capped = qemuPolicy(resolvePolicy({ maxDowntimeMs: 50, bandwidthBytesPerSec: 10e6, timeoutMs: 7000 }), 2 ** 30);
  assert.equal(capped.downtimeLimitMs, 25);
  assert.equal(capped.maxBandwidthBytesPerSec, 10e6);
  assert.equal(capped.deadlineMs, 7000);
});
