import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DroverError } from '../../lib/errors';
import { acks, missingBitmapOf } from '../wire/protocol';
import { BatchWindow } from '../precopy/batch-window';
import { checkResumed, PostcopyRecoveryFailed, reconnect, reconnectable, type RecoveryEngine } from './postcopy-recovery';

const bitmap = (pages: number[], words = 2): Uint32Array => {
  const b = new Uint32Array(words);
  for (const p of pages) b[p >>> 5] |= 1 << (p & 31);
  return b;
};

test('Resumed is checked: the geometry, and only pages missing at the switch', () => {
  const atSwitch = bitmap([3, 4, 40]);
  assert.deepEqual([...checkResumed(acks.resumed(bitmap([4]), 7, 1, false) as never, 64, atSwitch).missing], [...bitmap([4])]);
  assert.throws(() => checkResumed(acks.resumed(bitmap([5]), 7, 1, false) as never, 64, atSwitch), /lacks page 5, which it held at the switch/);
  assert.throws(() => missingBitmapOf(Buffer.alloc(4), 64), /4 bytes, expected 8 for 64 pages/);
  assert.throws(() => missingBitmapOf(Buffer.from(bitmap([50]).buffer), 40), /beyond the VM's 40 pages/);
});

test('a dropped stream is worth a reconnection; a refusal is not', () => {
  for (const code of ['UNAVAILABLE', 'CANCELLED', 'DEADLINE_EXCEEDED']) assert.ok(reconnectable(new DroverError(code as never, 'x')), code);
  for (const code of ['NOT_FOUND', 'PERMISSION_DENIED', 'DATA_LOSS', 'FAILED_PRECONDITION', 'INVALID_ARGUMENT']) assert.ok(!reconnectable(new DroverError(code as never, 'x')), code);
});

/** An engine whose target answers each reconnection attempt with `answer(attempt)` (an ack or a failure). */
function engine(answer: (attempt: number) => DroverError | 'resumed'): RecoveryEngine & { attempts: number[] } {
  const window = new BatchWindow();
  const attempts: number[] = [];
  return {
    migrationId: 'm', token: 't', pageCount: 64, window, attempts, log: () => undefined, canReconnect: true, reopen: () => undefined,
    send: async (f) => {
      const n = f.kind === 'start' ? f.resume ?? 0 : 0;
      attempts.push(n);
      const a = answer(n);
      setImmediate(() => (a === 'resumed' ? window.handleAck(acks.resumed(bitmap([3]), 9, 1, false)) : window.fail(a)));
    },
  };
}

test('reconnect retries dropped attempts with backoff until Resumed, numbering the attempts', async () => {
  const e = engine((n) => (n < 3 ? new DroverError('UNAVAILABLE', 'connection refused') : 'resumed'));
  const r = await reconnect(e, new DroverError('UNAVAILABLE', 'reset'), bitmap([3, 4]), 1);
  assert.deepEqual(e.attempts, [1, 2, 3]);
  assert.equal(r.attempts, 3);
  assert.equal(r.batches, 9);
});

test('reconnect stops at once on a refusal (the target no longer holds the migration): the VM is lost, never resumed on the source', async () => {
  const e = engine(() => new DroverError('NOT_FOUND', 'no migration m is prepared'));
  await assert.rejects(reconnect(e, new DroverError('UNAVAILABLE', 'reset'), bitmap([3]), 1),
    (err: unknown) => err instanceof PostcopyRecoveryFailed && err.code === 'DATA_LOSS' && /refused reconnection attempt 1 \(NOT_FOUND: no migration m is prepared\)/.test(err.message));
  assert.deepEqual(e.attempts, [1]);
  await assert.rejects(reconnect(e, new DroverError('DATA_LOSS', 'digest mismatch'), bitmap([3]), 1), /digest mismatch/);
  assert.deepEqual(e.attempts, [1], 'a refusal as the cause is not retried');
});
