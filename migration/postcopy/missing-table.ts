/**
 * The switch's table of missing pages: the range table of the pages the target still lacks,
 * coarsened until it fits the protocol's limit. Coarsening only adds pages (gaps between close
 * ranges of one memory slot); an added page is sent like any other missing page, so the table
 * stays exact about what the target will receive.
 */
import { rangeTable } from '../wire/range-table';

/** The range table of `bitmap`, merging ranges across ever larger gaps until it has at most `maxEntries` entries. */
export function missingTable(bitmap: Uint32Array, pageCount: number, slotPages: number, maxEntries: number): number[] {
  let table = rangeTable(bitmap, pageCount, 0x7fffffff, slotPages);
  for (let gap = 1; table.length > maxEntries; gap *= 2) table = mergeGaps(table, gap, slotPages);
  return table;
}

/** Merges neighbouring ranges of one slot whose gap is at most `gap` pages. */
function mergeGaps(table: number[], gap: number, slotPages: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < table.length; i += 2) {
    const first = table[i], count = table[i + 1];
    const n = out.length;
    if (n > 0) {
      const pf = out[n - 2], end = pf + out[n - 1];
      if (first - end <= gap && Math.floor(pf / slotPages) === Math.floor((first + count - 1) / slotPages)) {
        out[n - 1] = first + count - pf;
        continue;
      }
    }
    out.push(first, count);
  }
  return out;
}

/** The bitmap (of `words` words) of a range table's pages. */
export function pagesOfTable(table: readonly number[], words: number): Uint32Array {
  const bitmap = new Uint32Array(words);
  for (let i = 0; i < table.length; i += 2) {
    for (let p = table[i]; p < table[i] + table[i + 1]; p++) bitmap[p >>> 5] |= 1 << (p & 31);
  }
  return bitmap;
}
