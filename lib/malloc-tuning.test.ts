/** The agent's malloc tuning stays out of its children; an operator's setting is passed on. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { BULK_MALLOC_TUNABLES, TUNED_ENV, withoutAgentTuning } from './malloc-tuning';

test("a child of a tuned agent gets neither the agent's tunables nor its marker", () => {
  const env = withoutAgentTuning({ PATH: '/usr/bin:/bin', GLIBC_TUNABLES: BULK_MALLOC_TUNABLES, [TUNED_ENV]: '1' });
  assert.deepEqual(env, { PATH: '/usr/bin:/bin' });
  // and a real child sees that environment
  const r = spawnSync('sh', ['-c', 'echo "${GLIBC_TUNABLES:-none} ${DROVER_AGENT_TUNED:-none}"'], { env, encoding: 'utf8' });
  assert.equal(r.stdout.trim(), 'none none');
});

test("an operator's own GLIBC_TUNABLES is passed on", () => {
  assert.equal(withoutAgentTuning({ GLIBC_TUNABLES: 'glibc.malloc.arena_max=2', [TUNED_ENV]: '1' }).GLIBC_TUNABLES, 'glibc.malloc.arena_max=2');
});
