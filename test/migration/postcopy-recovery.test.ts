/**
 * Post-copy recovery between mutual-TLS agents (real `drover agent` processes), the source
 * dialling the target through a TCP proxy the test cuts for real: every connection is reset and
 * new ones are refused for 3 s while post-copy runs. The target keeps the VM running (its vCPUs
 * wait for missing pages), the source reconnects with the same migration id and token, and the
 * migration completes and verifies: the target's image digest equals the paused source memory
 * and the guest's own check passes there. The result says how long the stream was down. A
 * migration over parallel streams (every one cut) resumes over one. A cut longer than the
 * recovery window loses the VM, said on both sides, and neither claims it runs.
 *
 * A link that goes silent (no byte passes either way, nothing is reset) during post-copy is
 * noticed by the stall detectors within POSTCOPY_STALL_MS, not by gRPC's keepalive 15 s later:
 * the target drops the stream its waiting vCPUs depend on, the source gives it up and
 * reconnects, and the migration verifies; a connection whose path dies for good (new ones
 * pass) is replaced within seconds. A silence during pre-copy changes nothing: the migration
 * waits it out over the same stream.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startAgents, stopAgents, sleep, waitFor, codeOf, recordStderr, runsOnTargetOnly, destroyEverywhere, type TestAgent } from '../support/agents';
import { POSTCOPY_RECOVER_WAIT_MS } from '../../migration/wire/protocol';
import { CHANNEL_OPTIONS } from '../../lib/grpc-channel';
import { startTcpProxy, type TcpProxy } from '../support/tcp-proxy';
import { pkiFixture, type PkiFixture } from '../../lib/pki/pki-fixture';
import type { VmSpec } from '../../hypervisor/types';

const MiB = 2 ** 20;
/** How long the link stays cut, or silent (the figure). */
const CUT_MS = 3000;
/** How long gRPC's keepalive takes to call a silent connection dead (ping interval + its timeout). */
const KEEPALIVE_DEAD_MS = Number(CHANNEL_OPTIONS['grpc.keepalive_time_ms']) + Number(CHANNEL_OPTIONS['grpc.keepalive_timeout_ms']);
/** The soonest gRPC's keepalive can call a silent connection dead (a ping sent at once, then its timeout). */
const KEEPALIVE_SOONEST_MS = Number(CHANNEL_OPTIONS['grpc.keepalive_timeout_ms']);

let pki: PkiFixture;
let agents: TestAgent[] = [];
let proxy: TcpProxy;

before(async () => {
  pki = await pkiFixture();
  const client = await pki.identity({ role: 'controller', name: 'ctl' });
  agents = await startAgents(2, 'pcr', [], { tls: { dir: pki.dir, client } });
  proxy = await startTcpProxy(agents[1].address);
});
after(async () => {
  await proxy?.close();
  await stopAgents(agents);
  pki.cleanup();
});

for (const [spec, streams] of [
  [{ name: 'pcr-mm', memBytes: 128 * MiB, vcpus: 1, profile: 'mmuncher', wssBytes: 96 * MiB, seed: 11 }, 1],
  [{ name: 'pcr-db', memBytes: 128 * MiB, vcpus: 2, profile: 'db', dirtyRateBytesPerSec: 4096 * MiB, seed: 12 }, 1],
  [{ name: 'pcr-ms', memBytes: 128 * MiB, vcpus: 1, profile: 'mmuncher', wssBytes: 96 * MiB, seed: 13 }, 2],
] as [VmSpec, number][]) {
  test(`${spec.profile} over ${streams} stream(s): a post-copy stream cut for 3 s recovers by reconnecting, and the VM verifies on the target`, async () => {
    const [a, b] = agents;
    await a.client.createVm(spec);
    const targetLog = recordStderr(b.proc);
    try {
      let switched = false;
      let cut: Promise<void> | undefined;
      // 24 MiB/s keeps post-copy's push running for seconds after the switch: the cut lands inside it.
      const run = a.client.migrateVm(spec.name, proxy.address, { verify: true, postcopy: 'always', bandwidthBytesPerSec: 24 * MiB, streams }, (e) => {
        if (e.phase !== 'activating' || switched) return;
        switched = true;
        cut = sleep(200).then(() => proxy.cut(CUT_MS));
      }, '', 'pcr-1');
      const r = await run;
      const log = targetLog();
      await cut;
      assert.ok(switched, 'the migration switched to post-copy');
      assert.equal(r.outcome, 'succeeded', `${r.error}; the target's log ends: ${log.slice(-1200)}`);
      assert.equal(r.mode, 'postcopy');
      assert.ok(proxy.stats.dropped > 0, 'the cut dropped the migration stream');
      assert.ok((r.postcopyRecoveries ?? 0) >= 1, `the source reconnected: ${JSON.stringify(r)}`);
      assert.ok((r.postcopyStalledMs ?? 0) >= CUT_MS * 0.8, `the stall is reported (${r.postcopyStalledMs} ms for a ${CUT_MS} ms cut)`);
      assert.equal(r.verified, true, 'the target image digest equals the paused source memory');
      await runsOnTargetOnly(a, b, spec.name);
      assert.match(log, /post-copy resumed: the source reconnected/, 'the target logs the resume');
    } finally {
      await destroyEverywhere(spec.name, a, b);
    }
  });
}

test('mmuncher: a post-copy link that goes silent for 3 s (nothing reset) is dropped by the stall detectors, recovers by reconnecting, and verifies', async () => {
  const [a, b] = agents;
  const spec: VmSpec = { name: 'pcr-silent', memBytes: 128 * MiB, vcpus: 1, profile: 'mmuncher', wssBytes: 96 * MiB, seed: 15 };
  await a.client.createVm(spec);
  const targetLog = recordStderr(b.proc);
  try {
    let quiet: Promise<void> | undefined;
    const silencesBefore = proxy.stats.silences;
    const r = await a.client.migrateVm(spec.name, proxy.address, { verify: true, postcopy: 'always', bandwidthBytesPerSec: 24 * MiB }, (e) => {
      if (e.phase === 'activating' && !quiet) quiet = sleep(200).then(() => proxy.silence(CUT_MS));
    }, '', 'pcr-1');
    const log = targetLog();
    await quiet;
    assert.ok(quiet, 'the migration switched to post-copy');
    assert.equal(r.outcome, 'succeeded', `${r.error}; the target's log ends: ${log.slice(-1200)}`);
    assert.equal(r.mode, 'postcopy');
    assert.equal(proxy.stats.silences, silencesBefore + 1);
    assert.ok((r.postcopyRecoveries ?? 0) >= 1, `the silent stream was given up and the source reconnected: ${JSON.stringify(r)}`);
    assert.ok((r.postcopyStalledMs ?? 0) > 0, `the stall is reported: ${JSON.stringify(r)}`);
    assert.ok((r.postcopyStalledMs ?? Infinity) < KEEPALIVE_DEAD_MS, `the stall (${r.postcopyStalledMs} ms) ended before gRPC's keepalive (${KEEPALIVE_DEAD_MS} ms) would have noticed the silence`);
    assert.equal(r.verified, true, 'the target image digest equals the paused source memory');
    assert.match(log, /post-copy link stalled: dropping the stream/, 'the target\'s stall detector dropped the silent stream');
    assert.match(log, /post-copy resumed: the source reconnected/);
    await runsOnTargetOnly(a, b, spec.name);
  } finally {
    await destroyEverywhere(spec.name, a, b);
  }
});

test('mmuncher: a post-copy connection whose path dies silently (new connections pass) recovers over a new one long before the keepalive would notice', async () => {
  const [a, b] = agents;
  const spec: VmSpec = { name: 'pcr-deadpath', memBytes: 128 * MiB, vcpus: 1, profile: 'mmuncher', wssBytes: 96 * MiB, seed: 17 };
  await a.client.createVm(spec);
  const targetLog = recordStderr(b.proc);
  let quiet: Promise<void> | undefined;
  let silencedAt = 0;
  try {
    // The old connection stays silent for longer than gRPC's keepalive needs to call it dead: only the detectors end the wait sooner.
    const r = await a.client.migrateVm(spec.name, proxy.address, { verify: true, postcopy: 'always', bandwidthBytesPerSec: 24 * MiB }, (e) => {
      if (e.phase === 'activating' && !quiet) quiet = sleep(200).then(() => { silencedAt = Date.now(); return proxy.silence(KEEPALIVE_DEAD_MS + 5000, { existingOnly: true }); });
    }, '', 'pcr-1');
    const log = targetLog();
    assert.ok(quiet, 'the migration switched to post-copy');
    assert.equal(r.outcome, 'succeeded', `${r.error}; the target's log ends: ${log.slice(-1200)}`);
    assert.ok((r.postcopyRecoveries ?? 0) >= 1, `the source reconnected: ${JSON.stringify(r)}`);
    // The guest's stall: from the silence to the target taking the reconnection (its log's clock is this host's).
    const resumed = log.split('\n').filter((l) => l.includes(r.migrationId) && l.includes('incoming post-copy resume accepted')).map((l) => Date.parse((JSON.parse(l) as { time: string }).time));
    assert.ok(resumed.length > 0 && silencedAt > 0, `the target logged the resume: ${log.slice(-1200)}`);
    const stalledMs = resumed[0] - silencedAt;
    assert.ok(stalledMs < KEEPALIVE_SOONEST_MS, `the guest waited ${stalledMs} ms for the reconnection, less than gRPC's keepalive could ever take to call the dead connection dead (${KEEPALIVE_SOONEST_MS}-${KEEPALIVE_DEAD_MS} ms)`);
    assert.equal(r.verified, true, 'the target image digest equals the paused source memory');
    const check = await b.client.verifyVm(spec.name);
    assert.equal(check.ok, true, check.detail);
    assert.deepEqual((await a.client.listVms()).map((x) => x.spec.name), [], 'the source released its copy');
  } finally {
    proxy.speak();
    await quiet;
    await destroyEverywhere(spec.name, a, b);
  }
});

test('a link silent for 3 s during pre-copy is waited out over the same stream: no stall detection, no reconnection, the VM verifies', async () => {
  const [a, b] = agents;
  const spec: VmSpec = { name: 'pcr-pre-silent', memBytes: 128 * MiB, vcpus: 1, profile: 'web', fillBytes: 64 * MiB, seed: 16 };
  await a.client.createVm(spec);
  const targetLog = recordStderr(b.proc);
  try {
    let quiet: Promise<void> | undefined;
    const heldBefore = proxy.stats.heldBytes;
    // 16 MiB/s: round 1 runs for ~4 s, so the silence lands inside pre-copy; gRPC only: every batch passes the proxy (a bulk socket would not).
    const r = await a.client.migrateVm(spec.name, proxy.address, { verify: true, postcopy: 'never', bandwidthBytesPerSec: 16 * MiB, transport: 'grpc' }, (e) => {
      if (e.phase === 'precopy' && !quiet) quiet = sleep(500).then(() => proxy.silence(CUT_MS));
    }, '', 'pcr-1');
    const log = targetLog();
    await quiet;
    assert.ok(quiet, 'the migration ran pre-copy');
    assert.equal(r.outcome, 'succeeded', `${r.error}; the target's log ends: ${log.slice(-1200)}`);
    assert.notEqual(r.mode, 'postcopy');
    assert.ok(proxy.stats.heldBytes > heldBefore, 'the silence held migration bytes');
    assert.equal(r.postcopyRecoveries ?? 0, 0, 'no reconnection');
    assert.equal(r.verified, true);
    const ours = log.indexOf('pcr-pre-silent'); // the target's lines of this migration (an earlier test's stall comes before)
    assert.ok(ours >= 0, 'the target logged the migration');
    assert.doesNotMatch(log.slice(ours), /link stalled/, 'no stall detector fired in pre-copy');
    assert.equal((await b.client.verifyVm(spec.name)).ok, true);
  } finally {
    await destroyEverywhere(spec.name, a, b);
  }
});

test('a link cut for longer than the recovery window: both sides report the VM lost, and no node claims it runs', async () => {
  const [a, b] = agents;
  const spec: VmSpec = { name: 'pcr-long', memBytes: 128 * MiB, vcpus: 1, profile: 'mmuncher', wssBytes: 96 * MiB, seed: 14 };
  await a.client.createVm(spec);
  try {
    let cut: Promise<void> | undefined;
    const err = await codeOf(a.client.migrateVm(spec.name, proxy.address, { postcopy: 'always', bandwidthBytesPerSec: 8 * MiB }, (e) => {
      // A moment after the switch (the target has resumed the VM), then longer than the target waits.
      if (e.phase === 'activating' && !cut) cut = sleep(500).then(() => proxy.cut(POSTCOPY_RECOVER_WAIT_MS + 2000));
    }, '', 'pcr-1'));
    assert.ok(cut, `the migration reached the switch (${err.code}: ${err.message})`);
    assert.equal(err.code, 'DATA_LOSS');
    assert.match(err.message, /could not reconnect to the target within .* is LOST/);
    assert.deepEqual((await a.client.listVms()).map((x) => x.spec.name), [], 'the source destroyed its stale copy');
    await waitFor('the target to report the VM lost', () => /VM LOST in post-copy/.test(b.proc.stderrTail()), POSTCOPY_RECOVER_WAIT_MS + 10_000)
      .catch((err: Error) => { throw new Error(`${err.message}; its log ends: ${b.proc.stderrTail().slice(-1500)}`); });
    await waitFor('the target to release the memory', async () => (await b.client.nodeInfo()).memUsedBytes === 0);
    await cut;
    assert.deepEqual((await b.client.listVms()).map((x) => x.spec.name), [], 'the target does not claim the VM runs');
  } finally {
    await destroyEverywhere(spec.name, a, b);
  }
});
