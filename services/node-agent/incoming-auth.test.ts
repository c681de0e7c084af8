/** The reservation rules: source identity with TLS, AbortIncoming's token in every mode, refusals reported. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ReservationGuard, type ReservationRefusal } from './incoming-auth';

const node = (name: string) => ({ role: 'node' as const, name });

test('with TLS the source is the caller; a request naming another source is refused naming both', () => {
  const seen: ReservationRefusal[] = [];
  const g = new ReservationGuard(true, (r) => seen.push(r));
  assert.equal(g.sourceOf('a', node('a')), 'a');
  assert.throws(() => g.sourceOf('b', node('a')), /node a may not call drover\.v1\.MigrationReceiver\/PrepareIncoming: the source is node b/);
  assert.throws(() => g.sourceOf('a', undefined), /needs the source's node identity/);
  assert.deepEqual(seen.map((r) => [r.method, r.code]), [['drover.v1.MigrationReceiver/PrepareIncoming', 'PERMISSION_DENIED'], ['drover.v1.MigrationReceiver/PrepareIncoming', 'PERMISSION_DENIED']]);
});

test('Start and AbortIncoming only from the bound source, AbortIncoming only with the token', () => {
  const g = new ReservationGuard(true);
  g.bind('m1', 'tok', 'vm1', 'a');
  g.checkStart('m1', node('a'));
  assert.throws(() => g.checkStart('m1', node('c')), /node c may not call drover\.v1\.MigrationReceiver\/Transfer for migration m1: the source is node a/);
  assert.throws(() => g.checkAbort('m1', 'tok', node('c')), /AbortIncoming for migration m1: the source is node a/);
  assert.throws(() => g.checkAbort('m1', '', node('a')), /empty token for migration m1 \(VM vm1, source node a\)/);
  assert.throws(() => g.checkAbort('m1', 'x', node('a')), /wrong token for migration m1/);
  g.checkAbort('m1', 'tok', node('a'));
  g.checkAbort('m-unknown', '', node('a'));
  g.forget('m1');
  g.checkAbort('m1', '', node('c'));
});

test('plain text: the request names the source; the token is still required', () => {
  const g = new ReservationGuard(false);
  assert.equal(g.sourceOf('src', undefined), 'src');
  g.bind('m2', 'tok', 'vm2', 'src');
  g.checkStart('m2', undefined);
  assert.throws(() => g.checkAbort('m2', '', undefined), (e) => (e as { code?: string }).code === 'PERMISSION_DENIED');
  g.checkAbort('m2', 'tok', undefined);
});
