import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Registry } from 'prom-client';
import { valueOf } from '../../lib/metrics';
import { AgentMetrics, finishReason } from './agent-metrics';
import type { MigrationResult } from '../../migration/types';

test('the reason label is bounded', () => {
  assert.equal(finishReason({ outcome: 'succeeded', stopReason: 'max-rounds', errorCode: '' }), 'max_rounds');
  assert.equal(finishReason({ outcome: 'succeeded', stopReason: '', errorCode: '' }), 'converged');
  assert.equal(finishReason({ outcome: 'failed', stopReason: '', errorCode: 'UNAVAILABLE' }), 'unavailable');
  assert.equal(finishReason({ outcome: 'cancelled', stopReason: '', errorCode: '' }), 'cancelled');
  assert.equal(finishReason({ outcome: 'failed', stopReason: '', errorCode: 'vm web-42 exploded' }), 'other');
});

function result(p: Partial<MigrationResult>): MigrationResult {
  return {
    migrationId: 'm-1', vm: 'web1', profile: 'web', memBytes: 2 ** 26, mode: 'precopy', verified: true, downtimeMs: 3, totalMs: 800, rounds: 4,
    bytesSent: 5e6, pageBytes: 4.9e6, zeroPages: 100, deviceBytes: 2000, throughputBytesPerSec: 1e9, stopReason: 'converged', outcome: 'succeeded',
    errorCode: '', error: '', source: 'a', target: 'b', nonzeroBytes: 5e6, ...p,
  };
}

test('a migration: in-flight gauges while it runs, histograms and counters when it ends', async () => {
  const reg = new Registry();
  const m = new AgentMetrics(reg);
  const ev = { migrationId: 'm-1', phase: 'precopy' as const, round: 2, remainingBytes: 1000, dirtyRateBytesPerSec: 50, rateBytesPerSec: 900, sentBytes: 10, etaMs: 1, elapsedMs: 5 };
  m.migrationEvent('a', 'web1', 'm-1', ev);
  m.bindNode({ nodeInfo: () => ({ nodeId: 'a', hypervisor: 'sim', memTotalBytes: 100, memUsedBytes: 25, vcpusTotal: 4, vcpusUsed: 2, protocolVersion: 1, vms: [] }), incomingCount: 1 });
  assert.equal(await valueOf(reg, 'drover_migration_remaining_bytes', { migration: 'm-1', vm: 'web1', node: 'a' }), 1000);
  assert.equal(await valueOf(reg, 'drover_migrations_inflight', { node: 'a', direction: 'outbound' }), 1);
  assert.equal(await valueOf(reg, 'drover_migrations_inflight', { node: 'a', direction: 'inbound' }), 1);
  assert.equal(await valueOf(reg, 'drover_node_load_ratio', { node: 'a' }), 0.5);
  m.migrationEvent('a', 'web1', 'm-1', { ...ev, phase: 'done', result: result({}) });
  assert.equal(await valueOf(reg, 'drover_migration_remaining_bytes', { migration: 'm-1' }), undefined, 'series removed');
  assert.equal(await valueOf(reg, 'drover_migrations_inflight', { direction: 'outbound' }), 0);
  assert.equal(await valueOf(reg, 'drover_migrations_started_total'), 1);
  assert.equal(await valueOf(reg, 'drover_migrations_finished_total', { result: 'succeeded', reason: 'converged' }), 1);
  assert.equal(await valueOf(reg, 'drover_migration_sent_bytes_total', { kind: 'zero_pages' }), 100 * 4096);
  const text = await reg.metrics();
  assert.match(text, /drover_migration_downtime_seconds_bucket\{le="0.005"\} 1/);
  assert.match(text, /drover_migration_downtime_seconds_bucket\{le="0.002"\} 0/);
  assert.match(text, /drover_migration_rounds_sum 4/);
  assert.equal(await valueOf(reg, 'drover_migrations_throttled_total'), 0);
  assert.match(text, /drover_migration_guest_blackout_seconds_count 0\n/);
  // a migration that needed auto-converge, with a measured guest blackout (qemu)
  m.migrationEvent('a', 'much', 'm-3', { ...ev, migrationId: 'm-3', phase: 'done', result: result({ migrationId: 'm-3', throttlePercent: 99, guestBlackoutMs: 8 }) });
  assert.equal(await valueOf(reg, 'drover_migrations_throttled_total'), 1);
  assert.match(await reg.metrics(), /drover_migration_guest_blackout_seconds_bucket\{le="0.01"\} 1/);
  // a failure before any progress still counts as started
  m.migrationEvent('a', 'db1', 'm-2', { ...ev, migrationId: 'm-2', phase: 'failed', result: result({ outcome: 'failed', errorCode: 'RESOURCE_EXHAUSTED' }) });
  assert.equal(await valueOf(reg, 'drover_migrations_started_total'), 3);
  assert.equal(await valueOf(reg, 'drover_migrations_finished_total', { result: 'failed', reason: 'resource_exhausted' }), 1);
  assert.match(await reg.metrics(), /drover_migration_downtime_seconds_count 2\n/);
});

test("the guest's bill: migrations by policy, time throttled, post-copy page waits, lost VMs", async () => {
  const reg = new Registry();
  const m = new AgentMetrics(reg);
  const ev = { migrationId: 'm-1', phase: 'done' as const, round: 2, remainingBytes: 0, dirtyRateBytesPerSec: 0, rateBytesPerSec: 0, sentBytes: 0, etaMs: 0, elapsedMs: 5 };
  m.migrationEvent('a', 'mm', 'm-1', { ...ev, result: result({ mode: 'postcopy', policy: 'postcopy', policyReason: 'fast', pageWaits: 3 }) });
  m.migrationEvent('a', 'mm2', 'm-2', { ...ev, migrationId: 'm-2', result: result({ migrationId: 'm-2', policy: 'throttle', throttlePercent: 90, throttledMs: 1500 }) });
  assert.equal(await valueOf(reg, 'drover_migrations_by_policy_total', { policy: 'postcopy' }), 1);
  assert.equal(await valueOf(reg, 'drover_migrations_by_policy_total', { policy: 'throttle' }), 1);
  m.postcopyDone([0.2, 3, 700], 1200);
  m.lost.inc({ side: 'target' });
  const text = await reg.metrics();
  assert.match(text, /drover_migration_throttled_seconds_sum 1\.5\n/);
  assert.match(text, /drover_migration_postcopy_page_wait_seconds_count 3\n/);
  assert.match(text, /drover_migration_postcopy_page_wait_seconds_bucket\{le="0.005"\} 2\n/);
  assert.match(text, /drover_migration_postcopy_all_present_seconds_sum 1\.2\n/);
  assert.equal(await valueOf(reg, 'drover_migration_postcopy_vms_lost_total', { side: 'target' }), 1);
});
