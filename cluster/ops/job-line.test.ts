import { test } from 'node:test';
import assert from 'node:assert/strict';
import { jobLine } from './job-line';
import { newJob, type JobRecord } from '../keyspace';
import type { MigrationResult } from '../../migration/types';

const MiB = 2 ** 20;

test('jobLine: a running job shows phase, round, remaining, rate, dirty rate and ETA', () => {
  const j: JobRecord = { ...newJob({ id: 'm-1', vm: 'web1', from: 'node-1', to: 'node-2', reason: 'rebalance' }), phase: 'precopy',
    progress: { round: 3, remainingBytes: 24 * MiB, sentBytes: 300 * MiB, dirtyRateBytesPerSec: 8 * MiB, rateBytesPerSec: 120 * MiB, etaMs: 1500, elapsedMs: 2600, at: 0 } };
  assert.equal(jobLine(j), 'm-1 web1 node-1 -> node-2 [rebalance] precopy round 3 sent 300 MiB remaining 24.0 MiB rate 120 MiB/s dirty 8 MiB/s eta 1.5 s elapsed 2.6 s');
  assert.match(jobLine({ ...j, progress: { ...j.progress!, etaMs: -1 } }), / eta - /, 'unknown estimate');
});

test('jobLine: a finished job shows downtime, guest blackout and the source pause', () => {
  const j: JobRecord = { ...newJob({ id: 'm-2', vm: 'db1', from: 'node-1', to: 'node-2', reason: 'manual' }), phase: 'done', result: 'succeeded',
    engine: { downtimeMs: 1.234, totalMs: 812 } as MigrationResult, guestBlackoutMs: 3.4, pausedMs: 2.1 };
  assert.equal(jobLine(j), 'm-2 db1 node-1 -> node-2 [manual] done succeeded downtime 1.23 ms blackout 3.4 ms paused 2.1 ms total 812 ms');
  assert.equal(jobLine({ ...j, phase: 'failed', result: 'failed', engine: undefined, guestBlackoutMs: -1, pausedMs: 40, error: 'target refused' }),
    'm-2 db1 node-1 -> node-2 [manual] failed failed paused 40.0 ms (target refused)');
});
