import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FramePool, POOLED_MIN_BYTES } from './frame-pool';

test('a buffer given back carries the next message; one still lent never does', () => {
  const pool = new FramePool(2);
  const a = pool.take(2 ** 20);
  const b = pool.take(2 ** 20);
  assert.notEqual(a.buffer, b.buffer, 'two messages in use have two buffers');
  assert.equal(a.length, 2 ** 20);
  pool.give(a);
  const c = pool.take(2 ** 20 - 100);
  assert.equal(c.buffer, a.buffer, 'the freed buffer is taken again');
  assert.equal(c.length, 2 ** 20 - 100, 'with the new message\'s length');
});

test('a second give, or a stale view of a buffer lent again, cannot free it', () => {
  const pool = new FramePool(4);
  const a = pool.take(2 ** 20);
  pool.give(a);
  pool.give(a);
  assert.equal(pool.freeCount, 1, 'a second give is ignored');
  const c = pool.take(2 ** 20);
  pool.give(a); // the stale message: its buffer now carries c
  assert.equal(pool.freeCount, 0, 'the stale release did not free c\'s buffer');
  assert.notEqual(pool.take(2 ** 20).buffer, c.buffer);
  pool.give(c.subarray(1));
  assert.equal(pool.freeCount, 0, 'only the exact view lent out gives it back');
});

test('small messages get buffers of their own; a larger message than any free buffer gets a new one; the free list is capped', () => {
  const pool = new FramePool(1);
  const small = pool.take(POOLED_MIN_BYTES - 1);
  pool.give(small);
  assert.equal(pool.freeCount, 0);
  const a = pool.take(POOLED_MIN_BYTES), b = pool.take(POOLED_MIN_BYTES);
  pool.give(a);
  pool.give(b);
  assert.equal(pool.freeCount, 1, 'one free buffer kept');
  const big = pool.take(4 * POOLED_MIN_BYTES);
  assert.notEqual(big.buffer, a.buffer);
  assert.notEqual(big.buffer, b.buffer);
});

test('with a header in front (grpc-js strips its prefix), the message behind it gives the buffer back, once', () => {
  const pool = new FramePool(4, 5);
  const framed = pool.take(2 ** 20 + 5);
  pool.give(framed);
  assert.equal(pool.freeCount, 0, 'the framed buffer itself is not the message');
  const m = framed.subarray(5);
  pool.give(m);
  assert.equal(pool.freeCount, 1);
  const again = pool.take(2 ** 20 + 5);
  assert.equal(again.buffer, framed.buffer);
  pool.give(m);
  assert.equal(pool.freeCount, 0, 'the stale message cannot free the buffer now carrying another');
  pool.give(again.subarray(5));
  assert.equal(pool.freeCount, 1);
});
