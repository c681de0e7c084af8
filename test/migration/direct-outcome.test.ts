/**
 * A direct migration (no etcd) whose stream breaks after Complete: the source asks the target
 * what it did (SwitchoverOutcome) instead of staying paused for ever. Real mutual-TLS agent
 * processes; the break is put at an exact step by a failpoint in the target agent
 * (lib/failpoints.ts), which no external cut hits reliably inside a millisecond switchover:
 * - the stream drops as Complete arrives: the target never resumed the VM, so it answers
 *   not_owned and the source resumes; the VM runs on the source only and its guest check passes;
 * - the stream drops right after the target resumed the VM, before Owned: the target answers
 *   owned and the source discards its paused copy; the VM runs on the target only.
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

const MiB = 2 ** 20;

let pki: PkiFixture | undefined;
let client: Awaited<ReturnType<PkiFixture['identity']>> | undefined;
const started: TestAgent[] = [];
after(async () => {
  await stopAgents(started);
  pki?.cleanup();
});

/** A source agent and a target agent with failpoint `fp`, both mutual TLS. */
async function pair(fp: Failpoint): Promise<[TestAgent, TestAgent]> {
  pki ??= await pkiFixture();
  client ??= await pki.identity({ role: 'controller', name: 'ctl' });
  const [a] = await startAgents(1, `do-src-${fp}`, [], { tls: { dir: pki.dir, client } });
  const nodeId = `do-dst-${fp}`;
  const proc = await startAgent(nodeId, await agentTlsArgs(pki.dir, nodeId), { [FAILPOINTS_ENV]: fp });
  const b: TestAgent = { proc, client: new AgentClient(proc.address, clientCredentials(client, { role: 'node', name: nodeId })), address: proc.address };
  await b.client.waitReady(10_000);
  started.push(a, b);
  return [a, b];
}

const spec = (name: string): VmSpec => ({ name, memBytes: 64 * MiB, vcpus: 1, profile: 'web', seed: 5 });

test('the stream drops as Complete arrives: the target says not_owned, the source resumes and the VM runs there only', async () => {
  const [a, b] = await pair('target-drop-on-complete');
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
  const [a, b] = await pair('target-drop-after-activate');
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
