/**
 * Property-based: random and mutated frames (valid encoded frames with bytes flipped, inserted or
 * deleted; random range tables and field values) never crash the receiver or the agent. Every
 * bad input gets a DroverError / gRPC status with a message, and a bystander VM on the same
 * agent keeps passing its guest check with a growing heartbeat. Bounded: < 60 s.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { startAgents, stopAgents, waitFor, type TestAgent } from '../support/agents';
import { ReceiverClientConn } from '../../migration/transport/receiver-client';
import { BatchBuilder, decodeFrame, encodeFrame } from '../../migration/wire/frame-codec';
import { frames, type Frame } from '../../migration/wire/protocol';
import { IncomingMigration } from '../../migration/receiver/receiver';
import { SimHypervisor } from '../../hypervisor/sim/sim-hypervisor';
import { DroverError } from '../../lib/errors';
import type { VmSpec } from '../../hypervisor/types';

const MiB = 2 ** 20;
const PAGES = (16 * MiB) / 4096;
const spec = (name: string): VmSpec => ({ name, memBytes: 16 * MiB, vcpus: 1, profile: 'idle' });

/** Valid encoded frames of every kind after Start, to mutate. */
function seeds(): Buffer[] {
  const b = new BatchBuilder(2 * 4096, 4);
  b.payloadView().fill(7, 0, 2 * 4096);
  const batch = Buffer.from(b.finish(1, [10, 2], [100, 3], 0x1234, 2 * 4096));
  return [
    encodeFrame(frames.round(1, PAGES, [0, PAGES])), encodeFrame(frames.round(2, 5, [5, 5])), batch,
    encodeFrame(frames.complete(Buffer.alloc(32, 1), 1, 1, Date.now(), true, 2)), encodeFrame(frames.activate()),
    encodeFrame(frames.abort('because')), encodeFrame({ kind: 'stream', data: Buffer.from('abc'), channel: 1, eof: false }),
  ];
}

type Mutation = { op: 'flip' | 'insert' | 'delete'; at: number; byte: number };
const mutationArb = fc.record({ op: fc.constantFrom<Mutation['op']>('flip', 'insert', 'delete'), at: fc.nat(), byte: fc.integer({ min: 0, max: 255 }) });

function mutate(bytes: Buffer, ms: Mutation[]): Buffer {
  let b = Buffer.from(bytes);
  for (const m of ms) {
    const at = b.length === 0 ? 0 : m.at % b.length;
    if (m.op === 'flip') { if (b.length) b[at] ^= m.byte || 1; }
    else if (m.op === 'insert') b = Buffer.concat([b.subarray(0, at), Buffer.from([m.byte]), b.subarray(at)]);
    else b = Buffer.concat([b.subarray(0, at), b.subarray(at + 1)]);
  }
  return b;
}

const rangesArb = fc.array(fc.oneof(fc.nat({ max: PAGES + 10 }), fc.integer({ min: 0, max: 2 ** 31 }), fc.constant(0)), { maxLength: 40 });
/** Frames with random field values (Round and PageBatch range tables above all). */
const randomFrameArb: fc.Arbitrary<Buffer> = fc.oneof(
  fc.tuple(fc.integer({ min: 0, max: 5 }), rangesArb).map(([r, t]) => encodeFrame(frames.round(r, t.length, t))),
  fc.tuple(rangesArb, rangesArb, fc.nat({ max: 3 })).map(([r, z, n]) =>
    encodeFrame({ kind: 'batch', seq: 1, ranges: r, zeroRanges: z, checksum: 0, payload: Buffer.alloc(n * 4096), encoding: 0 })),
  fc.uint8Array({ maxLength: 64 }).map((a) => Buffer.from(a)),
);
/** A mutated seed or a random frame. */
const inputArb: fc.Arbitrary<Buffer> = fc.oneof(
  fc.tuple(fc.nat({ max: 6 }), fc.array(mutationArb, { minLength: 1, maxLength: 4 })).map(([i, ms]) => mutate(seeds()[i], ms)),
  randomFrameArb,
);

/** A refusal is a DroverError with a short message naming something. */
function isClearRefusal(e: unknown): boolean {
  return e instanceof DroverError && e.message.length > 0 && Buffer.byteLength(e.message) <= 2048;
}

test('IncomingMigration: mutated and random frames are applied or refused with a DroverError', async () => {
  const hv = new SimHypervisor();
  try {
    let n = 0;
    await fc.assert(fc.asyncProperty(fc.array(inputArb, { minLength: 1, maxLength: 3 }), async (inputs) => {
      const m = new IncomingMigration(`m-f${n++}`, 'tok', await hv.createIncoming(spec(`f${n}`)));
      try {
        m.start(frames.start(m.migrationId, 'tok', 4096, PAGES) as Extract<Frame, { kind: 'start' }>);
        for (const bytes of inputs) {
          try {
            await m.apply(decodeFrame(bytes));
          } catch (e) {
            assert.ok(isClearRefusal(e), `not a clear refusal: ${String(e)}`);
            break; // the agent aborts the migration on the first refusal
          }
        }
      } finally {
        await m.domain.destroy();
      }
    }), { numRuns: 200, seed: 11 });
  } finally {
    await hv.close();
  }
});

let agents: TestAgent[] = [];
before(async () => { agents = await startAgents(1, 'fuzz'); });
after(async () => { await stopAgents(agents); });

/** Start, then `bytes`, then an Abort: the status the agent ends the stream with. */
function runStream(conn: ReceiverClientConn, start: Frame, bytes: Buffer): Promise<{ code: string; message: string }> {
  return new Promise((resolve) => {
    const ch = conn.open(20_000);
    ch.onAck(() => undefined, (e: DroverError) => resolve({ code: e.code, message: e.message }));
    ch.write(start);
    ch.write(bytes);
    ch.write(frames.abort('fuzz run over'));
  });
}

test('a real agent: mutated frames on Transfer get a clear status; a bystander VM keeps running', async () => {
  const a = agents[0];
  await a.client.createVm({ name: 'bystander', memBytes: 32 * MiB, vcpus: 1, profile: 'web', seed: 1 });
  const beats0 = (await a.client.getVm('bystander')).heartbeatBeats;
  const conn = new ReceiverClientConn(a.address);
  let n = 0;
  await fc.assert(fc.asyncProperty(inputArb, async (bytes) => {
    const r = await conn.prepare(spec(`t${n}`), `fuzz-src-${n++ % 3}`, '');
    const s = await runStream(conn, frames.start(r.migrationId, r.token, 4096, PAGES), bytes);
    assert.ok(s.code !== 'INTERNAL' && s.code !== 'UNKNOWN', `status ${s.code}: ${s.message}`);
    assert.ok(s.message.length > 0 && Buffer.byteLength(s.message) <= 512, `message: ${s.message}`);
    await conn.abort(r.migrationId, r.token).catch(() => undefined);
  }), { numRuns: 60, seed: 12 });
  assert.equal(a.proc.child.exitCode, null, 'the agent is still running');
  const v = await a.client.verifyVm('bystander');
  assert.ok(v.ok, `bystander guest check: ${v.detail}`);
  await waitFor('the bystander heartbeat to grow', async () => (await a.client.getVm('bystander')).heartbeatBeats > beats0);
  await waitFor('every fuzz reservation released', async () => (await a.client.nodeInfo()).memUsedBytes === 32 * MiB);
});
