/**
 * Post-copy between mutual-TLS agents (real `drover agent` processes): a guest that dirties
 * memory faster than the link moves it (mmuncher, and a `db` guest at a very high dirty rate)
 * switches to post-copy after the first pass, resumes on the target at once and verifies there
 * (the target's image digest equals the paused source's memory, the guest's own check passes);
 * the result carries the guest's page waits. Cancel after the switch is refused, saying why.
 * `--postcopy never` keeps such a guest on pre-copy, which ends by throttling it. Killing the
 * source agent after the switch loses the VM: it never reconnects, so once its wait for the
 * source ends the target says so in its log and destroys its copy, and no node claims the VM runs. Bad post-copy flags are one usage line, exit 2.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { usageErrorLine } from '../support/cli';
import { startAgents, stopAgents, waitFor, codeOf, runsOnTargetOnly, destroyEverywhere, type TestAgent } from '../support/agents';
import { pkiFixture, type PkiFixture } from '../../lib/pki/pki-fixture';
import type { VmSpec } from '../../hypervisor/types';
import type { MigrationResult } from '../../migration/types';
import { POSTCOPY_RECOVER_WAIT_MS } from '../../migration/wire/protocol';

const MiB = 2 ** 20;

let pki: PkiFixture;
let agents: TestAgent[] = [];
let client: Awaited<ReturnType<PkiFixture['identity']>>;

before(async () => {
  pki = await pkiFixture();
  client = await pki.identity({ role: 'controller', name: 'ctl' });
  agents = await startAgents(2, 'pc', [], { tls: { dir: pki.dir, client } });
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
  await runsOnTargetOnly(a, b, vm);
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
      await destroyEverywhere(spec.name, a, b);
    }
  });
}

test('--postcopy auto (the CLI default): a guest beyond 2x the link goes to post-copy after the first pass, and the result says why', async () => {
  const [a, b] = agents;
  const spec: VmSpec = { name: 'pc-auto', memBytes: 128 * MiB, vcpus: 1, profile: 'mmuncher', seed: 9 };
  await a.client.createVm(spec);
  try {
    const r = await a.client.migrateVm(spec.name, b.address, { verify: true, postcopy: 'auto', bandwidthBytesPerSec: 128 * MiB }, undefined, '', 'pc-1');
    await verifiedOnTarget(spec.name, r);
    assert.equal(r.policy, 'postcopy');
    assert.equal(r.rounds, 2, 'the first pass, then the switch');
    assert.match(r.policyReason ?? '', /the guest dirties .*, the link moves .* \(more than 2x\): pre-copy cannot converge/);
    assert.equal(r.throttlePercent, undefined, 'no throttling');
  } finally {
    await destroyEverywhere(spec.name, a, b);
  }
});

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
    assert.match(refusal.message, /past switchover.*runs on the target.*only this node holds \(post-copy\): cancelling would lose the VM/);
    await verifiedOnTarget(spec.name, await run);
  } finally {
    await destroyEverywhere(spec.name, a, b);
  }
});

test('--postcopy never: a guest beyond the link stays on pre-copy, which converges by throttling it, and verifies', async () => {
  const [a, b] = agents;
  const spec: VmSpec = { name: 'pc-never', memBytes: 128 * MiB, vcpus: 1, profile: 'mmuncher', seed: 6 };
  await a.client.createVm(spec);
  try {
    const r = await a.client.migrateVm(spec.name, b.address, { verify: true, postcopy: 'never', bandwidthBytesPerSec: 256 * MiB }, undefined, '', 'pc-1');
    assert.equal(r.outcome, 'succeeded', r.error);
    assert.equal(r.mode, 'precopy');
    assert.ok((r.throttlePercent ?? 0) > 0, `the guest was throttled: ${JSON.stringify(r)}`);
    assert.equal(r.policy, 'throttle');
    assert.match(r.policyReason ?? '', /pre-copy stalled; the guest dirties .* throttle the guest/);
    assert.ok((r.throttledMs ?? 0) > 0, 'the result says how long the guest ran throttled');
    assert.equal(r.pageWaits, undefined, 'no post-copy, no page waits');
    assert.equal(r.verified, true);
    assert.equal((await b.client.verifyVm(spec.name)).ok, true);
  } finally {
    await destroyEverywhere(spec.name, a, b);
  }
});

test('the source agent killed after the switch: the VM is reported lost, and no node claims it runs', async () => {
  const [a, b] = await startAgents(2, 'pck', [], { tls: { dir: pki.dir, client } });
  try {
    const spec: VmSpec = { name: 'pc-kill', memBytes: 128 * MiB, vcpus: 1, profile: 'mmuncher', wssBytes: 96 * MiB, seed: 8 };
    await a.client.createVm(spec);
    let switched = false;
    const run = codeOf(a.client.migrateVm(spec.name, b.address, { postcopy: 'always', bandwidthBytesPerSec: 16 * MiB }, (e) => {
      if (e.phase === 'activating' && !switched) { switched = true; a.proc.kill(); }
    }, '', 'pck-1'));
    const err = await run;
    assert.ok(switched, `the migration reached the switch (${err.code}: ${err.message})`);
    // The target waits POSTCOPY_RECOVER_WAIT_MS for the source to reconnect before it gives the VM up.
    await waitFor('the target to report the VM lost', () => /VM LOST in post-copy/.test(b.proc.stderrTail()), POSTCOPY_RECOVER_WAIT_MS + 15_000);
    assert.deepEqual((await b.client.listVms()).map((x) => x.spec.name), [], 'the target does not claim the VM runs');
    await waitFor('the target to release the memory', async () => (await b.client.nodeInfo()).memUsedBytes === 0);
  } finally {
    await stopAgents([a, b]);
  }
});

test('bad post-copy flags are one usage line naming the flag, exit 2', () => {
  for (const [args, re] of [
    [['--postcopy', 'sometimes'], /--postcopy "sometimes" is not a post-copy mode \(expected never, auto, always\)/],
    [['--postcopy', 'always', '--no-postcopy'], /--no-postcopy and --postcopy always contradict each other/],
    [['--auto-converge', 'maybe'], /--auto-converge "maybe" is not an auto-converge mode \(expected never, auto\)/],
  ] as [string[], RegExp][]) {
    for (const cmd of [['migrate', 'v', '--from', '127.0.0.1:1', '--to', '127.0.0.1:2', '--insecure'], ['bench']]) {
      const line = usageErrorLine(...cmd, ...args);
      assert.match(line, re);
      assert.match(line, new RegExp(`${cmd[0]}: `), 'names the command');
    }
  }
});
