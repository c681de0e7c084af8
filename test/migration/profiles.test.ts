/**
 * Every profile migrates between two agent processes over real sockets and verifies: the
 * target's memory equals the source's at pause, the guest's own check passes on the target,
 * the guest keeps running there and the source no longer hosts the VM.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { PROFILE_NAMES } from '../../hypervisor/types';
import { startAgents, stopAgents, sleep, type TestAgent } from '../support/agents';

let agents: TestAgent[] = [];
before(async () => { agents = await startAgents(2, 'prof'); });
after(async () => { await stopAgents(agents); });

for (const profile of PROFILE_NAMES) {
  test(`${profile} VM migrates live and verifies`, async () => {
    const [a, b] = agents;
    const name = `vm-${profile}`;
    await a.client.createVm({ name, memBytes: 128 * 2 ** 20, vcpus: 1, profile, seed: 7 });
    await sleep(300);
    const phases = new Set<string>();
    const r = await a.client.migrateVm(name, b.address, { verify: true, maxDowntimeMs: 5 }, (e) => phases.add(e.phase));
    assert.equal(r.outcome, 'succeeded');
    assert.equal(r.verified, true, 'target memory must equal source memory at pause');
    assert.ok(r.rounds >= 2, `at least one pre-copy round and the stop-and-copy (${r.rounds})`);
    assert.ok(r.downtimeMs > 0 && r.downtimeMs < 5000, `downtime ${r.downtimeMs}`);
    // Every page byte is on the wire, except what LZ4 saved on the batches it encoded (compression: auto).
    assert.ok(r.pageBytes > 0 && r.bytesSent + (r.compressedPageBytes ?? 0) - (r.compressedBytes ?? 0) >= r.pageBytes, `wire ${r.bytesSent}, pages ${r.pageBytes}`);
    for (const p of ['reserving', 'precopy', 'stopcopy', 'done']) assert.ok(phases.has(p), `phase ${p} reported`);
    assert.deepEqual((await a.client.listVms()).map((v) => v.spec.name), [], 'source discarded its copy');
    const before = await b.client.getVm(name);
    assert.equal(before.state, 'running');
    await sleep(200);
    const check = await b.client.verifyVm(name);
    assert.equal(check.ok, true, check.detail);
    assert.ok(check.heartbeatBeats > before.heartbeatBeats, 'guest keeps running on the target');
    await b.client.destroyVm(name);
  });
}
