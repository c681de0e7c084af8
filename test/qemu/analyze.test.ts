/**
 * `drover analyze` on QEMU guests through a real agent (`--hypervisor qemu`) and the real CLI:
 * QEMU's own calc-dirty-rate measures a guest with a known working set and rate, checked against
 * the guest's own write counter and against the sim driver's observation of the same spec on a
 * sim agent; an idle guest measures low; a second analysis while QEMU is still measuring is
 * refused by QEMU and said so in the output, and analyze still answers.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startAgents, stopAgents, type TestAgent } from '../support/agents';
import { droverInsecure } from '../support/cli';
import type { VmSpec } from '../../hypervisor/types';
import { wssAt } from '../../migration/policy/cost-model';

const MiB = 1024 * 1024;
/**
 * QEMU's figure within this factor of the sim observation over the same window (distinct bytes
 * dirtied in it per second, from the sim's WSS curve) and of the guest's counter, either way:
 * page-sampling hashes ~256 sampled pages of the working set and reports whole MiB/s, and a
 * TCG guest on a loaded 2-core host may fall behind its rate.
 */
const FACTOR = 3;
/** An idle guest (64 KiB/s into 1 MiB) measures at most this. */
const IDLE_MAX = 2 * MiB;

/** A guest that rewrites a 64 MiB working set at 8 MiB/s (well below what TCG manages). */
const DIRTY: Omit<VmSpec, 'name'> = { memBytes: 256 * MiB, vcpus: 1, profile: 'web', wssBytes: 64 * MiB, dirtyRateBytesPerSec: 8 * MiB, fillBytes: 64 * MiB };

interface Analysis {
  dirtyRateBytesPerSec: number; guestWriteRateBytesPerSec: number; wss: { windowMs: number; bytes: number }[];
  qemuDirtyRateBytesPerSec?: number; qemuDirtyRateMethod?: string; qemuDirtyRateNote?: string; converges: boolean;
}

const drover = droverInsecure;

/** `drover analyze VM --json` against `agent`; asserts exit 0. */
async function analyze(agent: TestAgent, vm: string, window = '2s'): Promise<Analysis> {
  const r = await drover('analyze', vm, '--agent', agent.address, '--window', window, '--bandwidth', '1Gbit', '--json');
  assert.equal(r.code, 0, r.err);
  return JSON.parse(r.out) as Analysis;
}

let q: TestAgent, s: TestAgent;
before(async () => {
  [q] = await startAgents(1, 'qa', ['--hypervisor', 'qemu']);
  [s] = await startAgents(1, 'qs');
  await q.client.createVm({ name: 'qa-dirty', ...DIRTY });
  await q.client.createVm({ name: 'qa-idle', memBytes: 128 * MiB, vcpus: 1, profile: 'idle' });
  await s.client.createVm({ name: 'qa-dirty', ...DIRTY });
});
after(() => stopAgents([q, s].filter(Boolean)));

test('QEMU calc-dirty-rate: a dirtying guest within a factor of the sim observation and its own counter, an idle guest low', async () => {
  const sim = await analyze(s, 'qa-dirty');
  assert.equal(sim.qemuDirtyRateMethod, undefined, 'a sim VM has no QEMU figure');
  const dirty = await analyze(q, 'qa-dirty');
  const idle = await analyze(q, 'qa-idle');
  assert.match(dirty.qemuDirtyRateMethod ?? '', /^(page-sampling|dirty-bitmap)$/, dirty.qemuDirtyRateNote);
  const qr = dirty.qemuDirtyRateBytesPerSec ?? 0;
  const qWindowMs = dirty.wss[0]?.windowMs ?? 0;
  const simSame = (wssAt(sim.wss, qWindowMs, sim.dirtyRateBytesPerSec, DIRTY.memBytes) * 1000) / qWindowMs;
  console.log(`qa-dirty: QEMU ${((dirty.qemuDirtyRateBytesPerSec ?? 0) / MiB).toFixed(1)} MiB/s (${dirty.qemuDirtyRateMethod}: ${dirty.qemuDirtyRateNote}), guest counter ${(dirty.guestWriteRateBytesPerSec / MiB).toFixed(1)} MiB/s, sim observation ${(sim.dirtyRateBytesPerSec / MiB).toFixed(1)} MiB/s at 10 ms, ${(simSame / MiB).toFixed(1)} MiB/s over QEMU's ${qWindowMs} ms; qa-idle: QEMU ${((idle.qemuDirtyRateBytesPerSec ?? 0) / MiB).toFixed(1)} MiB/s`);
  assert.ok(qr > 0, `QEMU measured no dirtying: ${dirty.qemuDirtyRateNote}`);
  assert.equal(dirty.dirtyRateBytesPerSec, qr, 'the prediction uses QEMU\'s figure');
  assert.equal(qWindowMs, 2000, 'QEMU measured the 2 s window');
  assert.ok(qr < simSame * FACTOR && qr > simSame / FACTOR, `QEMU ${qr} vs sim over the same window ${simSame}`);
  assert.ok(qr < dirty.guestWriteRateBytesPerSec * FACTOR && qr > dirty.guestWriteRateBytesPerSec / FACTOR, `QEMU ${qr} vs the guest's counter ${dirty.guestWriteRateBytesPerSec}`);
  assert.equal(dirty.wss.length, 1);
  assert.equal(idle.qemuDirtyRateMethod, dirty.qemuDirtyRateMethod);
  assert.ok((idle.qemuDirtyRateBytesPerSec ?? -1) >= 0 && idle.qemuDirtyRateBytesPerSec! <= IDLE_MAX && idle.qemuDirtyRateBytesPerSec! < qr, `idle ${idle.qemuDirtyRateBytesPerSec}`);

  const human = await drover('analyze', 'qa-dirty', '--agent', q.address, '--window', '1s', '--bandwidth', '1Gbit');
  assert.equal(human.code, 0, human.err);
  assert.match(human.out, /QEMU dirty rate +\d.* \(calc-dirty-rate (page-sampling|dirty-bitmap): /);
  assert.match(human.out, /guest writes +\d.*the guest's own counter/);
});

test('QEMU refuses a second calc-dirty-rate while one measures: the output says so, analyze answers, the VM keeps running', async () => {
  const [x, y] = await Promise.all([analyze(q, 'qa-dirty', '3s'), analyze(q, 'qa-dirty', '3s')]);
  const refused = [x, y].filter((a) => !a.qemuDirtyRateMethod);
  assert.equal(refused.length, 1, `one of two concurrent measurements refused: ${x.qemuDirtyRateNote} / ${y.qemuDirtyRateNote}`);
  assert.match(refused[0].qemuDirtyRateNote ?? '', /^QEMU gave no dirty rate \(calc-dirty-rate: .*already being measured.*\); the dirty rate is the guest's own write counter$/);
  assert.equal(refused[0].dirtyRateBytesPerSec, refused[0].guestWriteRateBytesPerSec);
  assert.equal((await q.client.getVm('qa-dirty')).state, 'running');
  assert.equal((await q.client.verifyVm('qa-dirty')).ok, true);
});
