/**
 * Post-copy recovery between mutual-TLS agents (real `drover agent` processes), the source
 * dialling the target through a TCP proxy the test cuts for real: every connection is reset and
 * new ones are refused for 3 s while post-copy runs. The target keeps the VM running (its vCPUs
 * wait for missing pages), the source reconnects with the same migration id and token, and the
 * migration completes and verifies: the target's image digest equals the paused source memory
 * and the guest's own check passes there. The result says how long the stream was down. A
 * migration over parallel streams (every one cut) resumes over one. A cut longer than the
 * recovery window loses the VM, said on both sides, and neither claims it runs.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startAgents, stopAgents, sleep, waitFor, codeOf, type TestAgent } from '../support/agents';
import { POSTCOPY_RECOVER_WAIT_MS } from '../../migration/wire/protocol';
import { startTcpProxy, type TcpProxy } from '../support/tcp-proxy';
import { pkiFixture, type PkiFixture } from '../../lib/pki/pki-fixture';
import type { VmSpec } from '../../hypervisor/types';

const MiB = 2 ** 20;
/** How long the link stays cut (the figure). */
const CUT_MS = 3000;

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
      const log = b.proc.stderrTail(); // read at once: later lines push the resume out of the tail
      await cut;
      assert.ok(switched, 'the migration switched to post-copy');
      assert.equal(r.outcome, 'succeeded', `${r.error}; the target's log ends: ${log.slice(-1200)}`);
      assert.equal(r.mode, 'postcopy');
      assert.ok(proxy.stats.dropped > 0, 'the cut dropped the migration stream');
      assert.ok((r.postcopyRecoveries ?? 0) >= 1, `the source reconnected: ${JSON.stringify(r)}`);
      assert.ok((r.postcopyStalledMs ?? 0) >= CUT_MS * 0.8, `the stall is reported (${r.postcopyStalledMs} ms for a ${CUT_MS} ms cut)`);
      assert.equal(r.verified, true, 'the target image digest equals the paused source memory');
      const v = await b.client.getVm(spec.name);
      await sleep(200);
      const check = await b.client.verifyVm(spec.name);
      assert.equal(check.ok, true, check.detail);
      assert.ok(check.heartbeatBeats > v.heartbeatBeats, 'the guest runs on the target');
      assert.deepEqual((await a.client.listVms()).map((x) => x.spec.name), [], 'the source released its copy');
      assert.match(log, /post-copy resumed: the source reconnected/, 'the target logs the resume');
    } finally {
      await b.client.destroyVm(spec.name).catch(() => undefined);
      await a.client.destroyVm(spec.name).catch(() => undefined);
    }
  });
}

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
    await b.client.destroyVm(spec.name).catch(() => undefined);
    await a.client.destroyVm(spec.name).catch(() => undefined);
  }
});
