import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Worker } from 'node:worker_threads';
import { PostcopyPages, PAGE_MISSING, PAGE_PRESENT, waitForPage, type PageWaitMessage } from './postcopy-pages';
import { CMD_PAUSE, CMD_RUN, CTL } from './layout';

test('missing pages are counted; marking them present clears them once', () => {
  const ctl = new Int32Array(new SharedArrayBuffer(CTL.SIZE * 4));
  const p = new PostcopyPages(64, ctl, 2);
  p.markMissing([4, 3, 10, 1]);
  assert.equal(p.missingPages, 4);
  assert.equal(p.isMissing(5), true);
  p.markPresent(4, 2);
  p.markPresent(4, 2);
  assert.equal(p.missingPages, 2);
  assert.equal(p.isMissing(5), false);
});

test('a vCPU waiting for a page asks for it once and wakes when it arrives; a pause ends the wait', async () => {
  const ctl = new Int32Array(new SharedArrayBuffer(CTL.SIZE * 4));
  Atomics.store(ctl, CTL.CMD, CMD_RUN);
  const p = new PostcopyPages(64, ctl, 0);
  p.markMissing([7, 1]);
  const faults: number[] = [];
  p.onFault = (pfn) => { faults.push(pfn); setTimeout(() => p.markPresent(pfn, 1), 20); };
  // The vCPU side runs in a worker (Atomics.wait blocks its thread).
  const src = `const { workerData, parentPort } = require('node:worker_threads');
    const { waitForPage } = require(${JSON.stringify(require.resolve('./postcopy-pages'))});
    const ok = waitForPage(new Int32Array(workerData.pages), new Int32Array(workerData.ctl), 7, (m) => parentPort.postMessage(m));
    parentPort.postMessage({ done: ok });`;
  const w = new Worker(src, { eval: true, workerData: { pages: p.sab, ctl: ctl.buffer } });
  const done = await new Promise<boolean>((resolve) => w.on('message', (m: PageWaitMessage | { done: boolean }) => ('done' in m ? resolve(m.done) : p.handle(m))));
  await w.terminate();
  assert.equal(done, true);
  assert.deepEqual(faults, [7]);
  assert.equal(p.waitsMs.length, 1);
  assert.ok(p.waitsMs[0] >= 10, `waited ${p.waitsMs[0]} ms`);
  // On this thread: a pause while the page is missing ends the wait with false.
  p.markMissing([8, 1]);
  Atomics.store(ctl, CTL.CMD, CMD_PAUSE);
  assert.equal(waitForPage(new Int32Array(p.sab), ctl, 8, () => undefined), false);
  assert.equal(p.isMissing(8), true, 'the page is still missing');
  assert.notEqual(Atomics.load(new Int32Array(p.sab), 8), PAGE_MISSING, 'it was asked for (once)');
  assert.notEqual(Atomics.load(new Int32Array(p.sab), 8), PAGE_PRESENT);
});
