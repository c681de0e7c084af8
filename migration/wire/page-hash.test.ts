import { test } from 'node:test';
import assert from 'node:assert/strict';
import { hashPage, ImageDigest, foldChecksum } from './page-hash';

const WORDS = 1024;

test('hashPage is 0 exactly for zero pages and tells pages apart', () => {
  const mem = new Int32Array(WORDS * 4);
  assert.equal(hashPage(mem, 0), 0);
  mem[WORDS + 1023] = 1; // last word of page 1
  mem[2 * WORDS] = 1; // first word of page 2
  mem[3 * WORDS + 5] = 1 << 31; // a high bit
  const h = [1, 2, 3].map((p) => hashPage(mem, p * WORDS));
  assert.ok(h.every((x) => x !== 0));
  assert.equal(new Set(h).size, 3);
});

test('the incremental image digest equals a full pass, whatever the order of updates', async () => {
  const pages = 64;
  const mem = new Int32Array(WORDS * pages);
  const inc = new ImageDigest(pages);
  const all = new Uint32Array(Math.ceil(pages / 32)).fill(0xffffffff);
  const full = () => ImageDigest.ofMemory(pages, all, (first, count) => mem.subarray(first * WORDS, (first + count) * WORDS));
  assert.deepEqual(inc.digest(), await full(), 'empty image');
  for (let round = 0; round < 3; round++) {
    for (let pfn = (round * 7) % pages; pfn < pages; pfn += 3) {
      mem[pfn * WORDS + (round % WORDS)] = round + pfn + 1;
      inc.set(pfn, hashPage(mem, pfn * WORDS));
    }
  }
  assert.deepEqual(inc.digest(), await full());
  // A page zeroed again contributes as a zero page.
  mem.fill(0, 5 * WORDS, 6 * WORDS);
  inc.set(5, 0);
  assert.deepEqual(inc.digest(), await full());
  // A stale page (one update not recorded) changes the digest.
  mem[9 * WORDS] ^= 0x40;
  assert.notDeepEqual(inc.digest(), await full());
});

test('batch checksum depends on page order and pfn', () => {
  const a = foldChecksum(foldChecksum(0, 1, 111), 2, 222);
  const b = foldChecksum(foldChecksum(0, 2, 222), 1, 111);
  const c = foldChecksum(foldChecksum(0, 1, 111), 3, 222);
  assert.notEqual(a, b);
  assert.notEqual(a, c);
});
