/**
 * Post-copy between mutual-TLS agents (real `drover agent` processes): a guest that dirties
 * memory faster than the link moves it (mmuncher, and a `db` guest at a very high dirty rate)
 * switches to post-copy after the first pass, resumes on the target at once and verifies there
 * (the target's image digest equals the paused source's memory, the guest's own check passes);
 * the result carries the guest's page waits. Cancel after the switch is refused, saying why.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startAgents, stopAgents, sleep, waitFor, type TestAgent } from '../support/agents';
import { pkiFixture, type PkiFixture } from '../../lib/pki/pki-fixture';
import type { VmSpec } from '../../hypervisor/types';
import type { MigrationResult } from '../../migration/types';

const MiB = 2 ** 20;

let pki: PkiFixture;
let agents: TestAgent[] = [];

before(async () => {
  pki = await pkiFixture();
  agents = await startAgents(2, 'pc', [], { tls: { dir: pki.dir, client: await pki.identity({ role: 'controller', name: 'ctl' }) } });
});
after(async () => {
  await stopAgents(agents);
  pki.cleanup();
});

/** Checks a post-copy result verified, and that the guest runs and passes its check on b only. */
async function verifiedOnTarget(vm: string, r: MigrationResult): Promise<void> {
  const [a, b] = agents;
  assert.equal(r.outcome, 'succeeded', r.error);
  assert.equal(r.mode, 'postcopy');
  assert.equal(r.verified, true, 'the target image digest equals the paused source memory');
  assert.ok(typeof r.pageWaits === 'number' && r.pageWaits >= 0, 'the result counts the page waits');
  assert.ok(typeof r.allPresentMs === 'number' && r.allPresentMs >= 0, 'the result says when every page was present');
  const v = await b.client.getVm(vm);
  await sleep(200);
  const check = await b.client.verifyVm(vm);
  assert.equal(check.ok, true, check.detail);
  assert.ok(check.heartbeatBeats > v.heartbeatBeats, 'the guest runs on the target');
  assert.deepEqual((await a.client.listVms()).map((x) => x.spec.name), [], 'the source released its copy');
}

for (const spec of [
  { name: 'pc-mm', memBytes: 128 * MiB, vcpus: 1, profile: 'mmuncher', seed: 3 },
  { name: 'pc-db', memBytes: 128 * MiB, vcpus: 2, profile: 'db', dirtyRateBytesPerSec: 4096 * MiB, seed: 4 },
] as VmSpec[]) {
  test(`${spec.profile} at a dirty rate beyond the link migrates through post-copy and verifies`, async () => {
    const [a, b] = agents;
    await a.client.createVm(spec);
    try {
      const r = await a.client.migrateVm(spec.name, b.address, { verify: true, postcopy: 'always', bandwidthBytesPerSec: 256 * MiB }, undefined, '', 'pc-1');
      await verifiedOnTarget(spec.name, r);
    } finally {
      await b.client.destroyVm(spec.name).catch(() => undefined);
      await a.client.destroyVm(spec.name).catch(() => undefined);
    }
  });
}

test('cancel after the switch to post-copy is refused, saying why; the migration still verifies', async () => {
  const [a, b] = agents;
  const spec: VmSpec = { name: 'pc-cancel', memBytes: 128 * MiB, vcpus: 1, profile: 'mmuncher', wssBytes: 96 * MiB, seed: 5 };
  await a.client.createVm(spec);
  try {
    let id = '';
    let refusal: Error | undefined;
    const run = a.client.migrateVm(spec.name, b.address, { verify: true, postcopy: 'always', bandwidthBytesPerSec: 48 * MiB }, (e) => {
      id = e.migrationId;
      if (e.phase === 'activating' && !refusal) refusal = new Error('pending');
    }, '', 'pc-1');
    await waitFor('the switch to post-copy', () => refusal !== undefined, 60_000, 20);
    refusal = await a.client.cancelMigration(id).then(() => new Error('cancel was accepted'), (err: Error) => err);
    assert.match(refusal.message, /past switchover.*runs on the target/);
    await verifiedOnTarget(spec.name, await run);
  } finally {
    await b.client.destroyVm(spec.name).catch(() => undefined);
    await a.client.destroyVm(spec.name).catch(() => undefined);
  }
});
