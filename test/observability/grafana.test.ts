/** deploy/grafana/: every query of every dashboard names only metrics the services really export. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { exportedMetricNames } from '../../lib/metrics';
import { METRIC_GROUPS } from '../../services/metric-groups';
import { repoDir } from './support';

const DIR = path.join(repoDir(), 'deploy', 'grafana');
/** PromQL words that are not metric names. */
const KEYWORDS = new Set(['by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'and', 'or', 'unless', 'bool', 'offset', 'inf', 'nan']);

/** Metric names a PromQL expression selects (functions, label matchers, groupings, ranges and strings stripped). */
export function metricNamesIn(expr: string): string[] {
  let e = expr.replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'/g, '""');
  e = e.replace(/\{[^}]*\}/g, ' ').replace(/\[[^\]]*\]/g, ' ');
  e = e.replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ');
  const out: string[] = [];
  for (const m of e.matchAll(/(?<![\w$.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?/g)) {
    if (m[2]) continue; // a function call
    if (KEYWORDS.has(m[1].toLowerCase())) continue;
    out.push(m[1]);
  }
  return out;
}

test('metricNamesIn finds the selectors of a PromQL expression', () => {
  assert.deepEqual(metricNamesIn('histogram_quantile(0.99, sum by (le) (rate(drover_migration_downtime_seconds_bucket{job="x"}[$__rate_interval])))'), ['drover_migration_downtime_seconds_bucket']);
  assert.deepEqual(metricNamesIn('sum(a_total) / ignoring(kind) group_left sum(b_count) or vector(0)'), ['a_total', 'b_count']);
});

test('every Grafana query names metrics lib/metrics.ts exports', async () => {
  const exported = await exportedMetricNames(METRIC_GROUPS);
  exported.add('up');
  const files = fs.readdirSync(DIR).filter((f) => f.endsWith('.json'));
  assert.ok(files.length > 0, 'a dashboard exists');
  let queries = 0;
  const used = new Set<string>();
  for (const f of files) {
    const dash = JSON.parse(fs.readFileSync(path.join(DIR, f), 'utf8'));
    const panels = (dash.panels as any[]).flatMap((p) => [p, ...(p.panels ?? [])]);
    for (const p of panels) {
      for (const t of p.targets ?? []) {
        queries++;
        const names = metricNamesIn(String(t.expr));
        assert.ok(names.length > 0, `${f} "${p.title}": query names no metric: ${t.expr}`);
        for (const n of names) {
          assert.ok(exported.has(n), `${f} "${p.title}": ${n} is not exported by any Drover service (query: ${t.expr})`);
          used.add(n);
        }
      }
    }
  }
  assert.ok(queries >= 20, `${queries} queries`);
  // The panels the dashboard promises.
  for (const n of ['drover_migration_downtime_seconds_bucket', 'drover_migrations_finished_total', 'drover_migration_transferred_bytes_sum', 'drover_migration_rounds_sum',
    'drover_migration_remaining_bytes', 'drover_migration_transfer_rate_bytes_per_second', 'drover_node_load_ratio', 'drover_node_vms', 'drover_drain_progress_ratio',
    'drover_migration_prediction_error_ratio_bucket']) {
    assert.ok(used.has(n), `the dashboard shows ${n}`);
  }
});
