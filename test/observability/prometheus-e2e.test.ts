/**
 * End to end against a real Prometheus: two agents (separate processes) with --metrics-listen run
 * a few migrations; a Prometheus started on a free port scrapes them; PromQL through its HTTP API
 * returns the downtime histogram's quantile, the succeeded count and the per-node VM counts that
 * the agents themselves report. Also: the standard gRPC health service answers on the agent.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as grpc from '@grpc/grpc-js';
import { service as healthService } from 'grpc-health-check';
import { startAgent, type AgentProcess } from '../../services/node-agent/agent-process';
import { AgentClient } from '../../services/node-agent/client/agent-client';
import type { MigrationResult } from '../../migration/types';
import { DOWNTIME_BUCKETS } from '../../lib/metrics';
import { prometheusYaml } from '../../cluster/metrics-targets';
import { waitFor } from '../support/agents';
import { freePort, histogramQuantile, startPrometheus, type TestPrometheus } from './support';

const MiB = 2 ** 20;
const procs: AgentProcess[] = [];
const clients: AgentClient[] = [];
const metricsAddrs: string[] = [];
let prom: TestPrometheus | undefined;

before(async () => {
  for (const id of ['obs-a', 'obs-b']) {
    const port = await freePort();
    const p = await startAgent(id, ['--metrics-listen', `127.0.0.1:${port}`, '--mem-capacity', '2GiB']);
    procs.push(p);
    metricsAddrs.push(`127.0.0.1:${port}`);
    const c = new AgentClient(p.address);
    await c.waitReady(10_000);
    clients.push(c);
  }
  await waitFor('agent /metrics', async () => (await fetch(`http://${metricsAddrs[1]}/metrics`)).status === 200, 10_000);
  prom = await startPrometheus(prometheusYaml(procs.map((p, i) => ({ name: p.nodeId, kind: 'agent', address: metricsAddrs[i] })), { scrapeInterval: '1s' }));
});

after(async () => {
  for (const c of clients) c.close();
  await Promise.all(procs.map((p) => p.stop(3000)));
  await prom?.stop();
});

async function scalar(q: string): Promise<number | undefined> {
  const r = await prom!.query(q);
  return r.length ? Number(r[0].value[1]) : undefined;
}

test('the standard gRPC health service answers SERVING on the agent', async () => {
  const Health = grpc.makeGenericClientConstructor(healthService as any, 'Health');
  const c = new Health(procs[0].address, grpc.credentials.createInsecure()) as any;
  try {
    for (const service of ['', 'drover.v1.NodeAgent', 'drover.v1.MigrationReceiver']) {
      const res = await new Promise<any>((resolve, reject) => c.Check({ service }, (err: Error | null, r: any) => (err ? reject(err) : resolve(r))));
      assert.ok(res.status === 'SERVING' || res.status === 1, `${service || '(server)'}: ${JSON.stringify(res)}`);
    }
  } finally {
    c.close();
  }
});

test('Prometheus scrapes the agents: downtime quantile, succeeded count, VMs per node match the cluster', async () => {
  const [a, b] = clients;
  const results: MigrationResult[] = [];
  const vms = ['obs-web1', 'obs-web2', 'obs-idle1', 'obs-db1'];
  for (const [i, name] of vms.entries()) {
    await a.createVm({ name, memBytes: 64 * MiB, vcpus: 1, profile: i === 3 ? 'db' : i === 2 ? 'idle' : 'web', seed: i + 1 });
  }
  // Three moves a → b, one back b → a: a ends with 2 VMs, b with 2.
  for (const name of vms.slice(0, 3)) results.push(await a.migrateVm(name, procs[1].address, { maxDowntimeMs: 5 }));
  results.push(await b.migrateVm('obs-web1', procs[0].address, { maxDowntimeMs: 5 }));
  // A refused migration (unknown VM) counts as failed with a bounded reason.
  await assert.rejects(a.migrateVm('no-such-vm', procs[1].address, {}));
  assert.equal(results.filter((r) => r.outcome === 'succeeded').length, 4);

  const expectedVms = new Map<string, number>();
  for (const c of clients) { const info = await c.nodeInfo(); expectedVms.set(info.nodeId, info.vms.length); }
  assert.deepEqual([...expectedVms.values()].sort(), [2, 2]);

  // Wait until Prometheus has scraped the final state: the refused migration came last, so a
  // scrape that already shows 4 successes may predate it.
  await waitFor('Prometheus to see 4 succeeded migrations and the refused one', async () =>
    (await scalar('sum(drover_migrations_finished_total{result="succeeded"})')) === 4
    && (await scalar('sum(drover_migrations_finished_total{result="failed",reason="not_found"})')) === 1, 30_000, 500);
  await waitFor('Prometheus to see the VMs per node', async () => {
    const r = await prom!.query('sum by (node) (drover_node_vms)');
    return r.length === 2 && r.every((s) => Number(s.value[1]) === expectedVms.get(s.metric.node));
  }, 30_000, 500);

  // Succeeded count, and the failure with its bounded reason.
  assert.equal(await scalar('sum(drover_migrations_finished_total{result="succeeded"})'), 4);
  assert.equal(await scalar('sum(drover_migrations_started_total)'), 5);
  assert.equal(await scalar('sum(drover_migrations_finished_total{result="failed",reason="not_found"})'), 1);
  assert.equal(await scalar('sum(drover_migration_downtime_seconds_count)'), 4);

  // The downtime quantiles from the histogram equal those computed from the agents' own results.
  const downtimes = results.map((r) => r.downtimeMs / 1000);
  const buckets: [number, number][] = [...DOWNTIME_BUCKETS, Infinity].map((le) => [le, downtimes.filter((d) => d <= le).length]);
  for (const q of [0.5, 0.99]) {
    const got = await scalar(`histogram_quantile(${q}, sum by (le) (drover_migration_downtime_seconds_bucket))`);
    const want = histogramQuantile(q, buckets);
    assert.ok(got !== undefined && Math.abs(got - want) < 1e-9, `p${q * 100}: Prometheus ${got}, from results ${want} (downtimes ${downtimes.join(', ')})`);
    // ... and lies in the bucket that holds the true quantile.
    const sorted = [...downtimes].sort((x, y) => x - y);
    const truth = sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)];
    const upper = DOWNTIME_BUCKETS.find((le) => le >= truth) ?? Infinity;
    const lower = [...DOWNTIME_BUCKETS].reverse().find((le) => le < truth) ?? 0;
    assert.ok(got! >= lower && got! <= upper, `p${q * 100} ${got} within (${lower}, ${upper}] around ${truth}`);
  }
  const sum = await scalar('sum(drover_migration_downtime_seconds_sum)');
  assert.ok(Math.abs(sum! - downtimes.reduce((x, y) => x + y, 0)) < 1e-6, `downtime sum ${sum}`);
  const rounds = await scalar('sum(drover_migration_rounds_sum)');
  assert.equal(rounds, results.reduce((n, r) => n + r.rounds, 0));
  const pages = await scalar('sum(drover_migration_sent_bytes_total{kind="pages"})');
  assert.equal(pages, results.reduce((n, r) => n + r.pageBytes, 0));

  // gRPC metrics by method and status; node capacity.
  assert.equal(await scalar('sum(drover_grpc_server_handled_total{method="MigrateVm",code="OK"})'), 4);
  assert.equal(await scalar('sum(drover_grpc_server_handled_total{method="MigrateVm",code="NOT_FOUND"})'), 1);
  assert.equal(await scalar('sum(drover_grpc_server_handled_total{method="PrepareIncoming",code="OK"})'), 4);
  assert.equal(await scalar('sum(drover_node_memory_bytes)'), 2 * 2 * 1024 * MiB);
  assert.equal(await scalar('count(up{job="drover-agent"} == 1)'), 2);
  // Nothing in flight any more.
  assert.equal(await scalar('sum(drover_migrations_inflight{direction="outbound"})'), 0);

  // Structured logs: every migration line carries migration, vm and node.
  const lines = procs.flatMap((p) => p.stderrTail().split('\n')).filter((l) => l.startsWith('{')).map((l) => { try { return JSON.parse(l); } catch { return undefined; } }).filter(Boolean);
  const migrationLines = lines.filter((l) => l.migration);
  assert.ok(migrationLines.length >= 4, `${migrationLines.length} migration log lines`);
  for (const l of migrationLines) assert.ok(l.vm && l.node, `log line without vm/node: ${JSON.stringify(l)}`);
});
