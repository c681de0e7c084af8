/**
 * A local cluster (etcd, agents, scheduler, migrator as processes): `drover up`'s LocalCluster
 * writes DROVER_METRICS and DIR/prometheus.yml; a real Prometheus run on that very file scrapes
 * every process; control-plane metrics (leader, lease, jobs, VMs per node) match the cluster.
 * The cluster runs as `drover up` does, with mutual TLS: Prometheus scrapes over HTTPS with the
 * monitor identity the generated config names (scheme: https, tls_config).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { startCluster, cli, cliEnv, waitFor } from '../cluster/support';
import { startPrometheus } from './support';

test('drover up: DROVER_METRICS and prometheus.yml; Prometheus scrapes agents, scheduler and migrator over TLS', async () => {
  const c = await startCluster({ nodes: 2, insecure: false });
  let prom: Awaited<ReturnType<typeof startPrometheus>> | undefined;
  try {
    const env = fs.readFileSync(path.join(c.opts.dir, 'drover.env'), 'utf8');
    assert.match(env, /^DROVER_ETCD=https:/m);
    assert.match(fs.readFileSync(path.join(c.opts.dir, 'prometheus.yml'), 'utf8'), /scheme: https\n {4}tls_config:/);
    const metrics = /^DROVER_METRICS=(.+)$/m.exec(env)?.[1].split(',') ?? [];
    assert.equal(metrics.length, 4, env);
    for (const m of metrics) assert.match(m, /^127\.0\.0\.1:[0-9]+$/);
    const yml = path.join(c.opts.dir, 'prometheus.yml');
    assert.match(execFileSync('promtool', ['check', 'config', yml], { encoding: 'utf8' }), /SUCCESS/);
    const config = fs.readFileSync(yml, 'utf8').replace(/scrape_interval: \S+/g, 'scrape_interval: 1s').replace(/evaluation_interval: \S+/g, 'evaluation_interval: 1s');
    prom = await startPrometheus(config);
    const scalar = async (q: string) => { const r = await prom!.query(q); return r.length ? Number(r[0].value[1]) : undefined; };

    assert.equal((await cli(c.etcdUrl, ['vm', 'create', 'obs1', '--mem', '64MiB', '--profile', 'web', '--node', 'node-1'], undefined, cliEnv(c))).code, 0);
    const m = await cli(c.etcdUrl, ['migrate', 'obs1', '--to', 'node-2', '--wait', '--json'], undefined, cliEnv(c));
    assert.equal(m.code, 0, m.stdout + m.stderr);

    await waitFor('all 4 targets up', async () => (await scalar('count(up == 1)')) === 4, 30_000, 500);
    await waitFor('one scheduler leader', async () => (await scalar('sum(drover_scheduler_leader)')) === 1, 30_000, 500);
    await waitFor('the migrator holds its lease', async () => (await scalar('sum(drover_etcd_lease_up{service="migrator"})')) === 1, 30_000, 500);
    await waitFor('the job counted as succeeded', async () =>
      (await scalar('sum(drover_migrator_jobs_finished_total{result="succeeded",trigger="manual"})')) === 1, 30_000, 500);
    await waitFor('the agent counted the migration', async () =>
      (await scalar('sum(drover_migrations_finished_total{result="succeeded"})')) === 1, 30_000, 500);
    await waitFor('VMs per node', async () => {
      const r = await prom!.query('sum by (node) (drover_node_vms)');
      const by = Object.fromEntries(r.map((s) => [s.metric.node, Number(s.value[1])]));
      return by['node-1'] === 0 && by['node-2'] === 1;
    }, 30_000, 500);
    await waitFor('the scheduler sees the VM running', async () => (await scalar('sum(drover_cluster_vms{state="running"})')) === 1, 30_000, 500);
    assert.equal(await scalar('max(drover_migrator_limit{limit="outbound_per_node"})') !== undefined, true);
    assert.equal(await scalar('count(drover_node_load_ratio)'), 2);
  } finally {
    await prom?.stop();
    await c.stopAll();
  }
});
