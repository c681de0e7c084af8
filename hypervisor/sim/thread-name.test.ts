import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { it } from 'node:test';
import { SimHypervisor } from './sim-hypervisor';
import { VCPU_THREAD_PREFIX } from './thread-name';

/** Kernel names of this process's threads. */
function threadNames(): string[] {
  return fs.readdirSync('/proc/self/task').map((t) => { try { return fs.readFileSync(`/proc/self/task/${t}/comm`, 'utf8').trim(); } catch { return ''; } });
}

it('a sim guest names its vCPU threads, so a meter can tell guest CPU from the agent', async () => {
  const hv = new SimHypervisor();
  try {
    const d = await hv.createDomain({ name: 'named', memBytes: 64 * 1024 * 1024, vcpus: 2, profile: 'idle', seed: 1 });
    const names = threadNames().filter((n) => n.startsWith(VCPU_THREAD_PREFIX)).sort();
    assert.deepEqual(names, [`${VCPU_THREAD_PREFIX}0`, `${VCPU_THREAD_PREFIX}1`]);
    await d.destroy();
  } finally {
    await hv.close();
  }
});
