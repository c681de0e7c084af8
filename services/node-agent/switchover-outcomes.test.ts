import { test } from 'node:test';
import assert from 'node:assert/strict';
import { OUTCOMES_KEPT, SwitchoverOutcomes } from './switchover-outcomes';

const tokenIs = (t: string) => (x: string) => x === t;

test('a recorded outcome is answered only to the holder of the migration token', () => {
  const book = new SwitchoverOutcomes();
  book.record('m-1', tokenIs('secret'), 'owned');
  assert.equal(book.lookup('m-1', 'secret'), 'owned');
  assert.equal(book.lookup('m-1', 'guess'), 'mismatch');
  assert.equal(book.lookup('m-2', 'secret'), undefined, 'an unknown migration has no record');
});

test('a later record replaces the earlier one (owned, then fenced)', () => {
  const book = new SwitchoverOutcomes();
  book.record('m-1', tokenIs('t'), 'owned');
  book.record('m-1', tokenIs('t'), 'not_owned');
  assert.equal(book.lookup('m-1', 't'), 'not_owned');
});

test('the book keeps the newest OUTCOMES_KEPT migrations', () => {
  const book = new SwitchoverOutcomes();
  for (let i = 0; i <= OUTCOMES_KEPT; i++) book.record(`m-${i}`, tokenIs('t'), 'owned');
  assert.equal(book.lookup('m-0', 't'), undefined, 'the oldest is forgotten');
  assert.equal(book.lookup('m-1', 't'), 'owned');
  assert.equal(book.lookup(`m-${OUTCOMES_KEPT}`, 't'), 'owned');
});
