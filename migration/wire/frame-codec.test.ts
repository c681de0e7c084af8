import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BatchBuilder, batchSeqOf, copyBytes, decodeFrame, encodeFrame, encodeAck, decodeAck } from './frame-codec';
import { messageType, TO_OBJECT } from '../../proto/load';
import { frames, acks, missingBitmapOf, validateBatch, MAX_FRAME_BYTES, PROTOCOL_VERSION } from './protocol';
import { DroverError } from '../../lib/errors';

test('a batch built in place decodes to the same ranges, checksum and payload', () => {
  const b = new BatchBuilder(3 * 4096, 8);
  const view = b.payloadView();
  view.fill(7, 0, 4096);
  view.fill(9, 4096, 8192);
  const bytes = b.finish(300, [5, 1, 1000000, 1], [7, 2], 0xdeadbeef, 8192);
  const f = decodeFrame(bytes);
  assert.equal(f.kind, 'batch');
  if (f.kind !== 'batch') return;
  assert.equal(f.seq, 300);
  assert.deepEqual(f.ranges, [5, 1, 1000000, 1]);
  assert.deepEqual(f.zeroRanges, [7, 2]);
  assert.equal(f.checksum, 0xdeadbeef);
  assert.equal(f.payload.length, 8192);
  assert.equal(f.payload[0], 7);
  assert.equal(f.payload[8191], 9);
  assert.equal(f.encoding, 0);
  assert.equal(validateBatch(f, 2_000_000, 262144, 4096), 2);
});

test('control frames and acks round-trip', () => {
  const s = decodeFrame(encodeFrame(frames.start('m1', 'tok', 4096, 256)));
  assert.deepEqual(s, { kind: 'start', protocolVersion: PROTOCOL_VERSION, migrationId: 'm1', token: 'tok', pageSize: 4096, pageCount: 256, streamIndex: 0, streamCount: 1 });
  const c = decodeFrame(encodeFrame(frames.complete(Buffer.from('01234567'), 10, 3, 123.5, true, 99)));
  assert.equal(c.kind, 'complete');
  if (c.kind === 'complete') assert.equal(c.imageDigest.toString(), '01234567');
  assert.deepEqual(decodeAck(encodeAck(acks.batch(4, 4096))), { kind: 'batch', seq: 4, bytes: 4096 });
  assert.equal(decodeAck(encodeAck(acks.activated(5.5))).kind, 'activated');
  // Protocol 2: the fence travels in Start, Owned comes back.
  const fence = { vmRevision: '42', job: 'j1', attempt: 2 };
  const sf = decodeFrame(encodeFrame(frames.start('m1', 'tok', 4096, 256, fence)));
  assert.deepEqual(sf.kind === 'start' ? sf.fence : undefined, fence);
  const o = decodeAck(encodeAck(acks.owned(true)));
  assert.equal(o.kind, 'owned');
  if (o.kind === 'owned') assert.equal(o.recorded, true);
});

test('bad frames are rejected with INVALID_ARGUMENT naming the problem', () => {
  const code = (f: () => unknown, re: RegExp) => assert.throws(f, (e: unknown) => e instanceof DroverError && e.code === 'INVALID_ARGUMENT' && re.test(e.message));
  code(() => decodeFrame(Buffer.alloc(0)), /no known kind/);
  code(() => decodeFrame(Buffer.from([0x1a, 0xff])), /malformed/);
  code(() => decodeFrame(Buffer.alloc(MAX_FRAME_BYTES + 1)), /exceeds the limit/);
  const b = new BatchBuilder(4096, 4);
  const f = decodeFrame(b.finish(1, [10, 2], [], 0, 4096));
  if (f.kind !== 'batch') throw new Error('kind');
  code(() => validateBatch(f, 100, 64, 4096), /misaligned/);
  const g = decodeFrame(b.finish(1, [99, 2], [], 0, 4096));
  if (g.kind !== 'batch') throw new Error('kind');
  code(() => validateBatch(g, 100, 64, 4096), /out of range/);
  const h = decodeFrame(b.finish(1, [63, 1, 64, 1], [], 0, 4096));
  if (h.kind !== 'batch') throw new Error('kind');
  code(() => validateBatch(h, 100, 64, 4096), /misaligned/);
  const k = decodeFrame(new BatchBuilder(8192, 4).finish(1, [63, 2], [], 0, 8192));
  if (k.kind !== 'batch') throw new Error('kind');
  code(() => validateBatch(k, 100, 64, 4096), /crosses a memory slot/);
});

test('QEMU tunnel StreamData: gathered chunks round-trip as frames and acks (views, no copy), eof and channel', async () => {
  const { encodeStream } = await import('./frame-codec');
  const a = Buffer.alloc(300_000, 1), b = Buffer.alloc(700_000, 2);
  const bytes = encodeStream([a, b]);
  const f = decodeFrame(bytes);
  assert.equal(f.kind, 'stream');
  if (f.kind !== 'stream') return;
  assert.equal(f.data.length, 1_000_000);
  assert.equal(f.data[299_999], 1);
  assert.equal(f.data[300_000], 2);
  assert.equal(f.data.buffer, bytes.buffer, 'a view of the received buffer');
  assert.equal(f.eof, false);
  assert.equal(f.channel, 0);
  assert.deepEqual(decodeFrame(encodeFrame(frames.streamEof())), { kind: 'stream', data: Buffer.alloc(0), channel: 0, eof: true });
  const ack = decodeAck(encodeStream([Buffer.from('rp')], 3, true, true));
  assert.deepEqual(ack, { kind: 'stream', data: Buffer.from('rp'), channel: 3, eof: true });
  assert.deepEqual(decodeAck(encodeAck({ kind: 'stream', data: Buffer.from('x'), channel: 0, eof: false })), { kind: 'stream', data: Buffer.from('x'), channel: 0, eof: false });
  // the same bytes through protobufjs (the contract) decode to the same frame
  const s = decodeFrame(encodeFrame(frames.startTunnel('m1', 'tok', 4096, 256)));
  assert.equal(s.kind === 'start' && s.tunnel, 'qemu');
  assert.equal(decodeAck(encodeAck({ ...acks.accepted(), postcopy: true } as any)).kind, 'accepted');
});

test('copyBytes copies exactly the range, into and out of shared memory, from unaligned offsets; refuses out of bounds', () => {
  const ram = Buffer.from(new SharedArrayBuffer(4 * 4096));
  for (let i = 0; i < ram.length; i++) ram[i] = (i * 7 + 3) & 0xff;
  const frame = Buffer.alloc(3 * 4096 + 17, 0xee);
  copyBytes(ram, 4096, frame, 17, 2 * 4096);
  assert.ok(frame.subarray(17, 17 + 2 * 4096).equals(ram.subarray(4096, 3 * 4096)));
  assert.equal(frame[16], 0xee, 'nothing before the range');
  assert.equal(frame[17 + 2 * 4096], 0xee, 'nothing after the range (no repeat of the value)');
  const target = Buffer.from(new SharedArrayBuffer(4 * 4096));
  copyBytes(frame, 17, target, 4096, 2 * 4096);
  assert.ok(target.subarray(4096, 3 * 4096).equals(ram.subarray(4096, 3 * 4096)));
  assert.equal(target[4095], 0);
  assert.equal(target[3 * 4096], 0);
  copyBytes(frame, 0, target, 0, 0); // nothing to copy
  assert.throws(() => copyBytes(frame, 17, target, 3 * 4096, 2 * 4096), RangeError);
  assert.throws(() => copyBytes(frame, frame.length - 10, target, 0, 4096), RangeError);
});

test('the batch and batch-ack fast paths read and write what protobufjs does', () => {
  const FrameType = messageType('MigrationFrame');
  const AckType = messageType('MigrationAck');
  const b = new BatchBuilder(2 * 4096, 8);
  b.payloadView().fill(3, 0, 8192);
  const built = b.finish(77, [1, 2], [9, 1, 20, 3], 0x12345678, 8192);
  assert.equal(batchSeqOf(built), 77);
  const slow = FrameType.toObject(FrameType.decode(built), TO_OBJECT).batch as Record<string, unknown>;
  const fast = decodeFrame(built);
  assert.equal(fast.kind, 'batch');
  if (fast.kind !== 'batch') return;
  assert.deepEqual({ seq: fast.seq, ranges: fast.ranges, zeroRanges: fast.zeroRanges, checksum: fast.checksum }, { seq: slow.seq, ranges: slow.ranges, zeroRanges: slow.zeroRanges, checksum: slow.checksum });
  assert.ok(fast.payload.equals(slow.payload as Buffer));
  // protobufjs' own field order (payload first, encoding written) decodes the same way.
  const other = encodeFrame({ kind: 'batch', seq: 5, ranges: [3, 1], zeroRanges: [], checksum: 1, payload: Buffer.alloc(4096, 1), encoding: 0 });
  const o = decodeFrame(other);
  assert.equal(o.kind === 'batch' && o.seq, 5);
  // An unknown field inside a batch is still refused (the fast path hands it to protobufjs).
  const small = new BatchBuilder(4096, 4).finish(2, [], [4, 1], 0, 0);
  const inner = Buffer.concat([small.subarray(6), Buffer.from([0x38, 1])]);
  const bad = Buffer.concat([Buffer.from([0x1a, inner.length]), inner]);
  assert.throws(() => decodeFrame(bad), /unknown field 7/);
  const twice = Buffer.concat([small.subarray(6), Buffer.from([0x10, 3])]);
  const dup = decodeFrame(Buffer.concat([Buffer.from([0x1a, twice.length]), twice]));
  assert.equal(dup.kind === 'batch' && dup.seq, 3, 'a field given twice: protobufjs semantics (last wins)');
  assert.equal(batchSeqOf(Buffer.from('not a batch')), undefined);
  for (const [seq, bytes] of [[0, 0], [1, 4096], [0xffffffff, 2 ** 40 + 3]]) {
    const enc = encodeAck(acks.batch(seq, bytes));
    assert.deepEqual(AckType.toObject(AckType.decode(enc), TO_OBJECT).batch, { seq, bytes });
    assert.deepEqual(decodeAck(enc), { kind: 'batch', seq, bytes });
    assert.deepEqual(decodeAck(Buffer.from(AckType.encode(AckType.fromObject({ batch: { seq, bytes } })).finish())), { kind: 'batch', seq, bytes });
  }
});

test('post-copy recovery: Start(resume) and Resumed round-trip; a new Start carries no resume', () => {
  const s = decodeFrame(encodeFrame(frames.resume('m1', 'tok', 4096, 256, 3)));
  assert.equal(s.kind === 'start' && s.resume, 3);
  const plain = decodeFrame(encodeFrame(frames.start('m1', 'tok', 4096, 256)));
  assert.equal(plain.kind === 'start' && 'resume' in plain, false);
  const missing = new Uint32Array([0x10, 0x80000001]);
  const r = decodeAck(encodeAck(acks.resumed(missing, 41, 1234.5, false)));
  assert.ok(r.kind === 'resumed');
  assert.deepEqual([...missingBitmapOf(r.missing, 64)], [...missing]);
  assert.deepEqual([r.batches, r.resumedAtMs, r.done], [41, 1234.5, false]);
  const d = decodeAck(encodeAck(acks.postcopyDone(1, 2, 3, 4, 3012.5, 1)));
  assert.ok(d.kind === 'postcopyDone' && d.stalledMs === 3012.5 && d.recoveries === 1);
});
