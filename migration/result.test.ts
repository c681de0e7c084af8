/** The result constructors: outcome and error fields, optional fields only when given. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DroverError } from '../lib/errors';
import { failedResult, PauseClock, succeededResult } from './result';

const who = { migrationId: 'm-1', vm: 'web-1', profile: 'web', memBytes: 2 ** 30, totalMs: 12, source: 'a', target: 'b' };

test('failedResult: failed or cancelled by the error code, zero counters', () => {
  const f = failedResult(who, new DroverError('UNAVAILABLE', 'peer went away'));
  assert.equal(f.outcome, 'failed');
  assert.equal(f.errorCode, 'UNAVAILABLE');
  assert.equal(f.error, 'peer went away');
  assert.equal(f.bytesSent, 0);
  assert.equal(f.stopReason, '');
  assert.equal(f.totalMs, 12);
  assert.equal(failedResult(who, new DroverError('CANCELLED', 'by user')).outcome, 'cancelled');
});

test('succeededResult: no error, optional fields only when set, the breakdown copied', () => {
  const breakdown = { pauseMs: 1, finalRoundMs: 2, finalPages: 3, deviceMs: 4, verifyMs: 5, commitMs: 6, activateMs: 7 };
  const r = succeededResult({
    ...who, mode: 'precopy', verified: true, downtimeMs: 3, rounds: 2, bytesSent: 10, pageBytes: 8, zeroPages: 1, deviceBytes: 2,
    throughputBytesPerSec: 100, stopReason: 'converged', nonzeroBytes: 8, downtimeBreakdown: breakdown,
  });
  assert.equal(r.outcome, 'succeeded');
  assert.equal(r.errorCode, '');
  assert.equal(r.error, '');
  assert.deepEqual(r.downtimeBreakdown, breakdown);
  assert.notEqual(r.downtimeBreakdown, breakdown);
  assert.equal('throttlePercent' in r, false);
  assert.equal('guestBlackoutMs' in r, false);
});

test('PauseClock: closed pauses add up, an open one reads as so far, end without start is a no-op', () => {
  const c = new PauseClock();
  c.end(5);
  assert.equal(c.ms, 0);
  c.start(100);
  c.start(150); // already paused: ignored
  c.end(112.5);
  assert.equal(c.ms, 12.5);
  c.start(PauseClock.now() - 20);
  assert.ok(c.ms >= 32.5 && c.ms < 1000, `open pause counted: ${c.ms}`);
});
