/**
 * Migrations between TLS agents (real `drover agent` processes, certificates from a throw-away
 * CA): a sim VM moves and verifies; a source refuses a target with another CA's certificate, or
 * whose certificate is not the node the request names, before any page leaves: the VM keeps
 * running on the source, unpaused. The agent refuses a certificate that is not its --node-id,
 * and the CLI refuses to run without certificates or --insecure. Plain agents: AbortIncoming
 * needs the token too.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { startAgents, stopAgents, codeOf, sleep, type TestAgent } from '../support/agents';
import { startAgent } from '../../services/node-agent/agent-process';
import { agentTlsArgs } from '../../services/node-agent/local-agents';
import { pkiFixture, type PkiFixture } from '../../lib/pki/pki-fixture';
import { ReceiverClientConn } from '../../migration/transport/receiver-client';
import type { VmSpec } from '../../hypervisor/types';

const BIN = path.resolve(__dirname, '..', '..', '..', 'bin', 'drover');

let pki: PkiFixture;
let foreign: PkiFixture;
let agents: TestAgent[] = [];
let alien: TestAgent[] = [];

before(async () => {
  pki = await pkiFixture();
  foreign = await pkiFixture();
  agents = await startAgents(3, 'tls', [], { tls: { dir: pki.dir, client: await pki.identity({ role: 'controller', name: 'ctl' }) } });
  alien = await startAgents(1, 'alien', [], { tls: { dir: foreign.dir, client: await foreign.identity({ role: 'admin', name: 'them' }) } });
});
after(async () => {
  await stopAgents([...agents, ...alien]);
  pki.cleanup();
  foreign.cleanup();
});

const spec = (name: string): VmSpec => ({ name, memBytes: 64 * 2 ** 20, vcpus: 1, profile: 'web' });

test('a sim VM migrates between two TLS agents and verifies', async () => {
  const [a, b] = agents;
  await a.client.createVm(spec('t1'));
  const r = await a.client.migrateVm('t1', b.address, { verify: true }, undefined, '', 'tls-1');
  assert.equal(r.outcome, 'succeeded');
  assert.equal(r.verified, true);
  const check = await b.client.verifyVm('t1');
  assert.equal(check.ok, true);
  await b.client.destroyVm('t1');
});

/** The VM still runs on `a`, not paused: its heartbeat keeps growing. */
async function stillRunsOn(a: TestAgent, vm: string): Promise<void> {
  const v0 = await a.client.getVm(vm);
  await sleep(600);
  const v1 = await a.client.getVm(vm);
  assert.equal(v1.state, 'running');
  assert.ok(v1.heartbeatBeats > v0.heartbeatBeats, `heartbeat ${v0.heartbeatBeats} -> ${v1.heartbeatBeats}`);
}

test('MigrateVm towards a node other than the one named, or a receiver from another CA, is refused; the VM keeps running on the source', async () => {
  const [a, b, c] = agents;
  await a.client.createVm(spec('t2'));
  const wrongNode = await codeOf(a.client.migrateVm('t2', b.address, {}, undefined, '', c.proc.nodeId));
  assert.equal(wrongNode.code, 'UNAVAILABLE', wrongNode.message);
  assert.match(wrongNode.message, /spiffe:\/\/drover\/node\/tls-1, expected node\/tls-2/);
  await stillRunsOn(a, 't2');
  const otherCa = await codeOf(a.client.migrateVm('t2', alien[0].address, {}, undefined, '', alien[0].proc.nodeId));
  assert.equal(otherCa.code, 'UNAVAILABLE', otherCa.message);
  await stillRunsOn(a, 't2');
  const noName = await codeOf(a.client.migrateVm('t2', b.address, {}));
  assert.equal(noName.code, 'INVALID_ARGUMENT');
  assert.match(noName.message, /target_node is required with TLS/);
  for (const t of [b, c]) assert.equal((await t.client.nodeInfo()).memUsedBytes, 0, 'no reservation on the targets');
  await stillRunsOn(a, 't2');
  await a.client.destroyVm('t2');
});

test('an agent whose certificate is not its --node-id refuses to start, naming both', async () => {
  const args = await agentTlsArgs(pki.dir, 'someone-else');
  await assert.rejects(startAgent('tls-9', args), /someone-else\.crt is node\/someone-else, but agent --node-id tls-9 needs node\/tls-9/);
});

test('drover vm/migrate without certificates and without --insecure exit 2 with one line', () => {
  const env = { ...process.env, DROVER_CA: '', DROVER_CERT: '', DROVER_KEY: '' };
  for (const args of [['vm', 'list', '--agent', agents[0].address], ['migrate', 'x', '--from', agents[0].address, '--to', agents[1].address]]) {
    const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', env, timeout: 60_000 });
    assert.equal(r.status, 2, r.stderr);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    assert.match(r.stderr, /no certificates: give --ca, --cert and --key \(or DROVER_CA, DROVER_CERT, DROVER_KEY\), or --insecure/);
  }
  const half = spawnSync(process.execPath, [BIN, 'vm', 'list', '--agent', agents[0].address, '--ca', path.join(pki.dir, 'ca.crt')], { encoding: 'utf8', env, timeout: 60_000 });
  assert.equal(half.status, 2);
  assert.match(half.stderr, /--cert and --key missing/);
});

test('drover vm list and migrate --to-node work with certificates', () => {
  const dir = pki.dir;
  const tls = ['--ca', path.join(dir, 'ca.crt'), '--cert', path.join(dir, 'ctl.crt'), '--key', path.join(dir, 'ctl.key')];
  const run = (...args: string[]) => spawnSync(process.execPath, [BIN, ...args, ...tls], { encoding: 'utf8', timeout: 120_000 });
  assert.equal(run('vm', 'create', 'c1', '--agent', agents[0].address, '--mem', '64MiB', '--profile', 'idle').status, 0);
  const noNode = run('migrate', 'c1', '--from', agents[0].address, '--to', agents[1].address);
  assert.equal(noNode.status, 2);
  assert.match(noNode.stderr, /--to-node NAME is required with TLS/);
  const m = run('migrate', 'c1', '--from', agents[0].address, '--to', agents[1].address, '--to-node', 'tls-1', '--verify', '--json');
  assert.equal(m.status, 0, m.stderr);
  assert.equal(JSON.parse(m.stdout.trim()).verified, true);
  const list = run('vm', 'list', '--agent', agents[1].address, '--json');
  assert.deepEqual(JSON.parse(list.stdout).map((v: { name: string }) => v.name), ['c1']);
  assert.equal(run('vm', 'destroy', 'c1', '--agent', agents[1].address).status, 0);
});

test('plain agents: AbortIncoming with a wrong or empty token is PERMISSION_DENIED and the reservation stays', async () => {
  const [plain] = await startAgents(1, 'plain');
  try {
    const conn = new ReceiverClientConn(plain.address);
    const r = await conn.prepare(spec('a1'), 'test', '');
    for (const token of ['', 'nope']) assert.equal((await codeOf(conn.release(r.migrationId, token))).code, 'PERMISSION_DENIED');
    assert.ok((await plain.client.nodeInfo()).memUsedBytes > 0, 'the reservation stays');
    await conn.release(r.migrationId, r.token);
    assert.equal((await plain.client.nodeInfo()).memUsedBytes, 0);
    conn.close();
  } finally {
    await stopAgents([plain]);
  }
});
