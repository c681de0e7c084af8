/**
 * `drover demo`: a local cluster (real etcd, agents, scheduler and migrator processes) with VMs
 * piled on one node; automatic rebalancing by live migration, shown as it happens; then a node
 * evacuated for maintenance; then a summary table per migration and a check that every VM runs
 * exactly once, where etcd says, with its guest memory intact.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parse, flag, str, int, UsageError } from '../../args';
import type { Etcd3 } from 'etcd3';
import { readHistory, readSnapshot, getJson, type ClusterSnapshot } from '../../../cluster/etcd';
import { keys, type SchedulerStatus } from '../../../cluster/keyspace';
import { sleep } from '../../../cluster/log';
import { LocalCluster } from '../../../services/local-cluster';
import { AgentClient } from '../../../services/node-agent/client/agent-client';
import { planModel } from '../../../services/scheduler/model';
import { imbalance, thresholdOf } from '../../../services/scheduler/planner';
import { createVmRecord, setConfig, waitPlaced, watchAll } from '../../../cluster/ops';
import { jobJson, MiB, nodesJson, table, useEnvIdentity } from './common';
import { insecureWarning } from '../../tls-flags';
import { nodeCommand } from './node';
import { rebalanceCommand } from './rebalance';
import type { ProfileName } from '../../../hypervisor/types';

/** The demo's VMs, all created on node-1 (MiB, workload profile). */
const VMS: { name: string; mem: number; profile: ProfileName }[] = [
  { name: 'web-1', mem: 128, profile: 'web' },
  { name: 'db-1', mem: 128, profile: 'db' },
  { name: 'web-2', mem: 96, profile: 'web' },
  { name: 'idle-1', mem: 64, profile: 'idle' },
  { name: 'idle-2', mem: 64, profile: 'idle' },
  { name: 'db-2', mem: 96, profile: 'db' },
];

/** Placement wait per demo VM, ms. */
const PLACE_TIMEOUT_MS = 120_000;
/** Time for the heartbeats to carry measured dirty rates before planning, ms. */
const HEARTBEAT_SETTLE_MS = 2500;
/** Longest the automatic rebalance may take, ms. */
const BALANCE_TIMEOUT_MS = 180_000;
/** A scheduler plan at most this old counts as the current one, ms. */
const FRESH_PLAN_MS = 3000;

const say = (s: string) => console.log(s);
const step = (s: string) => console.log(`\n== ${s}`);

/** `drover demo [--nodes 3] [--dir DIR] [--keep] [--aggressiveness L]`; returns the exit code. */
export async function demoCommand(argv: string[]): Promise<number> {
  const p = parse(argv, { nodes: { type: 'string' }, dir: { type: 'string' }, keep: { type: 'boolean' }, aggressiveness: { type: 'string' }, insecure: { type: 'boolean' } }, 'demo');
  if (p.positionals.length) throw new UsageError(`demo: unexpected argument "${p.positionals[0]}" (usage: drover demo [--nodes 3] [--dir DIR] [--keep] [--insecure])`);
  const nodes = int(p, 'nodes', 3)!;
  if (nodes < 2 || nodes > 8) throw new UsageError('demo: --nodes must be 2..8');
  const agg = int(p, 'aggressiveness', 3)!;
  const dir = path.resolve(str(p, 'dir') ?? fs.mkdtempSync(path.join(os.tmpdir(), 'drover-demo-')));

  const insecure = flag(p, 'insecure');
  if (insecure) console.error(insecureWarning('demo: the cluster'));
  const cluster = new LocalCluster({
    nodes, dir, agentMem: '1GiB', agentVcpus: 16, insecure,
    config: { autoRebalance: false, aggressiveness: agg, maxConcurrent: 2, cooldownMs: 120_000 },
  });
  let interrupted = false;
  const onSig = () => { interrupted = true; };
  process.once('SIGINT', onSig);
  try {
    step(`Starting a local cluster: etcd, ${nodes} node agents, a scheduler and a migrator (logs in ${dir})`);
    await cluster.start();
    const etcd = cluster.etcd!;
    const url = cluster.etcdUrl;
    say(`etcd ${url}; every process is separate: kill one and watch the others cope`);
    if (cluster.pki) {
      // The demo's own commands act as the cluster's admin, as `export $(cat DIR/drover.env)` would.
      Object.assign(process.env, { DROVER_CA: cluster.pki.caFile, DROVER_CERT: cluster.pki.admin.cert, DROVER_KEY: cluster.pki.admin.key });
      useEnvIdentity('demo');
      say(`mutual TLS on every channel, etcd with client certificates and RBAC; identities in ${cluster.pki.dir}`);
    }
    await createVms(etcd, url);
    const snap1 = await rebalance(etcd, url, agg, () => interrupted);
    const victim = nodesJson(snap1).filter((n) => n.state === 'ready').sort((a, b) => b.vms.length - a.vms.length)[0].id;
    step(`Maintenance: draining ${victim} (cordon, then every VM moves to a node the scheduler picks; 1 outbound at a time)`);
    await nodeCommand(['drain', victim, '--wait', '--etcd', url]);
    await nodeCommand(['list', '--etcd', url]);
    await summary(etcd);
    const bad = await verify(etcd);
    await nodeCommand(['uncordon', victim, '--etcd', url]);
    say(bad === 0 ? '\nall good.' : `\n${bad} problem(s) found.`);
    return bad === 0 ? 0 : 1;
  } finally {
    process.removeListener('SIGINT', onSig);
    step('Stopping the cluster');
    await cluster.stop();
    if (!flag(p, 'keep') && !str(p, 'dir')) fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** Creates the demo's VMs, all on node-1, and lists the nodes. */
async function createVms(etcd: Etcd3, url: string): Promise<void> {
  step(`Creating ${VMS.length} VMs, all on node-1 (automatic rebalancing is off for now)`);
  for (const v of VMS) {
    await createVmRecord(etcd, { name: v.name, memBytes: v.mem * MiB, vcpus: 1, profile: v.profile }, 'node-1');
    const rec = await waitPlaced(etcd, v.name, PLACE_TIMEOUT_MS);
    say(`  ${v.name.padEnd(7)} ${String(v.mem).padStart(4)} MiB ${v.profile.padEnd(5)} on ${rec.node}`);
  }
  await sleep(HEARTBEAT_SETTLE_MS); // heartbeats carry the measured dirty rates
  await nodeCommand(['list', '--etcd', url]);
}

/** Turns automatic rebalancing on and follows the moves until balanced; returns the balanced snapshot. */
async function rebalance(etcd: Etcd3, url: string, agg: number, interrupted: () => boolean): Promise<ClusterSnapshot> {
  const snap0 = await readSnapshot(etcd);
  const imb0 = imbalance(planModel(snap0).nodes);
  step(`Turning automatic rebalancing on: imbalance ${imb0.toFixed(3)}, threshold ${thresholdOf(agg)} (aggressiveness ${agg}); moves appear as they happen`);
  await rebalanceCommand(['--dry-run', '--etcd', url]);
  await setConfig(etcd, { autoRebalance: true });
  await followUntil(etcd, async () => {
    const s = await readSnapshot(etcd);
    if (s.jobs.size > 0) return false;
    const st = await getJson<SchedulerStatus>(etcd, keys.schedulerStatus());
    const imb = imbalance(planModel(s).nodes);
    return imb <= thresholdOf(agg) && !!st && st.value.lastPlanAt > Date.now() - FRESH_PLAN_MS;
  }, BALANCE_TIMEOUT_MS, interrupted);
  const snap1 = await readSnapshot(etcd);
  say(`balanced: imbalance ${imbalance(planModel(snap1).nodes).toFixed(3)} <= ${thresholdOf(agg)}`);
  await nodeCommand(['list', '--etcd', url]);
  return snap1;
}

/** Prints every migration and the downtime median and maximum. */
async function summary(etcd: Etcd3): Promise<void> {
  step('Every migration');
  const hist = (await readHistory(etcd)).map(jobJson);
  const blackout = (v: number) => (v >= 0 ? `${v.toFixed(1)} ms` : '-');
  say(table(['VM', 'FROM', 'TO', 'WHY', 'RESULT', 'DOWNTIME', 'GUEST BLACKOUT', 'PAUSED', 'TOTAL', 'ROUNDS', 'BYTES SENT'],
    hist.map((j) => [j.vm, j.from, j.to, j.reason, j.result, `${j.downtimeMs.toFixed(2)} ms`, blackout(j.guestBlackoutMs), `${j.pausedMs.toFixed(1)} ms`,
      `${j.totalMs.toFixed(0)} ms`, j.rounds, `${(j.bytesSent / MiB).toFixed(1)} MiB`])));
  const ok = hist.filter((j) => j.result === 'succeeded');
  if (ok.length) {
    const d = ok.map((j) => j.downtimeMs).sort((a, b) => a - b);
    say(`${ok.length} migrations, downtime median ${d[Math.floor(d.length / 2)].toFixed(2)} ms, max ${d[d.length - 1].toFixed(2)} ms`);
  }
}

/** Checks every VM runs on exactly the node etcd records, with its guest memory intact; returns the problems found. */
async function verify(etcd: Etcd3): Promise<number> {
  step('Checking: every VM runs on exactly one node, the one etcd records, and its guest memory checks out');
  const snap2 = await readSnapshot(etcd);
  const where = new Map<string, string[]>();
  for (const n of snap2.nodes.values()) {
    const a = new AgentClient(n.record.address);
    try {
      for (const v of await a.listVms()) if (v.state === 'running') where.set(v.spec.name, [...(where.get(v.spec.name) ?? []), n.id]);
    } finally { a.close(); }
  }
  let bad = 0;
  for (const { value: v } of snap2.vms.values()) {
    const on = where.get(v.name) ?? [];
    const a = new AgentClient(snap2.nodes.get(v.node)!.record.address);
    let check = 'not checked';
    try { const r = await a.verifyVm(v.name); check = r.ok ? `guest check ok (${r.pagesChecked} pages)` : `GUEST CHECK FAILED: ${r.detail}`; if (!r.ok) bad++; } catch (e) { check = `verify failed: ${(e as Error).message}`; bad++; } finally { a.close(); }
    const good = on.length === 1 && on[0] === v.node;
    if (!good) bad++;
    say(`  ${v.name.padEnd(7)} etcd: ${v.node}  running on: ${on.join(', ') || 'nowhere'}  ${good ? 'ok' : 'WRONG'}  ${check}`);
  }
  return bad;
}

/** Prints job changes until `done` holds (or the time is up, or the user interrupted). */
async function followUntil(etcd: Etcd3, done: () => Promise<boolean>, timeoutMs: number, stop: () => boolean): Promise<void> {
  let finish!: () => void;
  const until = new Promise<void>((r) => { finish = r; });
  const watching = watchAll(etcd, (l) => console.log(`  ${l}`), until);
  const deadline = Date.now() + timeoutMs;
  try {
    for (;;) {
      await sleep(500);
      if (stop()) throw new UsageError('demo: interrupted');
      if (await done()) break;
      if (Date.now() > deadline) throw new Error(`not balanced within ${timeoutMs / 1000} s`);
    }
  } finally {
    await sleep(400);
    finish();
    await watching;
  }
}
