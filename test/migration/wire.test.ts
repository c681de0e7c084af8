/**
 * The data plane refuses bad peers with the right gRPC status and a message naming what was
 * wrong, and the target releases the reservation. A test client speaks the wire directly.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startAgents, stopAgents, waitFor, codeOf, type TestAgent } from '../support/agents';
import { ReceiverClientConn } from '../../migration/transport/receiver-client';
import { BatchBuilder, encodeFrame } from '../../migration/wire/frame-codec';
import { frames, MAX_FRAME_BYTES, type Frame } from '../../migration/wire/protocol';
import { DroverError } from '../../lib/errors';
import type { VmSpec } from '../../hypervisor/types';

let agents: TestAgent[] = [];
before(async () => { agents = await startAgents(1, 'wire'); });
after(async () => { await stopAgents(agents); });

const spec = (name: string): VmSpec => ({ name, memBytes: 16 * 2 ** 20, vcpus: 1, profile: 'idle' });
const PAGES = (16 * 2 ** 20) / 4096;

/** Sends `frames` on a Transfer stream and resolves with the status the target ends it with. */
function streamStatus(conn: ReceiverClientConn, out: (Frame | Buffer)[]): Promise<{ code: string; message: string }> {
  return new Promise((resolve) => {
    const ch = conn.open(20_000);
    ch.onAck(() => undefined, (e: DroverError) => resolve({ code: e.code, message: e.message }));
    for (const f of out) ch.write(f);
  });
}

async function prepared(name: string) {
  const conn = new ReceiverClientConn(agents[0].address);
  const r = await conn.prepare(spec(name), 'test', '');
  return { conn, r, start: frames.start(r.migrationId, r.token, 4096, PAGES) };
}

async function released(): Promise<void> {
  await waitFor('the target to release its reservation', async () => (await agents[0].client.nodeInfo()).memUsedBytes === 0);
}

test('version mismatch is FAILED_PRECONDITION naming both versions', async () => {
  const conn = new ReceiverClientConn(agents[0].address);
  // Protocol 2 (before the bulk channel and post-copy recovery) is refused by protocol 3 targets, naming both.
  const e = await codeOf(conn.prepare(spec('w0'), 'test', '', 2));
  assert.equal(e.code, 'FAILED_PRECONDITION');
  assert.match(e.message, /source speaks protocol 2, this target speaks 3/);
  const { conn: c2, r } = await prepared('w1');
  const s = await streamStatus(c2, [encodeFrame({ ...frames.start(r.migrationId, r.token, 4096, PAGES), protocolVersion: 4 } as Frame)]);
  assert.equal(s.code, 'FAILED_PRECONDITION');
  assert.match(s.message, /protocol 4.*speaks 3/);
  await c2.abort(r.migrationId, r.token);
  await released();
});

test('wrong token is PERMISSION_DENIED; unknown migration is NOT_FOUND', async () => {
  const { conn, r } = await prepared('w2');
  const s = await streamStatus(conn, [frames.start(r.migrationId, 'not-the-token', 4096, PAGES)]);
  assert.equal(s.code, 'PERMISSION_DENIED');
  assert.match(s.message, /wrong token/);
  const t = await streamStatus(conn, [frames.start('m-unknown', r.token, 4096, PAGES)]);
  assert.equal(t.code, 'NOT_FOUND');
  assert.match(t.message, /m-unknown/);
  // A stranger's bad token does not cancel the reservation: the real source can still start.
  assert.ok((await agents[0].client.nodeInfo()).memUsedBytes > 0);
  const ch = conn.open(10_000);
  const first = new Promise<string>((resolve) => ch.onAck((a) => resolve(a.kind), (e) => resolve(e.code)));
  ch.write(frames.start(r.migrationId, r.token, 4096, PAGES));
  assert.equal(await first, 'accepted');
  ch.write(frames.abort('test done'));
  ch.end();
  await released();
});

test('misaligned, out-of-range, bad-checksum, oversized and kind-less frames are INVALID_ARGUMENT', async () => {
  const cases: [string, (b: BatchBuilder) => Buffer, RegExp][] = [
    ['misaligned', (b) => b.finish(1, [20, 2], [], 0, 4096), /misaligned/],
    ['out of range', (b) => b.finish(1, [PAGES - 1, 2], [], 0, 8192), /out of range/],
    ['bad checksum', (b) => { b.payloadView().fill(5, 0, 4096); return b.finish(1, [20, 1], [], 12345, 4096); }, /checksum mismatch/],
    ['oversized', () => Buffer.concat([Buffer.from([0x1a]), Buffer.alloc(MAX_FRAME_BYTES + 1024)]), /exceeds the limit/],
    ['kind-less', () => Buffer.alloc(0), /no known kind/],
    ['out of order', (b) => b.finish(7, [20, 1], [], 0, 4096), /out of order/],
  ];
  for (const [what, make, re] of cases) {
    const { conn, start } = await prepared(`w-${what.replace(/ /g, '-')}`);
    const s = await streamStatus(conn, [start, make(new BatchBuilder(8192, 8))]);
    assert.equal(s.code, 'INVALID_ARGUMENT', `${what}: ${s.code} ${s.message}`);
    assert.match(s.message, re, what);
    await released();
  }
});

test('frames out of protocol order are FAILED_PRECONDITION', async () => {
  const { conn, start } = await prepared('w3');
  const s = await streamStatus(conn, [start, frames.complete(Buffer.alloc(8), 0, 1, 0, true, 0)]);
  assert.equal(s.code, 'FAILED_PRECONDITION');
  assert.match(s.message, /Complete frame not allowed in state receiving/);
  const { conn: c2, r } = await prepared('w4');
  const t = await streamStatus(c2, [frames.round(1, 0)]);
  assert.equal(t.code, 'FAILED_PRECONDITION');
  assert.match(t.message, /first frame must be Start/);
  await c2.abort(r.migrationId, r.token);
  await released();
});

test('a bad VM spec in PrepareIncoming is INVALID_ARGUMENT naming the field', async () => {
  const conn = new ReceiverClientConn(agents[0].address);
  const e = await codeOf(conn.prepare({ ...spec('w5'), profile: 'gamer' as never }, 'test', ''));
  assert.equal(e.code, 'INVALID_ARGUMENT');
  assert.match(e.message, /unknown profile "gamer"/);
  const f = await codeOf(conn.prepare({ ...spec('w6'), memBytes: 1000 }, 'test', ''));
  assert.equal(f.code, 'INVALID_ARGUMENT');
  assert.match(f.message, /memory 1000 bytes/);
});
