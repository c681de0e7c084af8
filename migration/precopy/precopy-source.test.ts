/**
 * The source engine against a real sim domain and an in-process target (the same receiver the
 * agent runs), joined by an in-memory frame channel: the protocol without the sockets.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SimHypervisor, type SimDomain } from '../../hypervisor/sim/sim-hypervisor';
import { PrecopySource, type FrameChannel, type PrecopySourceOptions } from './precopy-source';
import { resolvePolicy, type MigrationPolicy } from '../types';
import { IncomingMigration } from '../receiver/receiver';
import { channelInto } from '../receiver/receiver-fixture';
import { DroverError } from '../../lib/errors';
import { popcount, testBit } from '../wire/range-table';
import type { VmSpec } from '../../hypervisor/types';

/** Delay the slow target adds to each acknowledgement, ms. */
const ACK_DELAY_MS = 40;
const spec: VmSpec = { name: 'e1', memBytes: 32 * 2 ** 20, vcpus: 1, profile: 'web', seed: 5, dirtyRateBytesPerSec: 20 * 2 ** 20 };

/** A channel into `target`; `failAfterBatches` makes the stream break like a dead peer. */
function channelTo(target: IncomingMigration, failAfterBatches = Infinity): FrameChannel & { batches: number } {
  return channelInto(target, { failAfterBatches });
}

/** A source domain (of `srcSpec`), an incoming domain and its in-process receiver. */
interface Pair { src: SimDomain; dst: SimDomain; target: IncomingMigration }

/** Runs `body` with a fresh pair for migration `id`; the driver is closed after, whatever happens. */
async function withPair(s: VmSpec, id: string, body: (p: Pair) => Promise<void>, srcSpec: VmSpec = s): Promise<void> {
  const hv = new SimHypervisor();
  try {
    const src = await hv.createDomain(srcSpec);
    const dst = await hv.createIncoming(s);
    await body({ src, dst, target: new IncomingMigration(id, 'tok', dst) });
  } finally {
    await hv.close();
  }
}

/** The source engine of migration `id` from `src` into `target` over an in-memory channel. */
function engineFor(id: string, src: SimDomain, target: IncomingMigration, policy: Partial<MigrationPolicy>, extra: Partial<PrecopySourceOptions> = {}): PrecopySource {
  return new PrecopySource({ migrationId: id, token: 'tok', domain: src, policy: resolvePolicy(policy), sourceName: 'a', targetName: 'b', ...extra, channel: extra.channel ?? channelTo(target) });
}

test('pre-copy into an in-process target: the image verifies and the guest runs there', () => withPair(spec, 'm1', async ({ src, dst, target }) => {
  const r = await engineFor('m1', src, target, { verify: true }).run();
  assert.equal(r.outcome, 'succeeded');
  assert.equal(r.verified, true);
  assert.equal(target.state, 'active');
  assert.equal(dst.state(), 'running');
  assert.ok(r.nonzeroBytes > 0 && r.pageBytes >= r.nonzeroBytes);
  // The breakdown places the target's resume between Complete and the Verified ack (one clock here).
  const b = r.downtimeBreakdown!;
  assert.ok(b.resumeMs! > 0 && b.resumeMs! <= b.verifyMs, `resumeMs ${b.resumeMs} within verifyMs ${b.verifyMs}`);
  const check = await dst.guestCheck();
  assert.equal(check.ok, true, check.detail);
}));

test('the result tells the per-round fixed cost once there was a round after the first (the cost model learns it per node pair)', () => withPair(spec, 'm1b', async ({ src, target }) => {
  // A slow target (each acknowledgement 40 ms late) and a target below the 1 ms switchover overhead: pre-copy runs to its round limit.
  const ch = channelTo(target);
  const onAck = ch.onAck;
  ch.onAck = (a, e) => onAck((ack) => { setTimeout(() => a(ack), ACK_DELAY_MS); }, e);
  const r = await engineFor('m1b', src, target, { maxDowntimeMs: 0.5, maxRounds: 4, autoConverge: 'never' }, { channel: ch }).run();
  assert.equal(r.outcome, 'succeeded');
  assert.equal(r.stopReason, 'max-rounds');
  // Its size depends on the host's load (policy/round-overhead.test.ts checks the estimate itself); it is never more than a whole round.
  assert.ok(r.roundOverheadMs !== undefined && Number.isFinite(r.roundOverheadMs) && r.roundOverheadMs >= 0 && r.roundOverheadMs < r.totalMs / 2, `round overhead ${r.roundOverheadMs} ms of ${r.totalMs} ms`);
}));

test('a stream that breaks mid-round: the source resumes and unacknowledged pages are dirty again', () => withPair(spec, 'm2', async ({ src, dst, target }) => {
  const engine = engineFor('m2', src, target, {}, { channel: channelTo(target, 3) });
  src.getAndClearDirtyLog();
  await assert.rejects(engine.run(), (e: unknown) => e instanceof DroverError && e.code === 'UNAVAILABLE');
  assert.equal(src.state(), 'running');
  assert.equal(engine.currentPhase, 'failed');
  await src.pause();
  const dirty = src.peekDirtyLog();
  // No dirty bit is lost: every page whose content the target does not hold is dirty again.
  let differing = 0;
  for (let pfn = 0; pfn < src.pageCount; pfn++) {
    const a = Buffer.from(src.pageView(pfn, 1));
    const b = Buffer.from(dst.pageView(pfn, 1));
    if (!a.equals(b)) {
      differing++;
      assert.ok(testBit(dirty, pfn), `page ${pfn} differs on the target but is clean at the source`);
    }
  }
  assert.ok(differing >= 256, `the unsent batch's pages differ (${differing})`);
  assert.ok(popcount(dirty) >= differing);
  await src.resume();
  const check = await src.guestCheck();
  assert.equal(check.ok, true, check.detail);
}, { ...spec, dirtyRateBytesPerSec: 1 }));

test('cancel before switchover rolls back; the target copy is never activated', () => withPair(spec, 'm3', async ({ src, dst, target }) => {
  const abort = new AbortController();
  const engine = engineFor('m3', src, target, { bandwidthBytesPerSec: 4 * 2 ** 20 }, {
    signal: abort.signal,
    onProgress: (p) => { if (p.phase === 'precopy' && p.sentBytes > 2 ** 20) abort.abort(); },
  });
  await assert.rejects(engine.run(), (e: unknown) => e instanceof DroverError && e.code === 'CANCELLED');
  assert.equal(engine.currentPhase, 'cancelled');
  assert.equal(src.state(), 'running');
  assert.notEqual(target.state, 'active');
  assert.equal(dst.state(), 'incoming');
}));

/** A guest that rewrites 8 MiB flat out: far faster than a 32 MiB/s link moves pages. */
const muncher: VmSpec = { name: 'e4', memBytes: 64 * 2 ** 20, vcpus: 1, profile: 'mmuncher', wssBytes: 8 * 2 ** 20, seed: 9 };

test('auto-converge: a guest that outruns the link is throttled until pre-copy converges, and the copy verifies', () => withPair(muncher, 'm4', async ({ src, dst, target }) => {
  const r = await engineFor('m4', src, target, { verify: true, bandwidthBytesPerSec: 32 * 2 ** 20, maxDowntimeMs: 50 }).run();
  assert.equal(r.outcome, 'succeeded');
  assert.equal(r.verified, true, 'target memory equals the paused source');
  assert.ok((r.throttlePercent ?? 0) >= 20, `throttled to ${r.throttlePercent}%`);
  assert.equal(dst.state(), 'running');
  assert.equal((await dst.guestCheck()).ok, true, 'the guest runs its own check on the target');
}));

test('auto-converge: a throttled migration that is cancelled gives the guest its full speed back', () => withPair(muncher, 'm5', async ({ src, target }) => {
  const abort = new AbortController();
  const engine = engineFor('m5', src, target, { bandwidthBytesPerSec: 32 * 2 ** 20, maxDowntimeMs: 1 }, {
    signal: abort.signal,
    onProgress: () => { if (src.throttle > 0) abort.abort(); },
  });
  await assert.rejects(engine.run(), (e: unknown) => e instanceof DroverError && e.code === 'CANCELLED');
  assert.equal(src.throttle, 0);
  assert.equal(src.state(), 'running');
}));

test('nonzeroBytes counts every page the target got with content once: those the guest dirtied in round 1 (to_skip) too', () => withPair(spec, 'm-nz', async ({ src, target }) => {
  const r = await engineFor('m-nz', src, target, { verify: true }).run();
  assert.equal(r.outcome, 'succeeded');
  assert.equal(src.state(), 'paused', 'the source stays frozen at its pause (the target guest runs on and writes more)');
  let nonzero = 0;
  for (let p = 0; p < src.pageCount; p++) {
    if (!src.isZeroPage(p) && src.pageView(p, 1).some((x) => x !== 0)) nonzero++;
  }
  // The web guest never zeroes a page it wrote: the image's non-zero pages are exactly those sent with content.
  assert.equal(r.nonzeroBytes, nonzero * 4096, `nonzeroBytes ${r.nonzeroBytes} vs ${nonzero} non-zero pages in the image`);
  assert.ok(r.pageBytes >= r.nonzeroBytes);
}));
