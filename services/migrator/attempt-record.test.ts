import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DroverError } from '../../lib/errors';
import { attemptRecord } from './attempt-record';
import type { MigrationResult } from '../../migration/types';

test('attempt record: a success keeps the engine figures; the target gap stands in for an unmeasured blackout', () => {
  const ok = { outcome: 'succeeded', downtimeMs: 2.345, pausedMs: 3.21 } as MigrationResult;
  const r = attemptRecord(2, ok, undefined, 4.56);
  assert.deepEqual({ ...r, at: 0 }, { attempt: 2, result: 'succeeded', downtimeMs: 2.3, guestBlackoutMs: 4.6, pausedMs: 3.2, errorCode: '', error: '', at: 0 });
  assert.equal(attemptRecord(1, { ...ok, guestBlackoutMs: 7 }, undefined, 99).guestBlackoutMs, 7, "the engine's own measurement wins");
  assert.equal(attemptRecord(1, ok, undefined).guestBlackoutMs, -1, 'not measured');
});

test('attempt record: a failure after a pause keeps the pause, no downtime, and names the error', () => {
  const failed = { outcome: 'failed', downtimeMs: 0, pausedMs: 12.04, errorCode: 'FAILED_PRECONDITION', error: 'fenced' } as MigrationResult;
  const r = attemptRecord(1, failed, new DroverError('FAILED_PRECONDITION', 'target refused: fenced'), 5);
  assert.deepEqual([r.result, r.downtimeMs, r.guestBlackoutMs, r.pausedMs, r.errorCode, r.error], ['failed', 0, -1, 12, 'FAILED_PRECONDITION', 'target refused: fenced']);
  assert.equal(attemptRecord(1, undefined, new DroverError('CANCELLED', 'by user')).result, 'cancelled');
  assert.equal(attemptRecord(1, undefined, new DroverError('UNAVAILABLE', 'agent gone')).pausedMs, 0);
});
