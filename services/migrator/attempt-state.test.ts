import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AttemptTracker } from './attempt-state';
import type { MigrationResult } from '../../migration/types';

const ok = { outcome: 'succeeded', downtimeMs: 2 } as MigrationResult;
const cancelled = { outcome: 'cancelled', error: 'stopped' } as MigrationResult;

test('attempt: migrating → committing → committed succeeds with the owner recorded', () => {
  const t = new AttemptTracker();
  assert.ok(t.watchdogArmed && t.mayStartCommit && !t.commitStarted);
  t.startCommit(100);
  assert.ok(!t.watchdogArmed && !t.mayStartCommit && t.commitStarted);
  t.markCommitted();
  assert.equal(t.cancel('late', true), false, 'no cancel after the owner flip');
  assert.deepEqual(t.outcome(ok, undefined), { kind: 'succeeded', result: ok, ownerRecorded: true });
});

test('attempt: a flip recorded but no success from the engine is completed like a takeover', () => {
  const t = new AttemptTracker();
  t.startCommit(0);
  t.markCommitted();
  assert.deepEqual(t.outcome(undefined, undefined), { kind: 'committed' });
});

test('attempt: cancel wins once; the first reason stays; the engine result goes along', () => {
  const t = new AttemptTracker();
  assert.equal(t.cancel('progress timeout', false), true);
  assert.equal(t.cancel('cancelled by user', true), false);
  assert.ok(!t.watchdogArmed && !t.mayStartCommit && !t.commitStarted, 'phase writes go on after a cancel before any commit');
  assert.deepEqual(t.outcome(cancelled, undefined), { kind: 'cancelled', reason: 'progress timeout', byUser: false, result: cancelled });
});

test('attempt: a cancel during the commit keeps commitStarted (no phase writes, watchdog out)', () => {
  const t = new AttemptTracker();
  t.startCommit(0);
  assert.equal(t.cancel('cancelled by user', true), true);
  assert.ok(t.commitStarted);
  assert.throws(() => t.markCommitted(), /cannot record the owner flip in state cancelling/);
});

test('attempt: success without our commit still succeeds, owner not recorded', () => {
  const t = new AttemptTracker();
  assert.deepEqual(t.outcome(ok, undefined), { kind: 'succeeded', result: ok, ownerRecorded: false });
});

test('attempt: a lost job is abandoned whatever else happened', () => {
  const t = new AttemptTracker();
  t.startCommit(0);
  t.markCommitted();
  t.markLost();
  assert.deepEqual(t.outcome(ok, undefined), { kind: 'abandoned' });
});

test('attempt: failures carry the engine error, or a code from the result', () => {
  const t = new AttemptTracker();
  const f = t.outcome(cancelled, undefined);
  assert.equal(f.kind, 'failed');
  if (f.kind === 'failed') assert.deepEqual([f.error.code, f.error.message], ['CANCELLED', 'stopped']);
  const g = t.outcome(undefined, undefined);
  if (g.kind === 'failed') assert.deepEqual([g.error.code, g.error.message], ['INTERNAL', 'migration failed']);
});
