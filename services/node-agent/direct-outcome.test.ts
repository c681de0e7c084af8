import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DroverError } from '../../lib/errors';
import { askTargetOutcome } from './direct-outcome';

/** An asker that answers from `script` in turn (a DroverError entry rejects), and counts the questions. */
function scripted(script: (string | DroverError)[]) {
  let i = 0;
  const ask = async () => {
    const a = script[Math.min(i++, script.length - 1)];
    if (a instanceof DroverError) throw a;
    return a;
  };
  return { ask, asked: () => i };
}
const quiet = () => undefined;
const noSleep = async () => undefined;

test('owned ends the migration; not_owned resumes the source', async () => {
  assert.equal(await askTargetOutcome(scripted(['owned']).ask, quiet, 1000, noSleep), 'owned');
  assert.equal(await askTargetOutcome(scripted(['not_owned']).ask, quiet, 1000, noSleep), 'refused');
});

test('pending and no answer are asked again until the target tells', async () => {
  const s = scripted([new DroverError('UNAVAILABLE', 'connection refused'), 'pending', 'pending', 'owned']);
  assert.equal(await askTargetOutcome(s.ask, quiet, 10_000, noSleep), 'owned');
  assert.equal(s.asked(), 4);
});

test('unknown, lost and a refusal to tell leave the VM paused at once', async () => {
  for (const [a, want] of [['unknown', 'unknown'], ['lost', 'lost'], [new DroverError('PERMISSION_DENIED', 'wrong token'), 'unknown']] as const) {
    const s = scripted([a]);
    assert.equal(await askTargetOutcome(s.ask, quiet, 10_000, noSleep), want);
    assert.equal(s.asked(), 1, `${String(a)}: asked once`);
  }
});

test('a target silent for the whole wait leaves the VM paused', async () => {
  const s = scripted([new DroverError('UNAVAILABLE', 'no route to host')]);
  const t0 = Date.now();
  assert.equal(await askTargetOutcome(s.ask, quiet, 400), 'unknown');
  assert.ok(Date.now() - t0 < 2000, 'within the wait');
  assert.ok(s.asked() >= 2, `asked again with backoff (${s.asked()} times)`);
});
