/**
 * A direct migration (no etcd) whose stream breaks after Complete: the source asks the target
 * what it did (SwitchoverOutcome) instead of staying paused for ever. Real mutual-TLS agent
 * processes; the break is put at an exact step by a failpoint in the target agent
 * (lib/failpoints.ts), which no external cut hits reliably inside a millisecond switchover:
 * - the stream drops as Complete arrives: the target never resumed the VM, so it answers
 *   not_owned and the source resumes; the VM runs on the source only and its guest check passes;
 * - the stream drops right after the target resumed the VM, before Owned: the target answers
 *   owned and the source discards its paused copy; the VM runs on the target only;
 * - the target agent dies (SIGKILL) and is restarted on the same address and state directory:
 *   its journal (services/node-agent/outcome-journal.ts) answers for the dead process. Died as
 *   Complete arrived: not_owned, the source resumes. Died after it resumed the guest: lost, the
 *   source reports the VM lost and discards its stale copy; nothing claims the VM runs.
 * - the target agent dies as Complete arrives and stays dead past the source's --outcome-wait:
 *   the VM is held paused on the source (vm show says which migration holds it), cannot migrate
 *   again, and `vm resume` settles it: resumed once the restarted target says it never ran the
 *   guest, or with --force when the target is gone for good; never without either.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { startAgents, stopAgents, codeOf, waitFor, type TestAgent } from '../support/agents';
import { startAgent } from '../../services/node-agent/agent-process';
import { agentTlsArgs } from '../../services/node-agent/local-agents';
import { AgentClient } from '../../services/node-agent/client/agent-client';
import { clientCredentials } from '../../lib/pki/grpc-credentials';
import { pkiFixture, type PkiFixture } from '../../lib/pki/pki-fixture';
import { FAILPOINTS_ENV, type Failpoint } from '../../lib/failpoints';
import type { VmSpec } from '../../hypervisor/types';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

const MiB = 2 ** 20;

let pki: PkiFixture | undefined;
let client: Awaited<ReturnType<PkiFixture['identity']>> | undefined;
const started: TestAgent[] = [];
after(async () => {
  await stopAgents(started);
  pki?.cleanup();
});

/**
 * A source agent and a target agent with failpoint `fp`, both mutual TLS. For a target that dies
 * at `fp`, `restart()` starts it again on the same address and state directory, without the
 * failpoint, once the first one is dead.
 */
async function pair(fp: Failpoint, tag = '', sourceArgs: string[] = []): Promise<{ a: TestAgent; b: TestAgent; restart: () => Promise<TestAgent> }> {
  pki ??= await pkiFixture();
  client ??= await pki.identity({ role: 'controller', name: 'ctl' });
  const [a] = await startAgents(1, `do-src-${fp}${tag}`, sourceArgs, { tls: { dir: pki.dir, client } });
  const nodeId = `do-dst-${fp}${tag}`;
  const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'do-state-'));
  const args = [...await agentTlsArgs(pki.dir, nodeId), '--state-dir', stateDir];
  const proc = await startAgent(nodeId, args, { [FAILPOINTS_ENV]: fp });
  const b: TestAgent = { proc, client: new AgentClient(proc.address, clientCredentials(client, { role: 'node', name: nodeId })), address: proc.address };
  await b.client.waitReady(10_000);
  started.push(a, b);
  const restart = async (): Promise<TestAgent> => {
    await waitFor('the target agent to die at the failpoint', async () => proc.child.exitCode !== null || proc.child.signalCode !== null, 30_000);
    const again = await startAgent(nodeId, args, {}, proc.address);
    const t: TestAgent = { proc: again, client: new AgentClient(again.address, clientCredentials(client!, { role: 'node', name: nodeId })), address: again.address };
    started.push(t);
    return t;
  };
  return { a, b, restart };
}

const spec = (name: string): VmSpec => ({ name, memBytes: 64 * MiB, vcpus: 1, profile: 'web', seed: 5 });

test('the stream drops as Complete arrives: the target says not_owned, the source resumes and the VM runs there only', async () => {
  const { a, b } = await pair('target-drop-on-complete');
  await a.client.createVm(spec('do-1'));
  const err = await codeOf(a.client.migrateVm('do-1', b.address, {}, undefined, '', b.proc.nodeId));
  assert.equal(err.code, 'ABORTED', err.message);
  assert.match(err.message, /the target does not own the VM after Complete .*; the source resumed/);
  const v = await a.client.getVm('do-1');
  assert.equal(v.state, 'running', 'resumed on the source, not left paused');
  assert.deepEqual((await b.client.listVms()).map((x) => x.spec.name), [], 'the target does not run it');
  const beats = v.heartbeatBeats;
  await waitFor('the guest to beat on the source', async () => (await a.client.getVm('do-1')).heartbeatBeats > beats, 10_000);
  assert.equal((await a.client.verifyVm('do-1')).ok, true, 'guest check on the source');
});

test('the stream drops after the target resumed the VM: the target says owned, the source discards its copy', async () => {
  const { a, b } = await pair('target-drop-after-activate');
  await a.client.createVm(spec('do-2'));
  const r = await a.client.migrateVm('do-2', b.address, {}, undefined, '', b.proc.nodeId);
  assert.equal(r.outcome, 'succeeded');
  assert.deepEqual((await a.client.listVms()).map((x) => x.spec.name), [], 'the source released its paused copy');
  const v = await b.client.getVm('do-2');
  assert.equal(v.state, 'running', 'the VM runs on the target');
  const beats = v.heartbeatBeats;
  await waitFor('the guest to beat on the target', async () => (await b.client.getVm('do-2')).heartbeatBeats > beats, 10_000);
  assert.equal((await b.client.verifyVm('do-2')).ok, true, 'guest check on the target');
});

test('the target agent dies as Complete arrives and is restarted: its journal says not_owned, the source resumes', async () => {
  const { a, b, restart } = await pair('target-exit-on-complete');
  await a.client.createVm(spec('do-3'));
  const migration = codeOf(a.client.migrateVm('do-3', b.address, {}, undefined, '', b.proc.nodeId));
  const b2 = await restart();
  const err = await migration;
  assert.equal(err.code, 'ABORTED', err.message);
  assert.match(err.message, /the target does not own the VM after Complete .*; the source resumed/);
  const v = await a.client.getVm('do-3');
  assert.equal(v.state, 'running', 'resumed on the source, not left paused');
  assert.deepEqual((await b2.client.listVms()).map((x) => x.spec.name), [], 'the restarted target does not run it');
  const beats = v.heartbeatBeats;
  await waitFor('the guest to beat on the source', async () => (await a.client.getVm('do-3')).heartbeatBeats > beats, 10_000);
  assert.equal((await a.client.verifyVm('do-3')).ok, true, 'guest check on the source');
});

test('the target agent dies after it resumed the guest and is restarted: its journal says lost, the source reports it and discards its stale copy', async () => {
  const { a, b, restart } = await pair('target-exit-after-activate');
  await a.client.createVm(spec('do-4'));
  const migration = codeOf(a.client.migrateVm('do-4', b.address, {}, undefined, '', b.proc.nodeId));
  const b2 = await restart();
  const err = await migration;
  assert.equal(err.code, 'DATA_LOSS', err.message);
  assert.match(err.message, /VM do-4 is LOST: the target .* resumed it after Complete and lost it/);
  assert.deepEqual((await a.client.listVms()).map((x) => x.spec.name), [], 'the stale copy is gone from the source: it never resumes');
  assert.deepEqual((await b2.client.listVms()).map((x) => x.spec.name), [], 'nor does the restarted target claim it');
});

test('post-copy: the switch is dropped as it arrives, before the target resumed the guest: the source asks, resumes, and the VM runs there only', async () => {
  const { a, b } = await pair('target-drop-on-complete');
  const vm: VmSpec = { name: 'do-5', memBytes: 64 * MiB, vcpus: 1, profile: 'mmuncher', wssBytes: 48 * MiB, seed: 5 };
  await a.client.createVm(vm);
  let switched = false;
  const err = await codeOf(a.client.migrateVm(vm.name, b.address, { postcopy: 'always', bandwidthBytesPerSec: 48 * MiB }, (e) => {
    if (e.phase === 'activating') switched = true;
  }, '', b.proc.nodeId));
  assert.ok(switched, 'the source sent the post-copy switch');
  assert.equal(err.code, 'ABORTED', err.message);
  assert.match(err.message, /the post-copy switch never resumed the VM on the target .*; the source resumed/);
  const v = await a.client.getVm(vm.name);
  assert.equal(v.state, 'running', 'resumed on the source, not lost');
  assert.deepEqual((await b.client.listVms()).map((x) => x.spec.name), [], 'the target does not run it');
  const beats = v.heartbeatBeats;
  await waitFor('the guest to beat on the source', async () => (await a.client.getVm(vm.name)).heartbeatBeats > beats, 10_000);
  assert.equal((await a.client.verifyVm(vm.name)).ok, true, 'guest check on the source');
});

/** A migration to a target that dies as Complete arrives and is not back within the source's 1 s outcome wait: the VM is held paused. */
async function heldPair(tag: string, name: string): Promise<{ a: TestAgent; b: TestAgent; restart: () => Promise<TestAgent> }> {
  const p = await pair('target-exit-on-complete', tag, ['--outcome-wait', '1s']);
  await p.a.client.createVm(spec(name));
  const err = await codeOf(p.a.client.migrateVm(name, p.b.address, {}, undefined, '', p.b.proc.nodeId));
  assert.equal(err.code, 'UNAVAILABLE', err.message);
  assert.match(err.message, /switchover outcome unknown after Complete .*the VM stays paused on the source/);
  const v = await p.a.client.getVm(name);
  assert.equal(v.state, 'paused', 'held paused: the guest may run on the target');
  assert.match(v.held ?? '', new RegExp(`migration \\S+ to ${p.b.proc.nodeId}`), 'vm show names the migration holding it');
  const again = await codeOf(p.a.client.migrateVm(name, p.b.address, {}, undefined, '', p.b.proc.nodeId));
  assert.equal(again.code, 'FAILED_PRECONDITION', again.message);
  assert.match(again.message, /cannot migrate: .*drover vm resume/);
  const unforced = await codeOf(p.a.client.resumeVm(name));
  assert.equal(unforced.code, 'FAILED_PRECONDITION', unforced.message);
  assert.match(unforced.message, /stays paused: .* still cannot say whether the guest ran there .*--force/);
  assert.equal((await p.a.client.getVm(name)).state, 'paused', 'a refused resume leaves it held');
  return p;
}

/** The VM runs on the source again: its guest beats and its check passes; a second resume is refused. */
async function runsOnSource(a: TestAgent, name: string): Promise<void> {
  const v = await a.client.getVm(name);
  assert.equal(v.state, 'running');
  assert.equal(v.held ?? '', '', 'no longer held');
  const beats = v.heartbeatBeats;
  await waitFor('the guest to beat on the source', async () => (await a.client.getVm(name)).heartbeatBeats > beats, 10_000);
  assert.equal((await a.client.verifyVm(name)).ok, true, 'guest check on the source');
  const twice = await codeOf(a.client.resumeVm(name, true));
  assert.equal(twice.code, 'FAILED_PRECONDITION', twice.message);
  assert.match(twice.message, /no migration holds it: nothing to resume/);
}

test('a target dead past the outcome wait: the VM is held paused, and vm resume resumes it once the restarted target says it never ran it', async () => {
  const { a, restart } = await heldPair('-h1', 'do-6');
  const b2 = await restart();
  await b2.client.waitReady(10_000);
  const v = await a.client.resumeVm('do-6');
  assert.equal(v.state, 'running');
  await runsOnSource(a, 'do-6');
  assert.deepEqual((await b2.client.listVms()).map((x) => x.spec.name), [], 'the restarted target does not run it');
});

test('a target gone for good: vm resume --force resumes the held VM on the source', async () => {
  const { a, b } = await heldPair('-h2', 'do-7');
  await waitFor('the target agent to be dead', async () => b.proc.child.exitCode !== null || b.proc.child.signalCode !== null, 30_000);
  const v = await a.client.resumeVm('do-7', true);
  assert.equal(v.state, 'running');
  await runsOnSource(a, 'do-7');
});
