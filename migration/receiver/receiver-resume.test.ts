/**
 * Post-copy recovery on the receiver (protocol.ts "Post-copy recovery"): Start(resume) on a
 * migration in post-copy answers Resumed with exactly the pages still missing and the last batch
 * applied; a wrong token, a second stream or a migration not in post-copy is refused; after the
 * final Complete a late resume gets Resumed(done) and the final acks again.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { VmSpec } from '../../hypervisor/types';
import { DroverError } from '../../lib/errors';
import { checksumBytes, ImageDigest } from '../wire/page-hash';
import { popcount, testBit } from '../wire/range-table';
import { frames, missingBitmapOf, type Ack, type Frame } from '../wire/protocol';
import { withIncoming } from './receiver-fixture';

const spec: VmSpec = { name: 'rr', memBytes: 16 * 2 ** 20, vcpus: 1, profile: 'idle', seed: 5 };
const PAGES = spec.memBytes / 4096;
type Start = Extract<Frame, { kind: 'start' }>;
const resume = (attempt: number, token = 'tok'): Start => frames.resume('m-rr', token, 4096, PAGES, attempt) as Start;
const zeroBatch = (seq: number, first: number, count: number): Frame => ({ kind: 'batch', seq, ranges: [], zeroRanges: [first, count], checksum: 0, payload: Buffer.alloc(0), encoding: 0 });
const resumedOf = (acks: Ack[]): Extract<Ack, { kind: 'resumed' }> => {
  const r = acks[0];
  assert.equal(r.kind, 'resumed');
  return r as Extract<Ack, { kind: 'resumed' }>;
};

const refusedWith = (f: () => unknown, code: string, re: RegExp): void =>
  assert.throws(f, (e: unknown) => e instanceof DroverError && e.code === code && re.test(e.message));

test('a resume in post-copy names exactly the pages still missing and the last batch applied', () => withIncoming(spec, 'm-rr', async (m, device) => {
  refusedWith(() => m.resume(resume(1)), 'FAILED_PRECONDITION', /not in post-copy \(state prepared\)/);
  m.start(frames.start('m-rr', 'tok', 4096, PAGES) as Start);
  const hot = m.domain.postcopy!.hotPages;
  const first = hot + 10;
  await m.apply(frames.postcopySwitch(0, 2, Date.now(), [first, 5], { state: device, checksum: checksumBytes(device) }));
  assert.equal(m.state, 'postcopy');
  refusedWith(() => m.resume(resume(1, 'other')), 'PERMISSION_DENIED', /wrong token/);
  refusedWith(() => m.resume({ ...resume(1), streamCount: 2 }), 'INVALID_ARGUMENT', /one stream/);
  refusedWith(() => m.resume({ ...resume(1), resume: 0 }), 'FAILED_PRECONDITION', /without resume/);
  refusedWith(() => m.resume({ ...resume(1), protocolVersion: 2 }), 'FAILED_PRECONDITION', /source speaks protocol 2/);
  refusedWith(() => m.resume({ ...resume(1), pageCount: PAGES + 1 }), 'INVALID_ARGUMENT', /resume: geometry mismatch/);
  refusedWith(() => m.resume({ ...resume(1, 'other'), pageCount: PAGES + 1 }), 'PERMISSION_DENIED', /wrong token/);
  refusedWith(() => m.start(frames.start('m-rr', 'tok', 4096, PAGES) as Start), 'FAILED_PRECONDITION', /already started/);

  m.detach();
  let r = resumedOf(m.resume(resume(1)));
  let missing = missingBitmapOf(r.missing, PAGES);
  assert.equal(popcount(missing), 5);
  for (let p = first; p < first + 5; p++) assert.ok(testBit(missing, p), `page ${p} is missing`);
  assert.deepEqual([r.batches, r.done], [0, false]);
  assert.ok(r.resumedAtMs > 0, 'the switch resume time');

  await m.apply(zeroBatch(1, first, 2));
  r = resumedOf(m.resume(resume(2)));
  missing = missingBitmapOf(r.missing, PAGES);
  assert.equal(popcount(missing), 3, 'the pages that landed are not named again');
  assert.equal(r.batches, 1, 'batches number on from the last applied');
  await m.apply(zeroBatch(2, first + 2, 3));
  const final = await m.apply(frames.complete(new ImageDigest(PAGES).digest(), 2, 2, 0, true, 0));
  assert.deepEqual(final.map((a) => a.kind), ['verified', 'postcopyDone']);
  const done = final[1] as Extract<Ack, { kind: 'postcopyDone' }>;
  assert.equal(done.recoveries, 2);
  assert.ok((done.stalledMs ?? -1) >= 0);
  assert.equal(m.state, 'active');

  const late = m.resume(resume(3));
  assert.equal(resumedOf(late).done, true, 'a resume after the final Complete says post-copy is done');
  assert.deepEqual(late.map((a) => a.kind), ['resumed', 'verified', 'postcopyDone']);
}));
