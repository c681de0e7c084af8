/**
 * The compressor's choice: never and always as asked (always still sends raw what does not
 * shrink), nothing for a target that does not decode LZ4, and auto from the measured rates: on
 * a path where the bytes on the wire are the bottleneck it settles on LZ4, on one where encoding
 * is the bottleneck it settles on raw, and it re-tries the loser now and then. The rates are
 * simulated (acknowledgement times from a model of the path), so the test does not depend on
 * this machine's speed.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { BatchCompressor, MIN_SPANS, SPAN_BATCHES } from './batch-compressor';
import { fillPage } from '../../hypervisor/sim/layout';

const MiB = 2 ** 20;

/** One batch of sim guest pages (compress ~2:1). */
function simBatch(seed: number): Buffer {
  const b = Buffer.alloc(MiB);
  const w = new Uint32Array(b.buffer, b.byteOffset, b.length / 4);
  for (let p = 0; p < 256; p++) fillPage(w, p * 1024, seed * 256 + p, 1);
  return b;
}

/**
 * Sends `batches` batches through `c` over a simulated path: the link moves `linkMBps` of wire
 * bytes, encoding costs 1/`encodeMBps` per page byte; a batch is acknowledged when both are done
 * (a pipeline of the two). Returns how many batches went encoded.
 */
function run(c: BatchCompressor, batches: number, linkMBps: number, encodeMBps: number): number {
  const raw = simBatch(1);
  let cpuFree = 0, linkFree = 0, encoded = 0;
  for (let seq = 1; seq <= batches; seq++) {
    const out = c.encode(seq, raw);
    const cpuDone = cpuFree + (out ? raw.length / (encodeMBps * 1e3) : 0);
    cpuFree = cpuDone;
    const wire = out ? out.length : raw.length;
    linkFree = Math.max(linkFree, cpuDone) + wire / (linkMBps * 1e3);
    c.delivered(seq, linkFree);
    if (out) encoded++;
  }
  return encoded;
}

test('never encodes nothing; always encodes what shrinks and sends the rest raw', () => {
  const never = new BatchCompressor('never', true);
  assert.equal(never.encode(1, simBatch(1)), undefined);
  const always = new BatchCompressor('always', true);
  const e = always.encode(1, simBatch(2));
  assert.ok(e && e.length < MiB * 0.7, 'sim pages shrink');
  assert.equal(always.encode(2, randomBytes(MiB)), undefined, 'random bytes do not shrink: sent raw');
  assert.deepEqual({ batches: always.stats.batches, pageBytes: always.stats.pageBytes }, { batches: 1, pageBytes: MiB });
  assert.equal(always.stats.encodedBytes, e.length);
});

test('a target that does not decode LZ4 gets raw batches whatever the mode', () => {
  for (const mode of ['always', 'auto'] as const) assert.equal(new BatchCompressor(mode, false).encode(1, simBatch(1)), undefined);
});

test('auto settles on LZ4 where the link is the bottleneck (1 Gbit/s, encoding at 300 MB/s)', () => {
  const c = new BatchCompressor('auto', true);
  run(c, 4 * MIN_SPANS * SPAN_BATCHES, 125, 300);
  assert.equal(c.decision, 'lz4');
  const encoded = run(c, 20 * SPAN_BATCHES, 125, 300);
  assert.ok(encoded >= 16 * SPAN_BATCHES, `mostly encoded once decided (${encoded} of ${20 * SPAN_BATCHES})`);
  assert.ok(encoded < 20 * SPAN_BATCHES, 'raw is re-tried now and then');
});

test('auto settles on raw where encoding is the bottleneck (loopback 2 GB/s, encoding at 300 MB/s)', () => {
  const c = new BatchCompressor('auto', true);
  run(c, 4 * MIN_SPANS * SPAN_BATCHES, 2000, 300);
  assert.equal(c.decision, 'raw');
  const encoded = run(c, 40 * SPAN_BATCHES, 2000, 300);
  assert.ok(encoded <= 8 * SPAN_BATCHES, `mostly raw once decided (${encoded} of ${40 * SPAN_BATCHES} encoded)`);
  assert.ok(encoded > 0, 'LZ4 is re-tried now and then');
});

test('a round ending drops the spans it cut short (nothing measured across a drained window)', () => {
  const c = new BatchCompressor('auto', true);
  run(c, SPAN_BATCHES / 2, 125, 300);
  c.roundEnded();
  assert.equal(c.decision, undefined);
  run(c, 4 * MIN_SPANS * SPAN_BATCHES, 125, 300);
  assert.equal(c.decision, 'lz4');
});
