import { test } from 'node:test';
import assert from 'node:assert/strict';
import { exportedMetricNames, metricTable } from '../lib/metrics';
import { METRIC_GROUPS } from './metric-groups';

const NAME = /^[a-z_:][a-z0-9_:]*$/;

test('every metric follows Prometheus naming and has bounded labels', async () => {
  const table = await metricTable(METRIC_GROUPS);
  assert.ok(table.length >= 40, `${table.length} metrics`);
  for (const m of table) {
    assert.match(m.name, NAME);
    assert.ok(m.name.startsWith('drover_'), m.name);
    if (m.type === 'counter') assert.ok(m.name.endsWith('_total'), `counter ${m.name} ends in _total`);
    else assert.ok(!m.name.endsWith('_total'), `${m.type} ${m.name} does not end in _total`);
    assert.ok(!/_(ms|milliseconds|kb|mb|mib|gib)$/.test(m.name), `${m.name} uses base units`);
    if (m.type === 'histogram') {
      assert.deepEqual(m.labels.filter((l) => ['vm', 'migration', 'job'].includes(l)), [], `${m.name}: no unbounded labels on histograms`);
    }
    if (m.type === 'counter') assert.deepEqual(m.labels.filter((l) => ['vm', 'migration', 'job'].includes(l)), [], `${m.name}: no unbounded labels on counters`);
  }
  const byName = new Map(table.map((m) => [m.name, m]));
  assert.equal(byName.get('drover_migration_downtime_seconds')?.type, 'histogram');
  assert.deepEqual(byName.get('drover_migrations_finished_total')?.labels, ['result', 'reason']);
  assert.deepEqual(byName.get('drover_grpc_server_handled_total')?.labels, ['service', 'method', 'type', 'code']);
  assert.deepEqual(byName.get('drover_node_vms')?.labels, ['node']);
  assert.deepEqual(byName.get('drover_migration_remaining_bytes')?.labels, ['node', 'migration', 'vm']);
  const names = await exportedMetricNames(METRIC_GROUPS);
  for (const n of ['drover_migration_downtime_seconds_bucket', 'drover_migration_downtime_seconds_count', 'drover_scheduler_leader', 'process_cpu_seconds_total']) assert.ok(names.has(n), n);
});
