/**
 * The receiver refuses abusive input before doing any work: range tables out of bounds (Round's
 * prefault table, PageBatch data and zero ranges), a second prefault, frames with unknown fields,
 * and a peer's long Abort reason is cut before it is echoed.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Writer } from 'protobufjs';
import { SimHypervisor } from '../../hypervisor/sim/sim-hypervisor';
import type { VmSpec } from '../../hypervisor/types';
import { DroverError } from '../../lib/errors';
import { capText, MAX_STATUS_MESSAGE_BYTES, toServiceError } from '../../lib/grpc-status';
import { decodeAck, decodeFrame, encodeAck, encodeFrame } from '../wire/frame-codec';
import { acks, checkRangeTable, frames, MAX_ROUND_RANGES, type Frame } from '../wire/protocol';
import { IncomingMigration, MAX_PEER_TEXT_BYTES } from './receiver';

const spec: VmSpec = { name: 'b1', memBytes: 16 * 2 ** 20, vcpus: 1, profile: 'idle', seed: 5 };
const PAGES = spec.memBytes / 4096;

async function withReceiving(body: (m: IncomingMigration) => Promise<void>): Promise<void> {
  const hv = new SimHypervisor();
  try {
    const m = new IncomingMigration('m-b', 'tok', await hv.createIncoming(spec));
    m.start(frames.start('m-b', 'tok', 4096, PAGES) as Extract<Frame, { kind: 'start' }>);
    await body(m);
  } finally {
    await hv.close();
  }
}

async function refused(p: Promise<unknown>, code: string, re: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => e instanceof DroverError && e.code === code && re.test(e.message));
}

const batch = (ranges: number[], zeroRanges: number[], payloadPages = 0): Frame =>
  ({ kind: 'batch', seq: 1, ranges, zeroRanges, checksum: 0, payload: Buffer.alloc(payloadPages * 4096), encoding: 0 });

test('range tables: odd, empty, out of the domain, crossing a slot, too many pages, too many entries', () => {
  const bad: Array<[number[], RegExp]> = [
    [[0], /odd number of entries/],
    [[0, 0], /range 0 is empty/],
    [[PAGES - 1, 2], /out of range \(VM has 4096 pages\)/],
    [[2 ** 40, 1], /out of range/],
    [[-1, 1], /not a pair of page numbers/],
    [[0, PAGES, 0, 1], /names more pages \(4097 by range 1\) than the VM has \(4096\)/],
    [new Array<number>(MAX_ROUND_RANGES + 2).fill(1), /more than the limit of 131072/],
  ];
  for (const [t, re] of bad) assert.throws(() => checkRangeTable(t, PAGES, undefined, 'table'), (e: unknown) => e instanceof DroverError && e.code === 'INVALID_ARGUMENT' && re.test(e.message));
  assert.throws(() => checkRangeTable([1000, 100], PAGES, 1024, 'table'), /crosses a memory slot boundary/);
  assert.equal(checkRangeTable([0, 10, 20, 5], PAGES, 1024, 'table'), 15);
});

test('Round: a bad prefault table is refused before any prefault; a second prefault is refused', () => withReceiving(async (m) => {
  await refused(m.apply(frames.round(1, 1, [PAGES, 1])), 'INVALID_ARGUMENT', /round 1: prefault range table range \[4096, \+1\) is out of range/);
  await refused(m.apply(frames.round(2, 1, [0, 0])), 'INVALID_ARGUMENT', /round 2: prefault range table range 0 is empty/);
  assert.deepEqual(await m.apply(frames.round(1, PAGES, [0, PAGES])), []);
  await refused(m.apply(frames.round(1, PAGES, [0, PAGES])), 'INVALID_ARGUMENT', /a second prefault range table for migration m-b/);
}));

test('PageBatch: data and zero range tables are bounds-checked', () => withReceiving(async (m) => {
  await refused(m.apply(batch([PAGES, 1], [], 1)), 'INVALID_ARGUMENT', /batch 1: range table range \[4096, \+1\) is out of range/);
  await refused(m.apply(batch([], [0, PAGES, 0, PAGES])), 'INVALID_ARGUMENT', /batch 1: zero range table names more pages/);
  await refused(m.apply(batch([], [5, 0])), 'INVALID_ARGUMENT', /zero range table range 0 is empty/);
}));

test('a 100 KB Abort reason is cut before it is echoed; statuses are capped', () => withReceiving(async (m) => {
  const reason = 'x'.repeat(100_000);
  await assert.rejects(m.apply(frames.abort(reason)), (e: unknown) => e instanceof DroverError && e.code === 'ABORTED' && Buffer.byteLength(e.message) < MAX_PEER_TEXT_BYTES + 100 && e.message.endsWith('…'));
  const se = toServiceError(new DroverError('INVALID_ARGUMENT', 'é'.repeat(5000)));
  assert.ok(Buffer.byteLength(se.details) <= MAX_STATUS_MESSAGE_BYTES);
  assert.ok(se.details.endsWith('…'));
  assert.equal(capText('short'), 'short');
}));

/** `bytes` with field `id` (varint 1) appended inside the message at the outer level. */
function withExtraField(bytes: Buffer, id: number): Buffer {
  const w = Writer.create().uint32((id << 3) | 0).uint32(1).finish();
  return Buffer.concat([bytes, Buffer.from(w)]);
}

test('frames and acks with unknown fields are refused naming the field number', () => {
  const start = encodeFrame(frames.start('m-b', 'tok', 4096, PAGES));
  assert.equal(decodeFrame(start).kind, 'start');
  assert.throws(() => decodeFrame(withExtraField(start, 99)), (e: unknown) => e instanceof DroverError && e.code === 'INVALID_ARGUMENT' && /unknown field 99 in MigrationFrame/.test(e.message));
  // Inside Start: the outer field 1 (start) is length-delimited; rebuild it with an extra inner field.
  const inner = start.subarray(2);
  const extra = Buffer.concat([inner, Buffer.from([(42 << 3) & 0xff | 0x80, 42 >> 4, 1])]);
  const nested = Buffer.concat([Buffer.from([0x0a, extra.length]), extra]);
  assert.throws(() => decodeFrame(nested), /unknown field 42 in Start/);
  const ack = encodeAck(acks.batch(3, 4096));
  assert.equal(decodeAck(ack).kind, 'batch');
  assert.throws(() => decodeAck(withExtraField(ack, 77)), /unknown field 77 in MigrationAck/);
});
