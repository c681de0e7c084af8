/** The switchover's timing rule: the target's record window always ends before the source may resume on a timeout. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LEASE_MARGIN_MS, sourceResolveBound, targetRecordDeadline } from './switchover-timing';

const TTL_MS = 5000;

test('timing: the target window counts from Complete arrival, not from a late resume (a QEMU target that waited for beats)', () => {
  const arrived = 1_000_000;
  const lease = arrived + 10 * TTL_MS; // a fresh lease: not the binding limit here
  const deadline = targetRecordDeadline({ completeArrivedAtMs: arrived, leaseDeadlineMs: lease, ttlMs: TTL_MS });
  assert.equal(deadline, arrived + TTL_MS - LEASE_MARGIN_MS);
  // A QEMU target declared resumed 2 s after Complete (it waited for the guest's beats): a window
  // counted from that resume would end after a source that resolved at once may resume.
  const resumed = arrived + 2000;
  const source = sourceResolveBound(arrived, TTL_MS);
  assert.ok(Math.min(lease, resumed + TTL_MS) - LEASE_MARGIN_MS > source, 'the old rule: both copies could run');
  assert.ok(deadline < source, 'the rule: the target pauses first');
});

test('timing: the lease deadline bounds the window when it comes first', () => {
  const arrived = 1_000_000;
  assert.equal(targetRecordDeadline({ completeArrivedAtMs: arrived, leaseDeadlineMs: arrived + 1200, ttlMs: TTL_MS }), arrived + 1200 - LEASE_MARGIN_MS);
  assert.ok(targetRecordDeadline({ completeArrivedAtMs: arrived, leaseDeadlineMs: 0, ttlMs: TTL_MS }) < arrived, 'no lease: the window is closed');
});

test('timing: for any send/arrival delay and any resolve start after sending, the target window ends 3 margins before the source bound', () => {
  const sent = 2_000_000;
  for (const transitMs of [0, 1, 40, 400]) {
    for (const resolveAfterSendMs of [0, 1, 100, 3000]) {
      const target = targetRecordDeadline({ completeArrivedAtMs: sent + transitMs, leaseDeadlineMs: sent + 10 * TTL_MS, ttlMs: TTL_MS });
      const source = sourceResolveBound(sent + resolveAfterSendMs, TTL_MS);
      assert.ok(source - target >= 3 * LEASE_MARGIN_MS - transitMs, `transit ${transitMs} ms, resolve +${resolveAfterSendMs} ms: target ${target}, source ${source}`);
      assert.ok(target < source);
    }
  }
});
