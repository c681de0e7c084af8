/**
 * The cost model through the cluster, end to end with mutual TLS (real etcd with RBAC, agent,
 * scheduler and migrator processes, the real CLI as the admin): `drover analyze VM` finds the
 * VM's node in etcd; bad input exits 2 with one line; each migration stores the model's
 * prediction beside its outcome (`migrations list --json`), the migrator learns the pair's link
 * rate (`links/<from>/<to>`), and the next analysis and `vm list` use it; `rebalance --dry-run`
 * prints the model's cost and why each move was picked.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { startCluster, cli, waitFor, readSnapshot } from '../cluster/support';
import { getJson } from '../../cluster/etcd';
import { keys, type JobPrediction, type LinkRecord } from '../../cluster/keyspace';
import type { LocalCluster } from '../../services/local-cluster';

const MiB = 2 ** 20;
type C = LocalCluster & { stopAll(): Promise<void> };
let c: C | undefined;
after(async () => { await c?.stopAll(); });

interface Migration { id: string; vm: string; result: string; totalMs: number; bytesSent: number; downtimeMs: number; prediction?: JobPrediction }

/** One line on stderr, exit 2, matching `re`. */
function oneLine(r: { code: number; stderr: string }, re: RegExp): void {
  assert.equal(r.code, 2, r.stderr);
  const lines = r.stderr.trim().split('\n');
  assert.equal(lines.length, 1, r.stderr);
  assert.match(lines[0], re);
}

function report(m: Migration): string {
  const p = m.prediction!;
  const err = (a: number, b: number) => `${(((a - b) / b) * 100).toFixed(0)}%`;
  return `${m.vm}: predicted ${p.totalMs.toFixed(0)} ms ${(p.bytes / MiB).toFixed(1)} MiB downtime ${p.downtimeMs.toFixed(2)} ms (${p.policy}, dirtying from ${p.from}, link ${p.link} ${(p.linkBytesPerSec / MiB).toFixed(0)} MiB/s); `
    + `actual ${m.totalMs.toFixed(0)} ms ${(m.bytesSent / MiB).toFixed(1)} MiB downtime ${m.downtimeMs.toFixed(2)} ms; error total ${err(m.totalMs, p.totalMs)} bytes ${err(m.bytesSent, p.bytes)}`;
}

test('analyze through the cluster; predictions stored beside outcomes; the link rate is learned and used', async () => {
  c = await startCluster({ nodes: 2, insecure: false, config: { autoRebalance: false, cooldownMs: 0 } });
  const e = c.etcdUrl;
  for (const [name, profile] of [['web1', 'web'], ['idle1', 'idle']]) {
    const r = await cli(e, ['vm', 'create', name, '--mem', '128MiB', '--profile', profile, '--node', 'node-1']);
    assert.equal(r.code, 0, r.stderr);
  }

  oneLine(await cli(e, ['analyze', 'nope', '--window', '100ms']), /^drover: analyze: no VM named "nope" in the cluster$/);
  oneLine(await cli(e, ['analyze', 'web1', '--bandwidth', '0']), /--bandwidth must be above 0/);
  oneLine(await cli(e, ['analyze', 'web1', '--bandwidth=-1Gbit']), /--bandwidth/);
  oneLine(await cli(e, ['analyze', 'web1', '--window', '5ms']), /--window 5 ms is outside/);
  oneLine(await cli(e, ['analyze', 'web1', '--to', 'node-9']), /--to node-9 is not a node/);

  // Through the cluster, as the admin: no --agent, no link measured yet.
  const a1 = await cli(e, ['analyze', 'web1', '--window', '1s', '--json']);
  assert.equal(a1.code, 0, a1.stderr);
  const web = JSON.parse(a1.stdout);
  assert.match(web.linkNote, /^assumed: no migration from node-1 measured yet/);
  const top = web.wss[web.wss.length - 1].bytes;
  assert.ok(top > 12 * MiB && top <= 16.5 * MiB, `web's 16 MiB working set: ${top}`);
  // The node's heartbeat now carries the observation (the migrator's prediction uses it).
  await waitFor('the heartbeat carries the observation', async () => {
    const hb = (await readSnapshot(c!.etcd!)).nodes.get('node-1')?.heartbeat?.vms.find((v) => v.name === 'web1');
    return hb?.observed && hb.observed.wss.length === web.wss.length;
  }, 10_000);

  const m1 = await cli(e, ['migrate', 'idle1', '--to', 'node-2', '--wait', '--json']);
  assert.equal(m1.code, 0, m1.stderr);
  const idle = JSON.parse(m1.stdout) as Migration;
  assert.equal(idle.result, 'succeeded');
  assert.ok(idle.prediction, 'the job carries its prediction');
  assert.equal(idle.prediction!.converges, true);
  assert.equal(idle.prediction!.policy, 'precopy');
  assert.equal(idle.prediction!.link, 'default');
  assert.ok(idle.prediction!.bytes > 8 * MiB && idle.prediction!.totalMs > 0);
  console.log(report(idle));

  const link = await getJson<LinkRecord>(c.etcd!, keys.link('node-1', 'node-2'));
  assert.ok(link, 'the migrator recorded the pair');
  assert.equal(link!.value.samples, 1);
  // The pair's rate is the migration's own throughput (one sample), whatever the host's load made it.
  assert.ok(link!.value.bytesPerSec > 0 && Number.isFinite(link!.value.bytesPerSec), `rate ${link!.value.bytesPerSec}`);

  // The next analysis uses the measured rate; the next job's prediction uses it and the observation.
  const a2 = JSON.parse((await cli(e, ['analyze', 'web1', '--window', '500ms', '--json'])).stdout);
  assert.match(a2.linkNote, /^measured: node-1\/node-2 /);
  assert.equal(a2.linkBytesPerSec, link!.value.bytesPerSec);
  const m2 = await cli(e, ['migrate', 'web1', '--to', 'node-2', '--wait', '--json']);
  assert.equal(m2.code, 0, m2.stderr);
  const w = JSON.parse(m2.stdout) as Migration;
  assert.equal(w.prediction?.link, 'measured');
  assert.equal(w.prediction?.from, 'observed');
  console.log(report(w));

  const list = JSON.parse((await cli(e, ['migrations', 'list', '--json'])).stdout) as Migration[];
  assert.deepEqual(list.map((j) => !!j.prediction).sort(), [true, true]);
  const human = await cli(e, ['migrations', 'list']);
  assert.match(human.stdout.split('\n')[0], /PREDICTED$/);

  // vm list: each VM's predicted move cost next to its dirty rate.
  const vl = await cli(e, ['vm', 'list']);
  assert.match(vl.stdout.split('\n')[0], /DIRTY +MOVE TIME +MOVE BYTES +CONVERGES/);
  const rows = JSON.parse((await cli(e, ['vm', 'list', '--json'])).stdout) as { name: string; predictedMove?: JobPrediction }[];
  for (const r of rows) assert.ok(r.predictedMove && r.predictedMove.bytes > 0, `${r.name} has a predicted move`);

  // rebalance --dry-run: both VMs on node-2, node-1 empty; per move the model's cost and why.
  const dry = await cli(e, ['rebalance', '--dry-run', '--aggressiveness', '5', '--json']);
  assert.equal(dry.code, 0, dry.stderr);
  const plan = JSON.parse(dry.stdout) as { moves: { vm: string; predictedBytes: number; predictedMs: number; predictedDowntimeMs: number; why: string }[] };
  assert.ok(plan.moves.length >= 1, dry.stdout);
  for (const mv of plan.moves) {
    assert.ok(mv.predictedBytes > 0 && mv.predictedMs > 0 && mv.predictedDowntimeMs > 0, JSON.stringify(mv));
    assert.match(mv.why, /^node-2 load [0-9.]+ -> node-1 [0-9.]+: imbalance .* of \d+ improving move\(s\)/);
  }
  const text = await cli(e, ['rebalance', '--dry-run', '--aggressiveness', '5']);
  assert.match(text.stdout, /PREDICTED DOWNTIME +IMBALANCE AFTER +WHY/);
  assert.equal((await readSnapshot(c.etcd!)).jobs.size, 0, 'a dry run writes nothing');
});
