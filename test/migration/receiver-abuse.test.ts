/**
 * A target agent cannot be abused through PrepareIncoming and Start: concurrent reservations
 * never exceed its capacity, a migration id is reserved once, a source holds a bounded number of
 * reservations, a failed Start releases its reservation at once, and a disk must be on an
 * allowed storage endpoint. A real agent process over gRPC.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startAgents, stopAgents, codeOf, type TestAgent } from '../support/agents';
import { ReceiverClientConn, type Reservation } from '../../migration/transport/receiver-client';
import { frames, type Frame } from '../../migration/wire/protocol';
import type { DroverError } from '../../lib/errors';
import type { VmSpec } from '../../hypervisor/types';
import { MAX_RESERVATIONS_PER_SOURCE } from '../../services/node-agent/vm-host';

const MiB = 2 ** 20;
const CAPACITY = 160 * MiB;
let agents: TestAgent[] = [];
before(async () => { agents = await startAgents(1, 'abuse', ['--mem-capacity', '160MiB', '--vcpus', '8']); });
after(async () => { await stopAgents(agents); });

const spec = (name: string, memBytes = 64 * MiB, disk?: string): VmSpec => ({ name, memBytes, vcpus: 1, profile: 'idle', ...(disk ? { disk } : {}) });
const used = async () => (await agents[0].client.nodeInfo()).memUsedBytes;

function streamStatus(conn: ReceiverClientConn, out: Frame[]): Promise<{ code: string; message: string }> {
  return new Promise((resolve) => {
    const ch = conn.open(20_000);
    ch.onAck(() => undefined, (e: DroverError) => resolve({ code: e.code, message: e.message }));
    for (const f of out) ch.write(f);
  });
}

async function settle(ps: Promise<Reservation>[]): Promise<{ ok: Reservation[]; errs: { code: string; message: string }[] }> {
  const rs = await Promise.allSettled(ps);
  const ok = rs.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
  const errs = rs.flatMap((r) => (r.status === 'rejected' ? [{ code: (r.reason as DroverError).code, message: (r.reason as DroverError).message }] : []));
  return { ok, errs };
}

test('concurrent PrepareIncoming never reserves more than the capacity', async () => {
  const conn = new ReceiverClientConn(agents[0].address);
  const { ok, errs } = await settle(Array.from({ length: 6 }, (_, i) => conn.prepare(spec(`cc${i}`), `src-${i}`, '')));
  assert.equal(ok.length, 2, `160 MiB fits two 64 MiB VMs, ${ok.length} were accepted`);
  for (const e of errs) { assert.equal(e.code, 'RESOURCE_EXHAUSTED'); assert.match(e.message, /memory free/); }
  assert.ok((await used()) <= CAPACITY);
  for (const r of ok) await conn.abort(r.migrationId, r.token);
  assert.equal(await used(), 0);
});

test('one migration id is reserved once, even concurrently (no orphaned domain holds capacity)', async () => {
  const conn = new ReceiverClientConn(agents[0].address);
  const { ok, errs } = await settle(Array.from({ length: 4 }, (_, i) => conn.prepare(spec(`dup${i}`, 16 * MiB), `dsrc-${i}`, 'm-same')));
  assert.equal(ok.length, 1);
  for (const e of errs) { assert.equal(e.code, 'ALREADY_EXISTS'); assert.match(e.message, /migration m-same is already prepared/); }
  assert.equal(await used(), 16 * MiB);
  await conn.abort(ok[0].migrationId, ok[0].token);
  assert.equal(await used(), 0);
});

test('a source holds at most MAX_RESERVATIONS_PER_SOURCE reservations', async () => {
  const conn = new ReceiverClientConn(agents[0].address);
  const held: Reservation[] = [];
  for (let i = 0; i < MAX_RESERVATIONS_PER_SOURCE; i++) held.push(await conn.prepare(spec(`ps${i}`, 16 * MiB), 'greedy', ''));
  const e = await codeOf(conn.prepare(spec('ps-over', 16 * MiB), 'greedy', ''));
  assert.equal(e.code, 'RESOURCE_EXHAUSTED');
  assert.match(e.message, new RegExp(`source node greedy .* \\(limit ${MAX_RESERVATIONS_PER_SOURCE} per source\\)`));
  const other = await conn.prepare(spec('ps-other', 16 * MiB), 'modest', '');
  for (const r of [...held, other]) await conn.abort(r.migrationId, r.token);
  assert.equal(await used(), 0);
});

test('a Start that fails (geometry, version) releases its reservation at once; a wrong token does not', async () => {
  const conn = new ReceiverClientConn(agents[0].address);
  const r = await conn.prepare(spec('fs1', 16 * MiB), 'fsrc', '');
  const bad = await streamStatus(conn, [frames.start(r.migrationId, 'wrong', 4096, 4096)]);
  assert.equal(bad.code, 'PERMISSION_DENIED');
  assert.equal(await used(), 16 * MiB, 'a wrong token leaves the reservation to its owner');
  const geo = await streamStatus(conn, [frames.start(r.migrationId, r.token, 4096, 12345)]);
  assert.equal(geo.code, 'INVALID_ARGUMENT');
  assert.match(geo.message, /geometry mismatch/);
  assert.equal(await used(), 0, 'released at once, not after the TTL');
  const r2 = await conn.prepare(spec('fs2', 16 * MiB), 'fsrc', '');
  const ver = await streamStatus(conn, [{ ...frames.start(r2.migrationId, r2.token, 4096, 4096), protocolVersion: 9 } as Frame]);
  assert.equal(ver.code, 'FAILED_PRECONDITION');
  assert.equal(await used(), 0);
});

test('a disk must be on an allowed storage endpoint (none configured: loopback only)', async () => {
  const conn = new ReceiverClientConn(agents[0].address);
  const far = 'nbd://10.9.8.7:10809/disk0';
  const c = await codeOf(agents[0].client.createVm(spec('dk1', 16 * MiB, far)));
  assert.equal(c.code, 'FAILED_PRECONDITION');
  assert.match(c.message, /disk nbd:\/\/10\.9\.8\.7:10809\/disk0 is not on an allowed storage endpoint.*only loopback/);
  const p = await codeOf(conn.prepare(spec('dk2', 16 * MiB, far), 'dsrc', ''));
  assert.equal(p.code, 'FAILED_PRECONDITION');
  assert.match(p.message, /10\.9\.8\.7:10809/);
  assert.equal(await used(), 0);
});

test('concurrent CreateVm never reserves more than the capacity, nor one name twice', async () => {
  const c = agents[0].client;
  const rs = await Promise.allSettled([...Array.from({ length: 4 }, (_, i) => c.createVm(spec(`cv${i}`))), c.createVm(spec('cv0'))]);
  const ok = rs.filter((r) => r.status === 'fulfilled').length;
  assert.equal(ok, 2, `160 MiB fits two 64 MiB VMs, ${ok} were created`);
  for (const r of rs) if (r.status === 'rejected') assert.match((r.reason as DroverError).code, /RESOURCE_EXHAUSTED|ALREADY_EXISTS/);
  const vms = await c.listVms();
  assert.equal(vms.length, 2);
  assert.ok((await used()) <= CAPACITY);
  for (const v of vms) await c.destroyVm(v.spec.name);
  assert.equal(await used(), 0);
});
