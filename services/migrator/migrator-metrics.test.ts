import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Registry } from 'prom-client';
import { MigratorMetrics } from './migrator-metrics';
import type { JobPrediction } from '../../cluster/keyspace';

test('prediction error: (actual - predicted) / predicted per field, in the histogram', async () => {
  const reg = new Registry();
  const m = new MigratorMetrics(reg);
  const p: JobPrediction = { totalMs: 1000, bytes: 100, downtimeMs: 0, converges: true, policy: 'precopy', linkBytesPerSec: 1, link: 'default', from: 'spec' };
  m.observePrediction(p, { totalMs: 1100, bytesSent: 50, downtimeMs: 2 });
  const h = (await reg.getSingleMetric('drover_migration_prediction_error_ratio')!.get()).values as { metricName?: string; labels: Record<string, string | number>; value: number }[];
  const sum = (field: string) => h.find((v) => v.metricName === 'drover_migration_prediction_error_ratio_sum' && v.labels.field === field)?.value;
  assert.ok(Math.abs(sum('total')! - 0.1) < 1e-9);
  assert.equal(sum('bytes'), -0.5);
  assert.equal(sum('downtime'), undefined, 'a field predicted as 0 is skipped');
  const le = (field: string, b: number) => h.find((v) => v.metricName === 'drover_migration_prediction_error_ratio_bucket' && v.labels.field === field && v.labels.le === b)?.value;
  assert.equal(le('total', 0.05), 0);
  assert.equal(le('total', 0.15), 1);
});
