/**
 * The receiver's multi-stream rules (protocol.ts "Parallel streams"): a secondary stream joins
 * only with stream 0's join token, once, inside the count; batches land in any order, each seq
 * once; Complete waits until every batch up to its last seq was applied, and fails if the
 * migration is discarded while it waits.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { VmSpec } from '../../hypervisor/types';
import { DroverError } from '../../lib/errors';
import { checksumBytes, foldChecksum, hashPage, ImageDigest } from '../wire/page-hash';
import { BatchBuilder, decodeFrame } from '../wire/frame-codec';
import { frames, TUNNEL_QEMU, type Frame } from '../wire/protocol';
import { withIncoming as incoming } from './receiver-fixture';

const spec: VmSpec = { name: 'rs', memBytes: 16 * 2 ** 20, vcpus: 1, profile: 'idle', seed: 3 };
const PAGES = spec.memBytes / 4096;
type Start = Extract<Frame, { kind: 'start' }>;

/** Runs `body` with a fresh incoming migration of `spec` (receiver-fixture.ts). */
const withIncoming = (body: Parameters<typeof incoming>[2], tunnel = '', bulk?: Parameters<typeof incoming>[4]): Promise<void> => incoming(spec, 'm-s', body, tunnel, bulk);

const startOf = (index: number, count: number, token: string): Start => ({ ...(frames.start('m-s', token, 4096, PAGES) as Start), streamIndex: index, streamCount: count });

async function refused(p: Promise<unknown> | (() => unknown), code: string, re: RegExp): Promise<void> {
  const run = typeof p === 'function' ? Promise.resolve().then(p) : p;
  await assert.rejects(run, (e: unknown) => e instanceof DroverError && e.code === code && re.test(e.message));
}

/** Batch `seq` carrying page `pfn` filled with `value`; records it in `digest`. */
function batch(seq: number, pfn: number, value: number, digest: ImageDigest): Frame {
  const b = new BatchBuilder(4096, 2);
  const payload = b.payloadView();
  payload.fill(value, 0, 4096);
  const h = hashPage(new Int32Array(payload.buffer, payload.byteOffset, 1024), 0);
  digest.set(pfn, h);
  return decodeFrame(Buffer.from(b.finish(seq, [pfn, 1], [], foldChecksum(0, pfn, h), 4096)));
}

test('secondary streams join with the join token only, each index once, inside the count', () => withIncoming(async (m) => {
  await refused(() => m.start(startOf(1, 2, 'tok')), 'FAILED_PRECONDITION', /stream 1 must join with its join token/);
  const acc = m.start(startOf(0, 3, 'tok'));
  assert.ok(acc.kind === 'accepted' && acc.joinToken && acc.joinToken.length >= 32, 'stream 0 gets a join token');
  const join = acc.kind === 'accepted' ? acc.joinToken! : '';
  assert.equal(m.streams, 3);
  await refused(() => m.join(startOf(1, 3, 'tok')), 'PERMISSION_DENIED', /wrong join token/);
  await refused(() => m.join(startOf(3, 3, join)), 'INVALID_ARGUMENT', /stream 3 of 3 does not fit/);
  await refused(() => m.join(startOf(1, 2, join)), 'INVALID_ARGUMENT', /does not fit the 3 streams/);
  assert.equal(m.join(startOf(1, 3, join)).kind, 'accepted');
  await refused(() => m.join(startOf(1, 3, join)), 'FAILED_PRECONDITION', /stream 1 already joined/);
  assert.equal(m.join(startOf(2, 3, join)).kind, 'accepted');
}));

test('a one-stream migration has no join token and takes no secondary', () => withIncoming(async (m) => {
  const acc = m.start(startOf(0, 1, 'tok'));
  assert.equal(acc.kind === 'accepted' ? acc.joinToken : 'x', undefined);
  await refused(() => m.join(startOf(1, 2, '')), 'FAILED_PRECONDITION', /cannot join/);
}));

test('a QEMU tunnel runs over one stream only', () => withIncoming(async (m) => {
  await refused(() => m.start({ ...startOf(0, 2, 'tok'), tunnel: TUNNEL_QEMU }), 'INVALID_ARGUMENT', /tunnel runs over one stream/);
}, TUNNEL_QEMU));

test('batches land in any order once each; Complete waits for every batch up to its last seq', () => withIncoming(async (m, device) => {
  m.start(startOf(0, 2, 'tok'));
  const digest = new ImageDigest(PAGES);
  const b1 = batch(1, 10, 1, digest), b2 = batch(2, 11, 2, digest), b3 = batch(3, 12, 3, digest);
  assert.deepEqual((await m.apply(b2)).map((a) => a.kind), ['batch']);
  await refused(m.apply(b2), 'INVALID_ARGUMENT', /batch 2 arrived twice/);
  const complete = m.apply(frames.complete(digest.digest(), 3, 1, 5, false, 0, { state: device, checksum: checksumBytes(device) }));
  let settled = false;
  void complete.then(() => { settled = true; }, () => { settled = true; });
  await m.apply(b1);
  await new Promise((r) => setImmediate(r));
  assert.equal(settled, false, 'Complete waits while batch 3 is missing');
  await refused(m.apply(batch(4, 13, 4, new ImageDigest(PAGES))), 'INVALID_ARGUMENT', /batch 4 arrived after Complete named 3/);
  await m.apply(b3);
  assert.deepEqual((await complete).map((a) => a.kind), ['verified']);
  assert.equal(m.state, 'verified');
}));

test('Complete naming fewer batches than were applied is refused; a discard ends a waiting Complete', () => withIncoming(async (m, device) => {
  m.start(startOf(0, 2, 'tok'));
  const digest = new ImageDigest(PAGES);
  await m.apply(batch(2, 5, 9, digest));
  await refused(m.apply(frames.complete(digest.digest(), 1, 1, 5, false, 0, { state: device, checksum: checksumBytes(device) })), 'INVALID_ARGUMENT', /names 1 as the last batch but batch 2/);
}));

test('a migration discarded while Complete waits fails the Complete', () => withIncoming(async (m, device) => {
  m.start(startOf(0, 2, 'tok'));
  const waiting = m.apply(frames.complete(new ImageDigest(PAGES).digest(), 2, 1, 5, false, 0, { state: device, checksum: checksumBytes(device) }));
  m.markAborted();
  await refused(waiting, 'ABORTED', /discarded while Complete waited/);
}));

test('the bulk channel: offered only in the listener\'s mode, its sockets join as streams 1..N of 1+N, unknown modes refused', async () => {
  const listener = { mode: 'tls', port: 7777 };
  await withIncoming(async (m) => {
    const acc = m.start({ ...startOf(0, 2, 'tok'), bulk: 'tls' });
    assert.ok(acc.kind === 'accepted' && acc.bulkPort === 7777 && acc.joinToken, 'Accepted names the port and a join token');
    assert.equal(m.streams, 3, 'stream 0 plus two sockets');
    const join = acc.kind === 'accepted' ? acc.joinToken! : '';
    await refused(() => m.join({ ...startOf(1, 3, join), bulk: 'udp' }), 'INVALID_ARGUMENT', /unknown bulk channel "udp"/);
    assert.equal(m.join({ ...startOf(1, 3, join), bulk: 'tls' }).kind, 'accepted');
    assert.equal(m.join({ ...startOf(2, 3, join), bulk: 'tls' }).kind, 'accepted');
  }, '', listener);
  await withIncoming(async (m) => {
    const acc = m.start({ ...startOf(0, 1, 'tok'), bulk: 'tcp' });
    assert.equal(acc.kind === 'accepted' ? acc.bulkPort : -1, undefined, 'no offer in another mode: the batches stay on the Transfer stream');
    assert.equal(m.streams, 1);
  }, '', listener);
  await withIncoming(async (m) => {
    const acc = m.start({ ...startOf(0, 1, 'tok'), tunnel: TUNNEL_QEMU, bulk: 'tls' });
    assert.equal(acc.kind === 'accepted' ? acc.bulkPort : -1, undefined, 'a tunnel takes no bulk channel');
    assert.equal(m.streams, 1);
  }, TUNNEL_QEMU, listener);
  await withIncoming(async (m) => {
    const acc = m.start({ ...startOf(0, 1, 'tok'), bulk: 'tls' });
    assert.equal(acc.kind === 'accepted' ? acc.bulkPort : -1, undefined, 'a target without a listener offers nothing');
  });
  await withIncoming(async (m) => {
    await refused(() => m.start({ ...startOf(0, 1, 'tok'), bulk: 'quic' }), 'INVALID_ARGUMENT', /unknown bulk channel "quic"/);
  });
});
