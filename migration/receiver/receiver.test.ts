/**
 * The receiver's state machine on its own: which frames each state takes, the refusals (naming
 * the frame and the state), and the transitions the agent and the QEMU tunnel drive.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { VmSpec } from '../../hypervisor/types';
import { DroverError } from '../../lib/errors';
import { checksumBytes, ImageDigest } from '../wire/page-hash';
import { frames, TUNNEL_QEMU, type Frame } from '../wire/protocol';
import { withIncoming as incoming } from './receiver-fixture';

const spec: VmSpec = { name: 'r1', memBytes: 16 * 2 ** 20, vcpus: 1, profile: 'idle', seed: 3 };
const PAGES = spec.memBytes / 4096;

/** Runs `body` with a fresh incoming migration of `spec` (receiver-fixture.ts). */
const withIncoming = (body: Parameters<typeof incoming>[2], tunnel = ''): Promise<void> => incoming(spec, 'm-r', body, tunnel);

const start = (token = 'tok'): Extract<Frame, { kind: 'start' }> => frames.start('m-r', token, 4096, PAGES) as Extract<Frame, { kind: 'start' }>;

/** Asserts `p` fails with `code` and a message matching `re`. */
async function refused(p: Promise<unknown> | (() => unknown), code: string, re: RegExp): Promise<void> {
  const run = typeof p === 'function' ? Promise.resolve().then(p) : p;
  await assert.rejects(run, (e: unknown) => e instanceof DroverError && e.code === code && re.test(e.message));
}

test('page stream: prepared -> receiving -> device-loaded -> verified -> active', () => withIncoming(async (m, device) => {
  assert.equal(m.state, 'prepared');
  assert.ok(Number.isNaN(m.pausedAtMs));
  assert.equal(m.start(start()).kind, 'accepted');
  assert.equal(m.state, 'receiving');
  assert.deepEqual(await m.apply(frames.round(1, 0)), []);
  const empty = new ImageDigest(PAGES).digest();
  const out = await m.apply(frames.complete(empty, 0, 1, 1234, false, 0, { state: device, checksum: checksumBytes(device) }));
  assert.deepEqual(out.map((a) => a.kind), ['verified']);
  assert.equal(m.state, 'verified');
  assert.equal(m.pausedAtMs, 1234);
  assert.deepEqual((await m.apply(frames.activate())).map((a) => a.kind), ['activated']);
  assert.equal(m.state, 'active');
  assert.equal(m.domain.state(), 'running');
  assert.equal(m.pausedAtMs, 1234);
}));

test('frames out of state are refused naming the frame and the state', () => withIncoming(async (m) => {
  await refused(m.apply(frames.round(1, 0)), 'FAILED_PRECONDITION', /Round frame not allowed in state prepared/);
  m.start(start());
  await refused(m.apply(frames.activate()), 'FAILED_PRECONDITION', /Activate frame not allowed in state receiving/);
  await refused(m.apply(frames.complete(Buffer.alloc(8), 0, 1, 0, true, 0)), 'FAILED_PRECONDITION', /Complete frame not allowed in state receiving/);
  await refused(m.apply(frames.streamEof()), 'FAILED_PRECONDITION', /StreamData frame not allowed in state receiving \(not a tunnel\)/);
  await refused(m.apply(start()), 'FAILED_PRECONDITION', /a second Start frame/);
  await refused(() => m.start(start()), 'FAILED_PRECONDITION', /already started \(its token is used up\)/);
  await refused(m.apply(frames.abort('bye')), 'ABORTED', /source aborted migration m-r: bye/);
  assert.equal(m.state, 'receiving', 'refusals leave the state alone');
}));

test('a wrong token is refused and leaves the reservation prepared', () => withIncoming(async (m) => {
  await refused(() => m.start(start('nope')), 'PERMISSION_DENIED', /wrong token for migration m-r/);
  assert.equal(m.state, 'prepared');
}));

test('a bad device state is refused and the state stays receiving', () => withIncoming(async (m, device) => {
  m.start(start());
  await refused(m.apply(frames.complete(Buffer.alloc(8), 0, 1, 0, true, 0, { state: device, checksum: checksumBytes(device) ^ 1 })), 'INVALID_ARGUMENT', /device state checksum mismatch/);
  assert.equal(m.state, 'receiving');
}));

test('markAborted works from any state, repeats safely, and nothing is taken after it', () => withIncoming(async (m) => {
  m.start(start());
  m.markAborted();
  assert.equal(m.state, 'aborted');
  m.markAborted();
  assert.equal(m.state, 'aborted');
  await refused(m.apply(frames.round(2, 0)), 'FAILED_PRECONDITION', /Round frame not allowed in state aborted/);
  await refused(m.apply(frames.activate()), 'FAILED_PRECONDITION', /Activate frame not allowed in state aborted/);
}));

test('QEMU tunnel: Start goes to tunnel, page frames are refused, tunnelActivated makes it active', () => withIncoming(async (m) => {
  await refused(() => m.start(start()), 'FAILED_PRECONDITION', /source sends drover page stream, this target expects a qemu tunnel/);
  assert.equal(m.state, 'prepared');
  m.start(frames.startTunnel('m-r', 'tok', 4096, PAGES) as Extract<Frame, { kind: 'start' }>);
  assert.equal(m.state, 'tunnel');
  await refused(m.apply(frames.round(1, 0)), 'FAILED_PRECONDITION', /Round frame not allowed in state tunnel/);
  m.tunnelActivated(42);
  assert.equal(m.state, 'active');
  assert.equal(m.pausedAtMs, 42);
  await refused(async () => m.tunnelActivated(43), 'FAILED_PRECONDITION', /Complete frame not allowed in state active/);
}, TUNNEL_QEMU));

test('tunnelActivated is refused on a page stream', () => withIncoming(async (m) => {
  m.start(start());
  await refused(async () => m.tunnelActivated(1), 'FAILED_PRECONDITION', /Complete frame not allowed in state receiving/);
  assert.equal(m.state, 'receiving');
}));
