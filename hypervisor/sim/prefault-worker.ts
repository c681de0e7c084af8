/**
 * Faults guest pages in ahead of an incoming migration's page stream (Domain.prefault), on its
 * own thread. Each page gets one atomic compare-exchange of 0 with 0 on its first word: a
 * locked write that makes the kernel map the page, and that never changes what is there, so it
 * is safe while the receiver writes the same pages.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { PAGE_WORDS, SLOT_MASK, SLOT_SHIFT } from './layout';
import { nameThisThread } from './thread-name';

/** What the domain hands the worker. */
export interface PrefaultJob {
  slots: SharedArrayBuffer[];
  ranges: number[];
}

if (parentPort && workerData) {
  nameThisThread('drover-prefault');
  const job = workerData as PrefaultJob;
  const views = job.slots.map((s) => new Int32Array(s));
  let pages = 0;
  for (let i = 0; i < job.ranges.length; i += 2) {
    for (let pfn = job.ranges[i], end = pfn + job.ranges[i + 1]; pfn < end; pfn++) {
      const v = views[pfn >>> SLOT_SHIFT];
      if (!v) continue;
      Atomics.compareExchange(v, (pfn & SLOT_MASK) * PAGE_WORDS, 0, 0);
      pages++;
    }
  }
  parentPort.postMessage({ pages });
}
