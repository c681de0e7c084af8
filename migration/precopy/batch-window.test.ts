/** The batch window: cumulative acks release batches in order, the window blocks and unblocks, failure wakes every waiter. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DroverError } from '../../lib/errors';
import { acks } from '../wire/protocol';
import { BatchWindow } from './batch-window';

/** Lets pending promise callbacks run. */
const tick = () => new Promise<void>((r) => setImmediate(r));

/** A window whose target accepted with `windowBytes`. */
function accepted(windowBytes: number): BatchWindow {
  const w = new BatchWindow();
  w.handleAck(acks.accepted(windowBytes));
  return w;
}

/** Sends `n` batches of `bytes` each into `w`; returns their builders. */
function sendBatches(w: BatchWindow, n: number, bytes: number) {
  const builders = [];
  for (let i = 0; i < n; i++) {
    const b = w.takeBuilder();
    w.push(w.nextSeq(), b, bytes);
    builders.push(b);
  }
  return builders;
}

test('a cumulative ack releases every batch up to its seq, in order, and their builders return to the pool', () => {
  const w = accepted(1000);
  assert.equal(w.accepted, true);
  const builders = sendBatches(w, 3, 100);
  assert.equal(w.inFlightCount, 3);
  assert.equal(w.lastSeq, 3);
  w.handleAck(acks.batch(2, 200));
  assert.equal(w.inFlightCount, 1);
  // The pool hands back the released builders (most recently released first), before new ones.
  assert.equal(w.takeBuilder(), builders[1]);
  assert.equal(w.takeBuilder(), builders[0]);
  w.handleAck(acks.batch(3, 300));
  assert.equal(w.inFlightCount, 0);
  assert.equal(w.takeBuilder(), builders[2]);
});

test('the window blocks once the bytes in flight reach it, and an ack unblocks it', async () => {
  const w = accepted(250);
  sendBatches(w, 2, 100);
  let roomy = false;
  void w.untilRoom().then(() => { roomy = true; });
  await tick();
  assert.equal(roomy, true, '200 < 250: room');
  sendBatches(w, 1, 100);
  let unblocked = false;
  void w.untilRoom().then(() => { unblocked = true; });
  await tick();
  assert.equal(unblocked, false, '300 >= 250: blocked');
  w.handleAck(acks.batch(1, 100));
  await tick();
  assert.equal(unblocked, true);
});

test('untilDrained resolves once every batch is acknowledged', async () => {
  const w = accepted(0); // 0: keep the default window
  sendBatches(w, 2, 10);
  let drained = false;
  void w.untilDrained().then(() => { drained = true; });
  w.handleAck(acks.batch(1, 10));
  await tick();
  assert.equal(drained, false);
  w.handleAck(acks.batch(2, 20));
  await tick();
  assert.equal(drained, true);
});

test('a failure wakes every waiter with it; the first failure wins', async () => {
  const w = accepted(100);
  sendBatches(w, 1, 100);
  const room = w.untilRoom();
  const drained = w.untilDrained();
  const raced = w.race(new Promise(() => undefined));
  const first = new DroverError('UNAVAILABLE', 'peer went away');
  w.fail(first);
  w.fail(new DroverError('CANCELLED', 'too late'));
  for (const p of [room, drained, raced]) await assert.rejects(p, (e) => e === first);
  assert.equal(w.failure, first);
  assert.throws(() => w.check(), (e) => e === first);
  await assert.rejects(w.until(() => true), (e) => e === first, 'a wait after the failure throws too');
});

test('verified and activated acks are recorded for the waits on them', async () => {
  const w = accepted(100);
  assert.equal(w.activatedAt, undefined);
  const activated = w.until(() => w.activatedAt !== undefined);
  w.handleAck(acks.verified(Buffer.alloc(8, 1), 4));
  assert.equal(w.verified?.pages, 4);
  w.handleAck(acks.activated(1234.5));
  await activated;
  assert.equal(w.activatedAt, 1234.5);
});
