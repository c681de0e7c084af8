/**
 * Post-copy recovery between mutual-TLS agents (real `drover agent` processes), the source
 * dialling the target through a TCP proxy the test cuts for real: every connection is reset and
 * new ones are refused for 3 s while post-copy runs. The target keeps the VM running (its vCPUs
 * wait for missing pages), the source reconnects with the same migration id and token, and the
 * migration completes and verifies: the target's image digest equals the paused source memory
 * and the guest's own check passes there. The result says how long the stream was down. A
 * migration over parallel streams (every one cut) resumes over one.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startAgents, stopAgents, sleep, waitFor, type TestAgent } from '../support/agents';
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
      await cut;
      assert.ok(switched, 'the migration switched to post-copy');
      assert.equal(r.outcome, 'succeeded', r.error);
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
      await waitFor('the target to log the resume', () => /post-copy resumed: the source reconnected/.test(b.proc.stderrTail()), 5000);
    } finally {
      await b.client.destroyVm(spec.name).catch(() => undefined);
      await a.client.destroyVm(spec.name).catch(() => undefined);
    }
  });
}
