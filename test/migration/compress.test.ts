/**
 * Page-batch compression between mutual-TLS agents (real `drover agent` processes): with
 * `compress: always` a dirtying VM moves with its batches LZ4-encoded (fewer bytes on the wire
 * than page bytes), verifies (the target's image digest equals the paused source's memory, the
 * guest's own check passes there) and runs on the target; with `never` nothing is encoded; an
 * unknown mode over gRPC is INVALID_ARGUMENT naming it.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { usageErrorLine } from '../support/cli';
import { startAgents, stopAgents, codeOf, sleep, destroyEverywhere, type TestAgent } from '../support/agents';
import { pkiFixture, type PkiFixture } from '../../lib/pki/pki-fixture';
import type { CompressionMode, MigrationResult } from '../../migration/types';
import type { VmSpec } from '../../hypervisor/types';

const MiB = 2 ** 20;

let pki: PkiFixture;
let agents: TestAgent[] = [];

before(async () => {
  pki = await pkiFixture();
  agents = await startAgents(2, 'cz', [], { tls: { dir: pki.dir, client: await pki.identity({ role: 'controller', name: 'ctl' }) } });
});
after(async () => {
  await stopAgents(agents);
  pki.cleanup();
});

const spec = (name: string): VmSpec => ({ name, memBytes: 96 * MiB, vcpus: 1, profile: 'web', fillBytes: 64 * MiB, seed: 11 });

/** Migrates a fresh VM a -> b with `compress`; checks it verified and runs on b; returns the result. */
async function migrate(vm: string, compress: CompressionMode): Promise<MigrationResult> {
  const [a, b] = agents;
  await a.client.createVm(spec(vm));
  try {
    await sleep(500);
    const r = await a.client.migrateVm(vm, b.address, { verify: true, compress }, undefined, '', 'cz-1');
    assert.equal(r.outcome, 'succeeded');
    assert.equal(r.verified, true, 'the target image digest equals the paused source memory');
    const beats = (await b.client.getVm(vm)).heartbeatBeats;
    await sleep(200);
    const check = await b.client.verifyVm(vm);
    assert.equal(check.ok, true, check.detail);
    assert.ok(check.heartbeatBeats > beats, 'the guest runs on the target');
    return r;
  } finally {
    await destroyEverywhere(vm, a, b);
  }
}

test('compress always: batches go LZ4-encoded, fewer bytes on the wire, the VM verifies on the target', async () => {
  const r = await migrate('cz-always', 'always');
  assert.ok((r.compressedBatches ?? 0) > 0, 'some batches were encoded');
  assert.match(r.compressReason ?? '', /^always: /, 'the result says why (through the agent, over gRPC)');
  assert.ok((r.compressedBytes ?? 0) < (r.compressedPageBytes ?? 0) * 0.7, `encoded ${r.compressedBytes} of ${r.compressedPageBytes} page bytes`);
  assert.ok(r.bytesSent < r.pageBytes * 0.8, `wire ${r.bytesSent} < page bytes ${r.pageBytes}`);
});

test('compress never: no batch is encoded and the VM verifies', async () => {
  const r = await migrate('cz-never', 'never');
  assert.equal(r.compressedBatches, undefined);
  assert.match(r.compressReason ?? '', /^never: /);
  assert.ok(r.bytesSent >= r.pageBytes, 'every page byte on the wire');
});

test('an unknown compression mode over gRPC is INVALID_ARGUMENT naming it', async () => {
  const [a, b] = agents;
  await a.client.createVm(spec('cz-bad'));
  try {
    const err = await codeOf(a.client.migrateVm('cz-bad', b.address, { compress: 'zstd' as CompressionMode }, undefined, '', 'cz-1'));
    assert.equal(err.code, 'INVALID_ARGUMENT');
    assert.match(err.message, /policy\.compress must be one of never, auto, always, got 'zstd'/);
    assert.equal((await a.client.getVm('cz-bad')).state, 'running', 'the VM keeps running on the source');
  } finally {
    await a.client.destroyVm('cz-bad').catch(() => undefined);
  }
});

test('a bad --compress value is one usage line naming the flag, exit 2 (migrate and bench)', () => {
  for (const [args, want] of [
    [['migrate', 'v', '--from', '127.0.0.1:1', '--to', '127.0.0.1:2', '--insecure', '--compress', 'zstd'], /--compress "zstd" is not a compression mode \(expected never, auto, always\)/],
    [['bench', '--compress', 'never,fast'], /--compress "fast" is not a compression mode/],
  ] as Array<[string[], RegExp]>) {
    assert.match(usageErrorLine(...args), want);
  }
});
