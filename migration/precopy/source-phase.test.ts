/** The source's phase machine: the commit point, and which phases may roll back. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DroverError } from '../../lib/errors';
import { PHASES_AFTER_SWITCHOVER } from '../types';
import { isCommitted, SOURCE_TRANSITIONS, switchoverOf, type Switchover } from './source-phase';

const sw: Switchover = { pausedWall: 1, pausedAt: 2, breakdown: { pauseMs: 0, finalRoundMs: 0, finalPages: 0, deviceMs: 0, verifyMs: 0, commitMs: 0, activateMs: 0 } };

test('committed once Complete with activate is sent, or from activating on', () => {
  assert.equal(isCommitted({ kind: 'precopy' }), false);
  assert.equal(isCommitted({ kind: 'stopcopy', commitSent: false }), false);
  assert.equal(isCommitted({ kind: 'stopcopy', switchover: sw, commitSent: true }), true);
  assert.equal(isCommitted({ kind: 'verifying', switchover: sw, commitSent: false }), false);
  assert.equal(isCommitted({ kind: 'verifying', switchover: sw, commitSent: true }), true);
  assert.equal(isCommitted({ kind: 'activating', switchover: sw }), true);
  assert.equal(isCommitted({ kind: 'failed', error: new DroverError('INTERNAL', 'x') }), false);
});

test('every phase before switchover can roll back; none after it can', () => {
  for (const [from, to] of Object.entries(SOURCE_TRANSITIONS)) {
    const terminal = to.length === 0;
    const rollsBack = to.includes('failed') && to.includes('cancelled');
    if (terminal) continue;
    assert.equal(rollsBack, !PHASES_AFTER_SWITCHOVER.has(from as never), `phase ${from}`);
  }
  assert.deepEqual(SOURCE_TRANSITIONS.done, []);
});

test('the switchover clock is there from the pause on', () => {
  assert.equal(switchoverOf({ kind: 'stopcopy', commitSent: false }), undefined);
  assert.equal(switchoverOf({ kind: 'stopcopy', switchover: sw, commitSent: false }), sw);
  assert.equal(switchoverOf({ kind: 'activating', switchover: sw }), sw);
  assert.equal(switchoverOf({ kind: 'precopy' }), undefined);
});
