import { test } from 'node:test';
import assert from 'node:assert/strict';
import { popcount, fullBitmap, rangeTable, setRanges, setRun, testBit } from './range-table';

test('range table from bitmap literals', () => {
  // pages 0,1,2 and 5, and 31 ; word 1: page 32 and 33
  const b = new Uint32Array([0b10000000_00000000_00000000_00100111, 0b11]);
  assert.deepEqual(rangeTable(b, 64), [0, 3, 5, 1, 31, 3]);
  assert.equal(popcount(b), 7);
});

test('runs are split at maxRun and at slot boundaries', () => {
  const b = fullBitmap(64);
  assert.deepEqual(rangeTable(b, 64, 10), [0, 10, 10, 10, 20, 10, 30, 10, 40, 10, 50, 10, 60, 4]);
  assert.deepEqual(rangeTable(b, 64, 1000, 16), [0, 16, 16, 16, 32, 16, 48, 16]);
  assert.deepEqual(rangeTable(b, 40, 1000, 32), [0, 32, 32, 8]);
});

test('full bitmap covers exactly pageCount pages', () => {
  const b = fullBitmap(70);
  assert.equal(popcount(b), 70);
  assert.deepEqual(rangeTable(b, 70), [0, 70]);
  assert.deepEqual(rangeTable(new Uint32Array(3), 70), []);
});

test('setRanges folds a range table back into a bitmap', () => {
  const b = new Uint32Array(2);
  setRanges(b, [3, 2, 40, 1]);
  assert.ok(testBit(b, 3) && testBit(b, 4) && testBit(b, 40));
  assert.equal(popcount(b), 3);
  assert.deepEqual(rangeTable(b, 64), [3, 2, 40, 1]);
});

test('setRun sets exactly its bits a word at a time and counts the ones that were clear', () => {
  // Against a bit-at-a-time reference over runs that start, end and span word edges.
  let seed = 7;
  const rnd = (n: number) => { seed = (seed * 1103515245 + 12345) >>> 0; return seed % n; };
  const fast = new Uint32Array(8);
  const slow = new Uint32Array(8);
  for (let i = 0; i < 500; i++) {
    const first = rnd(256);
    const count = rnd(Math.min(97, 256 - first) + 1);
    let fresh = 0;
    for (let p = first; p < first + count; p++) {
      if (!testBit(slow, p)) { fresh++; slow[p >>> 5] |= 1 << (p & 31); }
    }
    assert.equal(setRun(fast, first, count), fresh, `run ${first}+${count}`);
    assert.deepEqual(fast, slow, `run ${first}+${count}`);
  }
  assert.equal(setRanges(new Uint32Array(2), [0, 32, 32, 32]), 64);
});
