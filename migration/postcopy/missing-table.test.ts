import { test } from 'node:test';
import assert from 'node:assert/strict';
import { missingTable, pagesOfTable } from './missing-table';
import { popcount } from '../wire/range-table';

const bitmapOf = (pages: number[], words = 4): Uint32Array => {
  const b = new Uint32Array(words);
  for (const p of pages) b[p >>> 5] |= 1 << (p & 31);
  return b;
};

test('the missing table is the exact range table while it fits', () => {
  assert.deepEqual(missingTable(bitmapOf([1, 2, 3, 7, 40]), 128, 64, 100), [1, 3, 7, 1, 40, 1]);
});

test('a table over the limit is coarsened: it covers every missing page, fits, and never crosses a slot', () => {
  const pages = [0, 2, 4, 6, 8, 60, 62, 64, 66, 100];
  const table = missingTable(bitmapOf(pages), 128, 64, 6);
  assert.ok(table.length <= 6, `${table}`);
  const covered = pagesOfTable(table, 4);
  for (const p of pages) assert.ok((covered[p >>> 5] >>> (p & 31)) & 1, `page ${p} is covered`);
  for (let i = 0; i < table.length; i += 2) assert.equal(Math.floor(table[i] / 64), Math.floor((table[i] + table[i + 1] - 1) / 64), 'inside one slot');
  assert.ok(popcount(covered) >= pages.length);
});

test('pagesOfTable sets exactly the pages of the table', () => {
  assert.equal(popcount(pagesOfTable([3, 4, 70, 2], 4)), 6);
});
