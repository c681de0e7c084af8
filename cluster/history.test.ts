import { test } from 'node:test';
import assert from 'node:assert/strict';
import { historyToPrune, jobIdTime } from './history';
import { newJobId } from './keyspace';

const DAY = 24 * 3600 * 1000;

test('history: a job id carries its creation time', () => {
  const before = Date.now();
  const t = jobIdTime(newJobId())!;
  assert.ok(t >= before && t <= Date.now());
  assert.equal(jobIdTime('custom-id'), undefined);
});

test('history: beyond the count the oldest go; past the age any goes; ids without a time only by count', () => {
  const now = 100 * DAY;
  const id = (ageDays: number, n: number) => `m-${(now - ageDays * DAY).toString(36)}-${n}`;
  const ids = [id(9, 1), 'odd-1', id(3, 2), id(2, 3), id(1, 4)]; // oldest finished first
  assert.deepEqual(historyToPrune(ids, { maxJobs: 1000, maxAgeMs: 7 * DAY }, now), [id(9, 1)]);
  assert.deepEqual(historyToPrune(ids, { maxJobs: 3, maxAgeMs: 7 * DAY }, now), [id(9, 1), 'odd-1']);
  assert.deepEqual(historyToPrune(ids, { maxJobs: 3, maxAgeMs: 1.5 * DAY }, now), [id(9, 1), 'odd-1', id(3, 2), id(2, 3)]);
  assert.deepEqual(historyToPrune(ids, { maxJobs: 0, maxAgeMs: 7 * DAY }, now), ids);
  assert.deepEqual(historyToPrune([], { maxJobs: 1, maxAgeMs: 0 }, now), []);
});
