/**
 * The compressor's choice: never and always as asked (always still sends raw what does not
 * shrink), nothing for a target that does not decode LZ4, and auto from its model of measured
 * rates: where the link is the bottleneck (1 Gbit/s, the source's CPU a third busy) it settles on
 * LZ4, where the source's CPU is (loopback) on raw; it rechecks with raw runs while encoding.
 * The path is simulated (acknowledgement times, the CPU clock and LZ4's timing come from a
 * model), so the test does not depend on this machine's speed.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { BatchCompressor, RAW_RUN_BATCHES, RECHECK_BATCHES, SAMPLE_EVERY_DECIDED } from './batch-compressor';
import { fillPage } from '../../hypervisor/sim/layout';

const MiB = 2 ** 20;

/** One batch of sim guest pages (compress ~2:1). */
function simBatch(seed: number): Buffer {
  const b = Buffer.alloc(MiB);
  const w = new Uint32Array(b.buffer, b.byteOffset, b.length / 4);
  for (let p = 0; p < 256; p++) fillPage(w, p * 1024, seed * 256 + p, 1);
  return b;
}

/** A simulated path: the link moves `linkMBps` of wire bytes; the source spends `rawCpuMs` per batch, plus `encodeMs` to encode one. */
class Path {
  wall = 0;
  cpu = 0;
  private linkFree = 0;
  private calls = 0;
  private readonly raw = simBatch(1);
  readonly c: BatchCompressor;

  constructor(mode: 'auto' | 'always', readonly linkMBps: number, readonly rawCpuMs: number, readonly encodeMs: number) {
    // LZ4's timing: encode() reads the clock before and after; the second read is encodeMs later.
    this.c = new BatchCompressor(mode, true, () => this.cpu, () => (this.calls++ % 2 === 0 ? this.wall : this.wall + this.encodeMs));
  }

  /** Sends `batches` batches; returns how many went encoded. */
  send(batches: number, firstSeq = 1): number {
    let encoded = 0;
    for (let seq = firstSeq; seq < firstSeq + batches; seq++) {
      const out = this.c.encode(seq, this.raw);
      const busy = this.rawCpuMs + (out ? this.encodeMs : 0);
      this.wall += busy;
      this.cpu += busy;
      this.linkFree = Math.max(this.linkFree, this.wall) + (out ? out.length : this.raw.length) / (this.linkMBps * 1e3);
      this.c.delivered(seq, this.linkFree);
      if (this.linkFree > this.wall) this.wall = this.linkFree - 8; // the window keeps ~8 ms in flight: the source waits for the link
      if (out) encoded++;
    }
    return encoded;
  }
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
  for (const mode of ['always', 'auto'] as const) {
    const c = new BatchCompressor(mode, false);
    assert.equal(c.encode(1, simBatch(1)), undefined);
    assert.equal(c.reason, 'raw: the target does not decode LZ4');
  }
});

test('auto settles on LZ4 where the link is the bottleneck (1 Gbit/s; the source a third busy; LZ4 at 270 MB/s)', () => {
  const p = new Path('auto', 125, 2.7, 3.9);
  p.send(4 * RAW_RUN_BATCHES);
  assert.equal(p.c.decision, 'lz4', JSON.stringify(p.c.estimate));
  assert.ok(p.c.estimate!.cpuShare < 0.6, `the source is not CPU-bound (${p.c.estimate!.cpuShare})`);
  const n = 2 * RECHECK_BATCHES;
  const encoded = p.send(n, 1000);
  assert.ok(encoded >= n * 0.7 && encoded < n, `mostly encoded, with raw rechecks (${encoded} of ${n})`);
  assert.equal(p.c.decision, 'lz4', 'the rechecks confirm it');
  assert.match(p.c.reason, /^auto: LZ4: raw pages acknowledged at \d+(\.\d)? MB\/s with the source \d+% busy; LZ4 costs [\d.]+ CPU ms\/MiB at ratio 0\.\d\d, predicted \d+(\.\d)? MB\/s encoded \(beats raw by 1.2x\)$/);
});

test('auto settles on raw where the source CPU is the bottleneck (loopback 2 GB/s; 5 ms of CPU per raw MiB)', () => {
  const p = new Path('auto', 2000, 5, 3.9);
  p.send(4 * RAW_RUN_BATCHES);
  assert.equal(p.c.decision, 'raw', JSON.stringify(p.c.estimate));
  assert.match(p.c.reason, /^auto: raw: .* with the source (9\d|100)% busy; .*\(does not beat raw by 1.2x\)$/);
  assert.ok(p.c.estimate!.cpuShare > 0.9, `CPU-bound (${p.c.estimate!.cpuShare})`);
  const n = 10 * SAMPLE_EVERY_DECIDED;
  const encoded = p.send(n, 1000);
  assert.ok(encoded <= n / SAMPLE_EVERY_DECIDED + 1, `only the (rarer) samples go encoded (${encoded} of ${n})`);
});

test('a round ending drops the raw run it cut short', () => {
  const p = new Path('auto', 125, 2.7, 3.9);
  p.send(RAW_RUN_BATCHES / 2);
  p.c.roundEnded();
  assert.equal(p.c.decision, undefined);
  assert.match(p.c.reason, /^auto: raw, undecided/);
  p.send(4 * RAW_RUN_BATCHES, 500);
  assert.equal(p.c.decision, 'lz4');
});
