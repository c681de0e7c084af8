import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PostcopyTarget, quantile } from './postcopy-target';
import type { PostcopyPageAccess } from '../../hypervisor/types';
import type { Ack, Frame } from '../wire/protocol';

/** A page map as the sim driver keeps it, without vCPUs. */
function pages(missing: number[]): PostcopyPageAccess {
  const set = new Set(missing);
  return {
    hotPages: 1, get missingPages() { return set.size; }, onFault: undefined, waitsMs: [4, 1, 2, 3],
    markMissing: () => undefined, markPresent: (first, count) => { for (let p = first; p < first + count; p++) set.delete(p); },
    isMissing: (p) => set.has(p),
  };
}

const batch = (ranges: number[], zeroRanges: number[] = []): Extract<Frame, { kind: 'batch' }> =>
  ({ kind: 'batch', seq: 1, ranges, zeroRanges, checksum: 0, payload: Buffer.alloc(0), encoding: 0 });

test('quantile is the nearest rank', () => {
  assert.equal(quantile([], 0.5), 0);
  assert.equal(quantile([5, 1, 3], 0.5), 3);
  assert.equal(quantile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 0.99), 10);
});

test('a fault becomes a PageRequest; a batch of missing pages is taken, marked present, and completes post-copy', () => {
  const p = pages([5, 6, 9]);
  const sent: Ack[] = [];
  const t = new PostcopyTarget(p, 'm1', (a) => sent.push(a));
  p.onFault!(9);
  assert.deepEqual(sent, [{ kind: 'pageRequest', ranges: [9, 1] }]);
  assert.equal(t.pagesWaitedFor, 1, 'a vCPU waits on the request (what the stall detector watches)');
  t.checkBatch(batch([5, 2], [9, 1]));
  assert.throws(() => t.checkComplete(), /3 page\(s\) still missing/);
  t.applied(batch([5, 2], [9, 1]));
  assert.equal(t.pagesWaitedFor, 0, 'the requested page came');
  t.checkComplete();
  const f = t.figures();
  assert.equal(f.pageWaits, 4);
  assert.equal(f.pageWaitP50Ms, 2);
  assert.equal(f.pageWaitP99Ms, 4);
  assert.ok(f.allPresentMs >= 0);
});

test('a post-copy batch naming a present page is refused: the running guest owns it', () => {
  const t = new PostcopyTarget(pages([5]), 'm1', () => undefined);
  assert.throws(() => t.checkBatch(batch([4, 2])), /page 4 is already present on the target/);
});
