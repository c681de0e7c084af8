/**
 * LZ4-encoded page batches: a batch built as the source builds it (BatchBuilder, encoding in the
 * trailer) decodes off the wire, applies and leaves the target's pages equal to the source's
 * (one range: decoded straight into guest RAM; several: through a buffer);
 * the receiver refuses, naming the batch, a length prefix that disagrees with the range table
 * (before decoding: no frame makes it allocate more than its pages), a block that does not
 * decode, and an encoding it does not know.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SimHypervisor } from '../../hypervisor/sim/sim-hypervisor';
import { PAGE_SIZE, type VmSpec } from '../../hypervisor/types';
import { DroverError } from '../../lib/errors';
import { BatchBuilder, decodeFrame } from '../wire/frame-codec';
import { foldChecksum, hashPage } from '../wire/page-hash';
import { lz4Encode } from '../wire/payload-codec';
import { acks, DECODABLE_ENCODINGS, encodingBit, frames, PAYLOAD_LZ4, PAYLOAD_RAW, type Frame } from '../wire/protocol';
import { IncomingMigration } from './receiver';

const spec: VmSpec = { name: 'enc', memBytes: 16 * 2 ** 20, vcpus: 1, profile: 'idle', fillBytes: 8 * 2 ** 20, seed: 3 };
const PAGES = spec.memBytes / PAGE_SIZE;
/** The batch's pages: 64 written pages of the source guest, past its header and index. */
const FIRST = 100, COUNT = 64;

type Batch = Extract<Frame, { kind: 'batch' }>;

async function withSourceAndTarget(body: (source: Buffer, m: IncomingMigration, target: (pfn: number) => Buffer) => Promise<void>): Promise<void> {
  const hv = new SimHypervisor();
  try {
    const src = await hv.createDomain(spec);
    await new Promise((r) => setTimeout(r, 300)); // the boot fill writes the pages
    await src.pause();
    const v = src.pageView(FIRST, COUNT);
    const source = Buffer.from(Buffer.from(v.buffer, v.byteOffset, v.byteLength)); // a copy
    const dst = await hv.createIncoming({ ...spec, name: 'enc-in' });
    const m = new IncomingMigration('m-enc', 'tok', dst);
    m.start(frames.start('m-enc', 'tok', PAGE_SIZE, PAGES) as Extract<Frame, { kind: 'start' }>);
    await body(source, m, (pfn) => { const t = dst.pageView(pfn, 1); return Buffer.from(t.buffer, t.byteOffset, t.byteLength); });
  } finally {
    await hv.close();
  }
}

/** The batch checksum of `raw` (COUNT pages from FIRST), as the source folds it. */
function checksumOf(raw: Buffer): number {
  const words = new Int32Array(raw.buffer, raw.byteOffset, raw.length >> 2);
  let c = 0;
  for (let p = 0; p < COUNT; p++) c = foldChecksum(c, FIRST + p, hashPage(words, p * (PAGE_SIZE >> 2)));
  return c;
}

/** Builds the batch as the engine does (BatchBuilder, LZ4 payload in place) and decodes it off the wire. */
function lz4BatchOffTheWire(raw: Buffer, ranges = [FIRST, COUNT]): Batch {
  const b = new BatchBuilder(2 ** 20, 2 * 256);
  const encoded = lz4Encode(raw);
  encoded.copy(b.payloadView(), 0);
  const f = decodeFrame(b.finish(1, ranges, [], checksumOf(raw), encoded.length, PAYLOAD_LZ4));
  assert.equal(f.kind, 'batch');
  return f as Batch;
}

async function refused(p: Promise<unknown>, re: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => e instanceof DroverError && e.code === 'INVALID_ARGUMENT' && re.test(e.message));
}

test('Accepted announces RAW and LZ4', () => {
  const a = acks.accepted();
  assert.equal(a.kind === 'accepted' && a.encodings, DECODABLE_ENCODINGS);
  assert.ok(DECODABLE_ENCODINGS & encodingBit(PAYLOAD_LZ4) && DECODABLE_ENCODINGS & encodingBit(PAYLOAD_RAW));
});

test('an LZ4 batch built as the source builds it decodes, applies and equals the source pages', () => withSourceAndTarget(async (source, m, target) => {
  const f = lz4BatchOffTheWire(source);
  assert.equal(f.encoding, PAYLOAD_LZ4);
  assert.ok(f.payload.length < source.length * 0.7, `sim pages compress (${f.payload.length} of ${source.length} bytes)`);
  const [ack] = await m.apply(f);
  assert.deepEqual(ack, acks.batch(1, COUNT * PAGE_SIZE), 'the ack counts page bytes, not encoded bytes');
  for (let p = 0; p < COUNT; p++) assert.ok(target(FIRST + p).equals(source.subarray(p * PAGE_SIZE, (p + 1) * PAGE_SIZE)), `page ${FIRST + p}`);
}));

test('an LZ4 batch of two ranges (decoded into a buffer, then copied) equals the source pages too', () => withSourceAndTarget(async (source, m, target) => {
  const half = COUNT / 2;
  const [ack] = await m.apply(lz4BatchOffTheWire(source, [FIRST, half, FIRST + half, half]));
  assert.deepEqual(ack, acks.batch(1, COUNT * PAGE_SIZE));
  for (let p = 0; p < COUNT; p++) assert.ok(target(FIRST + p).equals(source.subarray(p * PAGE_SIZE, (p + 1) * PAGE_SIZE)), `page ${FIRST + p}`);
}));

test('a length prefix that disagrees with the range table is refused before decoding', () => withSourceAndTarget(async (source, m) => {
  const f = lz4BatchOffTheWire(source);
  const lying = Buffer.from(f.payload);
  lying.writeUInt32LE(2 ** 31, 0); // a bomb: declares 2 GiB
  await refused(m.apply({ ...f, payload: lying }), /batch 1: LZ4 payload declares 2147483648 bytes but its ranges name 262144/);
}));

test('a block that does not decode, and an unknown encoding, are refused naming the batch', () => withSourceAndTarget(async (source, m) => {
  const f = lz4BatchOffTheWire(source);
  const broken = Buffer.from(f.payload.subarray(0, 64));
  await refused(m.apply({ ...f, payload: broken }), /batch 1: LZ4 payload (does not decode|decoded to)/);
  await refused(m.apply({ ...f, encoding: 1 }), /batch 1: unknown payload encoding 1/);
  await refused(m.apply({ ...f, encoding: 99 }), /batch 1: unknown payload encoding 99/);
}));
