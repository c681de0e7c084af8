import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Histogram, Registry } from 'prom-client';
import { DOWNTIME_BUCKETS, DURATION_BUCKETS, startMetricsServer } from './metrics';

test('downtime buckets span 0.5 ms .. 5 s, duration buckets reach 10 min', () => {
  assert.equal(DOWNTIME_BUCKETS[0], 0.0005);
  assert.equal(DOWNTIME_BUCKETS.at(-1), 5);
  assert.equal(DURATION_BUCKETS.at(-1), 600);
  for (const b of [DOWNTIME_BUCKETS, DURATION_BUCKETS]) for (let i = 1; i < b.length; i++) assert.ok(b[i] > b[i - 1]);
});

test('startMetricsServer serves /metrics in the text format', async () => {
  const reg = new Registry();
  new Histogram({ name: 'drover_migration_downtime_seconds', help: 'Migration downtime.', buckets: DOWNTIME_BUCKETS, registers: [reg] });
  const s = await startMetricsServer('127.0.0.1:0', reg);
  try {
    const res = await fetch(`http://${s.address}/metrics`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /text\/plain/);
    assert.match(await res.text(), /# TYPE drover_migration_downtime_seconds histogram/);
    assert.equal((await fetch(`http://${s.address}/nope`)).status, 404);
  } finally {
    await s.close();
  }
});
