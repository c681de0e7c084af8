/**
 * The receiver's payload-lifetime promise (receiver.ts apply): once apply settled it holds no view
 * of a frame's bytes, so the agent may reuse a receive buffer for the next frame (bulk-socket.ts).
 * Every frame here is decoded from one of a few reused wire buffers, and each buffer is
 * overwritten with garbage the moment its frame's apply settled: a receiver that kept a payload
 * view (a deferred copy, a batch held for later, a decode that reads its source late) would build
 * a wrong image, and the exact image digest at Complete, or the guest's own check, would fail.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SimHypervisor, type SimDomain } from '../../hypervisor/sim/sim-hypervisor';
import { PAGE_SIZE, type VmSpec } from '../../hypervisor/types';
import { PrecopySource, type FrameChannel } from '../precopy/precopy-source';
import { resolvePolicy, type MigrationPolicy } from '../types';
import { BatchBuilder, decodeFrame } from '../wire/frame-codec';
import { checksumBytes, foldChecksum, hashPage, ImageDigest } from '../wire/page-hash';
import { frames, PAYLOAD_LZ4, type Frame } from '../wire/protocol';
import { IncomingMigration } from './receiver';
import { channelInto, withIncoming } from './receiver-fixture';

/** A byte no sim page is made of: what an overwritten buffer holds. */
const GARBAGE = 0xa5;

/** What a reusing channel saw: frames by kind of payload, and how often a wire buffer carried another frame. */
interface Seen { reused: number; lz4OneRange: number; lz4Ranges: number; rawBatches: number }

/** A channel into `target` over reused wire buffers, overwritten once their frame applied; counts what it carried in `seen`. */
function reusingChannelTo(target: IncomingMigration, seen: Seen): FrameChannel {
  return channelInto(target, {
    reuseWithGarbage: GARBAGE,
    onFrame: (frame, reused) => {
      if (reused) seen.reused++;
      if (frame.kind !== 'batch') return;
      if (frame.encoding === PAYLOAD_LZ4) { if (frame.ranges.length === 2) seen.lz4OneRange++; else seen.lz4Ranges++; } else seen.rawBatches++;
    },
  });
}

/** Migrates a fresh guest of `spec` into an in-process receiver over a reusing channel; returns what the channel saw and the mode. */
async function migrateReusing(spec: VmSpec, policy: Partial<MigrationPolicy>): Promise<Seen & { mode: string }> {
  const hv = new SimHypervisor();
  try {
    const src: SimDomain = await hv.createDomain(spec);
    await new Promise((r) => setTimeout(r, 200)); // the guest writes its pages
    const dst = await hv.createIncoming({ ...spec, name: `${spec.name}-in` });
    const target = new IncomingMigration('m-reuse', 'tok', dst);
    const seen: Seen = { reused: 0, lz4OneRange: 0, lz4Ranges: 0, rawBatches: 0 };
    const r = await new PrecopySource({ migrationId: 'm-reuse', token: 'tok', domain: src, policy: resolvePolicy({ verify: true, ...policy }), sourceName: 'a', targetName: 'b', channel: reusingChannelTo(target, seen) }).run();
    assert.equal(r.outcome, 'succeeded', r.error);
    assert.equal(r.verified, true, 'the image digest the target built equals the source\'s');
    assert.equal(target.state, 'active');
    const check = await dst.guestCheck();
    assert.equal(check.ok, true, check.detail);
    assert.ok(seen.reused > 10, `wire buffers were reused (${seen.reused} times)`);
    return { ...seen, mode: r.mode };
  } finally {
    await hv.close();
  }
}

const spec: VmSpec = { name: 'reuse', memBytes: 32 * 2 ** 20, vcpus: 1, profile: 'web', seed: 11, fillBytes: 24 * 2 ** 20, dirtyRateBytesPerSec: 8 * 2 ** 20 };

test('raw batches overwritten right after apply: the image verifies and the guest checks out', async () => {
  const seen = await migrateReusing(spec, { compress: 'never' });
  assert.ok(seen.rawBatches > 0);
});

test('LZ4 batches (decoded into guest RAM, and through a buffer) overwritten right after apply: the image verifies', async () => {
  const seen = await migrateReusing(spec, { compress: 'always' });
  assert.ok(seen.lz4OneRange > 0, `batches of one range decode in place (${seen.lz4OneRange})`);
  assert.ok(seen.lz4Ranges > 0, `batches of several ranges decode through a buffer (${seen.lz4Ranges})`);
});

test('post-copy batches overwritten right after apply: every page lands and the image verifies', async () => {
  const seen = await migrateReusing({ ...spec, name: 'reuse-pc' }, { compress: 'never', postcopy: 'always' });
  assert.equal(seen.mode, 'postcopy');
});

test('batches of several streams out of order, Complete waiting for them, each buffer overwritten after apply: the digest matches', () => withIncoming({ name: 'reuse-ms', memBytes: 16 * 2 ** 20, vcpus: 1, profile: 'idle', seed: 3 }, 'm-ms', async (m, device) => {
  const pages = (16 * 2 ** 20) / PAGE_SIZE;
  m.start({ ...(frames.start('m-ms', 'tok', PAGE_SIZE, pages) as Extract<Frame, { kind: 'start' }>), streamIndex: 0, streamCount: 2 });
  const digest = new ImageDigest(pages);
  const wire = new BatchBuilder(8 * PAGE_SIZE, 4); // one buffer every batch is built and decoded in
  /** Batch `seq` of 8 pages from `pfn`, page i filled with seq * 16 + i, decoded from `wire`. */
  const batch = (seq: number, pfn: number): Frame => {
    const payload = wire.payloadView();
    let checksum = 0;
    for (let i = 0; i < 8; i++) {
      payload.fill(seq * 16 + i, i * PAGE_SIZE, (i + 1) * PAGE_SIZE);
      const h = hashPage(new Int32Array(payload.buffer, payload.byteOffset, 8 * PAGE_SIZE / 4), i * PAGE_SIZE / 4);
      digest.set(pfn + i, h);
      checksum = foldChecksum(checksum, pfn + i, h);
    }
    return decodeFrame(wire.finish(seq, [pfn, 8], [], checksum, 8 * PAGE_SIZE));
  };
  const order = [3, 1, 4, 2];
  const built = order.map((seq) => ({ seq, pfn: 100 + seq * 8 }));
  // Build the digest the source would send (every batch's pages), then apply in another order.
  for (const b of built) batch(b.seq, b.pfn);
  const complete = m.apply(frames.complete(digest.digest(), 4, 1, 5, false, 0, { state: device, checksum: checksumBytes(device) }));
  for (const b of built) {
    await m.apply(batch(b.seq, b.pfn));
    wire.buffer.fill(GARBAGE);
  }
  assert.deepEqual((await complete).map((a) => a.kind), ['verified']);
  for (const b of built) {
    const v = m.domain.pageView(b.pfn + 7, 1);
    assert.equal(v[0], b.seq * 16 + 7, `page ${b.pfn + 7} holds batch ${b.seq}'s bytes`);
  }
}));
