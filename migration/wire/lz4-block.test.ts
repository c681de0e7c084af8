/**
 * The in-place LZ4 block decoder against lz4-napi's encoder: every block it writes decodes to
 * the same bytes, straight into shared memory at an offset, and a malformed block is refused
 * without a byte written outside the output range.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { compressSync } from 'lz4-napi';
import { lz4DecodeInto, Lz4FormatError } from './lz4-block';
import { fillPage } from '../../hypervisor/sim/layout';

/** Bytes of lz4-napi's u32 length prefix before the block. */
const PREFIX = 4;
/** Guard bytes around the output that must stay untouched. */
const GUARD = 64;

/** Decodes `raw`'s LZ4 block into a SharedArrayBuffer between guard bytes; returns the output region and the guards' bytes. */
function roundTrip(raw: Buffer, block = compressSync(raw).subarray(PREFIX), len = raw.length): { out: Buffer; guards: Buffer } {
  const mem = Buffer.from(new SharedArrayBuffer(len + 2 * GUARD)).fill(0xa5);
  lz4DecodeInto(block, 0, block.length, mem, GUARD, len);
  return { out: Buffer.from(mem.subarray(GUARD, GUARD + len)), guards: Buffer.concat([mem.subarray(0, GUARD), mem.subarray(GUARD + len)]) };
}

/** Input made of pieces: random bytes, runs of one byte, short periodic patterns, repeats of earlier bytes. */
const pieces = fc.array(fc.oneof(
  fc.uint8Array({ minLength: 1, maxLength: 300 }).map((a) => Buffer.from(a)),
  fc.tuple(fc.integer({ min: 0, max: 255 }), fc.integer({ min: 1, max: 5000 })).map(([b, n]) => Buffer.alloc(n, b)),
  fc.tuple(fc.uint8Array({ minLength: 1, maxLength: 7 }), fc.integer({ min: 1, max: 3000 })).map(([p, n]) => Buffer.alloc(n, Buffer.from(p))),
), { minLength: 1, maxLength: 30 }).map((ps) => {
  const parts: Buffer[] = [];
  for (const p of ps) { parts.push(p); if (parts.length > 2 && p.length % 3 === 0) parts.push(parts[p.length % parts.length]); }
  return Buffer.concat(parts);
});

test('decodes what lz4-napi encodes, into shared memory at an offset', () => {
  fc.assert(fc.property(pieces, (raw) => {
    const { out, guards } = roundTrip(raw);
    assert.ok(out.equals(raw));
    assert.ok(guards.equals(Buffer.alloc(2 * GUARD, 0xa5)));
  }), { numRuns: 300 });
});

test('decodes a batch of sim guest pages, incompressible bytes and zeros', () => {
  const pages = Buffer.alloc(1 << 20);
  const w = new Uint32Array(pages.buffer, pages.byteOffset, pages.length / 4);
  for (let p = 0; p < 256; p++) fillPage(w, p * 1024, 1000 + p, 3);
  for (const raw of [pages, randomBytes(1 << 20), Buffer.alloc(1 << 20)]) assert.ok(roundTrip(raw).out.equals(raw));
});

test('a malformed block is refused and writes nothing outside its output', () => {
  const raw = Buffer.concat([randomBytes(3000), Buffer.alloc(5000, 7), randomBytes(100)]);
  const block = compressSync(raw).subarray(PREFIX);
  const cases: Array<[string, Buffer, number]> = [
    ['truncated', block.subarray(0, block.length - 50), raw.length],
    ['cut inside a length', Buffer.from([0xf0]), 20],
    ['offset before the output', Buffer.from([0x10, 0x41, 0x05, 0x00, 0x00]), 10],
    ['offset zero', Buffer.from([0x10, 0x41, 0x00, 0x00, 0x00]), 10],
    ['longer than the output', block, raw.length - 1],
    ['shorter than the output', block, raw.length + 1],
  ];
  for (const [what, b, len] of cases) {
    const mem = Buffer.from(new SharedArrayBuffer(len + 2 * GUARD)).fill(0xa5);
    assert.throws(() => lz4DecodeInto(b, 0, b.length, mem, GUARD, len), Lz4FormatError, what);
    assert.ok(mem.subarray(0, GUARD).equals(Buffer.alloc(GUARD, 0xa5)), `${what}: guard before`);
    assert.ok(mem.subarray(GUARD + len).equals(Buffer.alloc(GUARD, 0xa5)), `${what}: guard after`);
  }
});
