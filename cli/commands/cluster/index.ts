/**
 * The cluster commands of `drover` (etcd from --etcd or DROVER_ETCD): up, demo, migrator,
 * scheduler, vm create|list|show|destroy, migrate VM --to NODE, migrations list|watch|cancel,
 * node list|cordon|uncordon|drain, rebalance. Bad input and impossible requests exit 2 with one
 * line and write nothing (every change is one etcd transaction).
 */
import * as path from 'node:path';
import type { Etcd3 } from 'etcd3';
import { parse, flag, str, size, int, required, address, UsageError, type OptionSpec } from '../../args';
import { DroverError, failedPrecondition, notFound } from '../../../lib/errors';
import { PROFILE_NAMES, type ProfileName, type VmSpec } from '../../../hypervisor/types';
import { AgentClient } from '../../../services/node-agent/client/agent-client';
import { connectEtcd, getJson, readHistory, readSnapshot, casJson, updateJson, type ClusterSnapshot } from '../../../cluster/etcd';
import { cancelJob, createJob } from '../../../cluster/jobs';
import { keys, TERMINAL_PHASES, type ClusterConfig, type JobRecord, type NodeMark, type VmRecord } from '../../../cluster/keyspace';
import { sleep } from '../../../cluster/log';
import { LocalCluster } from '../../../services/local-cluster';
import { planModel } from '../../../services/scheduler/model';
import { placeVm, planEvacuation, planRebalance } from '../../../services/scheduler/planner';
import { Migrator } from '../../../services/migrator/service';
import { Scheduler } from '../../../services/scheduler/service';
import { startMetricsServer } from '../../../lib/metrics';
import { etcdUrl, jobJson, jobLine, MiB, nodesJson, table, withEtcd } from './common';

const ETCD: OptionSpec = { etcd: { type: 'string' } };

/** Runs a cluster command; returns the exit code. */
export async function runClusterCommand(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  switch (cmd) {
    case 'up': return upCommand(rest);
    case 'demo': return (await import('./demo')).demoCommand(rest);
    case 'migrator': return serviceCommand('migrator', rest);
    case 'scheduler': return serviceCommand('scheduler', rest);
    case 'vm': return vmCommand(rest);
    case 'migrate': return migrateCommand(rest);
    case 'migrations': return migrationsCommand(rest);
    case 'node': return nodeCommand(rest);
    case 'rebalance': return rebalanceCommand(rest);
    default: throw new UsageError(`unknown cluster command "${cmd ?? ''}"`);
  }
}

function noExtra(p: { positionals: string[] }, n: number, usage: string): void {
  if (p.positionals.length > n) throw new UsageError(`unexpected argument "${p.positionals[n]}" (usage: ${usage})`);
}

function waitSignal(): Promise<void> {
  return new Promise((resolve) => {
    process.once('SIGINT', () => resolve());
    process.once('SIGTERM', () => resolve());
  });
}

// ---------------------------------------------------------------- up, migrator, scheduler

async function upCommand(argv: string[]): Promise<number> {
  const usage = 'drover up --nodes N --dir DIR [--etcd URL] [--mem-capacity 2GiB] [--aggressiveness 1-5]';
  const p = parse(argv, { ...ETCD, nodes: { type: 'string' }, dir: { type: 'string' }, 'mem-capacity': { type: 'string' }, aggressiveness: { type: 'string' } }, 'up');
  noExtra(p, 0, usage);
  const nodes = int(p, 'nodes', 3)!;
  if (nodes < 1 || nodes > 64) throw new UsageError(`up: --nodes ${nodes} must be 1..64`);
  const dir = path.resolve(required(p, 'dir', 'up'));
  const agg = int(p, 'aggressiveness');
  if (agg !== undefined && (agg < 1 || agg > 5)) throw new UsageError('up: --aggressiveness must be 1..5');
  size(p, 'mem-capacity');
  const cluster = new LocalCluster({
    nodes, dir, etcdUrl: str(p, 'etcd') ?? undefined, agentMem: str(p, 'mem-capacity'),
    config: agg !== undefined ? { aggressiveness: agg } : undefined,
  });
  const stopping = waitSignal();
  try {
    await cluster.start();
  } catch (e) {
    await cluster.stop();
    throw e;
  }
  console.log(`drover: cluster up: ${nodes} nodes, etcd ${cluster.etcdUrl}${str(p, 'etcd') ? '' : ' (local)'}, logs in ${dir}`);
  console.log(`  export $(cat ${path.join(dir, 'drover.env')})   # then: drover node list, drover vm create ...`);
  console.log('  Ctrl-C stops everything');
  await stopping;
  console.log('drover: stopping the cluster');
  await cluster.stop();
  return 0;
}

async function serviceCommand(kind: 'migrator' | 'scheduler', argv: string[]): Promise<number> {
  const p = parse(argv, { ...ETCD, id: { type: 'string' }, 'metrics-listen': { type: 'string' } }, kind);
  noExtra(p, 0, `drover ${kind} [--etcd URL] [--id ID] [--metrics-listen HOST:PORT]`);
  const metricsListen = str(p, 'metrics-listen') ? address(str(p, 'metrics-listen')!, '--metrics-listen') : undefined;
  const etcd = await connectEtcd(etcdUrl(p, kind));
  const id = str(p, 'id');
  const svc = kind === 'migrator' ? new Migrator(etcd, { id }) : new Scheduler(etcd, { id });
  await svc.start();
  // `drover up` reads this line (in DIR/<id>.log) to learn the port.
  const metrics = metricsListen ? await startMetricsServer(metricsListen) : undefined;
  if (metrics) process.stdout.write(`drover ${kind} ${svc.id} metrics on ${metrics.address}\n`);
  await waitSignal();
  await svc.stop();
  await metrics?.close();
  etcd.close();
  return 0;
}

// ---------------------------------------------------------------- vm

async function vmCommand(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  const p = parse(rest, {
    ...ETCD, mem: { type: 'string' }, profile: { type: 'string' }, node: { type: 'string' }, vcpus: { type: 'string' },
    json: { type: 'boolean' }, seed: { type: 'string' }, 'timeout': { type: 'string' },
  }, `vm ${sub ?? ''}`.trim());
  switch (sub) {
    case 'create': return vmCreate(p);
    case 'list': noExtra(p, 0, 'drover vm list [--json]'); return withEtcd(p, 'vm list', (e) => vmList(e, flag(p, 'json')));
    case 'show': return withEtcd(p, 'vm show', async (e) => {
      const name = p.positionals[0];
      if (!name) throw new UsageError('vm show: which VM? (drover vm show NAME)');
      const v = await getJson<VmRecord>(e, keys.vm(name));
      if (!v) throw notFound(`no VM named "${name}"`);
      console.log(JSON.stringify(v.value, null, 2));
      return 0;
    });
    case 'destroy': return withEtcd(p, 'vm destroy', (e) => vmDestroy(e, p.positionals[0]));
    default: throw new UsageError(`vm: unknown subcommand "${sub ?? ''}" (create, list, show, destroy)`);
  }
}

async function vmCreate(p: ReturnType<typeof parse>): Promise<number> {
  const usage = 'drover vm create NAME --mem 256MiB --profile idle|web|db|mmuncher [--node NODE] [--vcpus N]';
  const name = p.positionals[0];
  if (!name) throw new UsageError(`vm create: a VM name is required (usage: ${usage})`);
  noExtra(p, 1, usage);
  if (!/^[a-z0-9][a-z0-9-]{0,62}$/.test(name)) throw new UsageError(`vm create: name "${name}" is invalid (lower-case letters, digits, '-', up to 63)`);
  const mem = size(p, 'mem');
  if (mem === undefined) throw new UsageError(`vm create: --mem is required (usage: ${usage})`);
  if (mem < 16 * MiB || mem % 4096 !== 0) throw new UsageError(`vm create: --mem ${str(p, 'mem')} must be at least 16MiB and a multiple of 4KiB`);
  const profile = (str(p, 'profile') ?? 'idle') as ProfileName;
  if (!PROFILE_NAMES.includes(profile)) throw new UsageError(`vm create: --profile "${profile}" is not one of ${PROFILE_NAMES.join(', ')}`);
  const vcpus = int(p, 'vcpus', 1)!;
  const spec: VmSpec = { name, memBytes: mem, vcpus, profile };
  const seed = int(p, 'seed');
  if (seed !== undefined) spec.seed = seed;
  const timeoutMs = (int(p, 'timeout', 120)!) * 1000;
  return withEtcd(p, 'vm create', async (etcd) => {
    const rec = await createVmRecord(etcd, spec, str(p, 'node') ?? '');
    const v = await waitPlaced(etcd, rec.name, timeoutMs);
    console.log(`vm ${name} running on ${v.node} (${(mem / MiB).toFixed(0)} MiB, ${profile})`);
    return 0;
  });
}

/** Checks and writes a new pending VM record (nothing is written when the request cannot be met). */
export async function createVmRecord(etcd: Etcd3, spec: VmSpec, node: string): Promise<VmRecord> {
  const snap = await readSnapshot(etcd);
  if (snap.vms.has(spec.name)) throw new DroverError('ALREADY_EXISTS', `a VM named "${spec.name}" already exists (on ${snap.vms.get(spec.name)!.value.node || 'no node yet'})`);
  const model = planModel(snap);
  if (node) {
    const n = snap.nodes.get(node);
    if (!n) throw notFound(`no node named "${node}" (nodes: ${[...snap.nodes.keys()].join(', ') || 'none'})`);
    if (n.state !== 'ready') throw failedPrecondition(`node ${node} is ${n.state}: it takes no new VMs`);
    const pn = model.nodes.find((x) => x.id === node)!;
    const free = pn.memTotalBytes - pn.memUsedBytes;
    if (free < spec.memBytes) throw new DroverError('RESOURCE_EXHAUSTED', `VM "${spec.name}" needs ${(spec.memBytes / MiB).toFixed(0)} MiB; node ${node} has ${(free / MiB).toFixed(0)} MiB free`);
    const cpus = pn.vcpusTotal - (pn.vcpusAllocated ?? 0);
    if (cpus < spec.vcpus) throw new DroverError('RESOURCE_EXHAUSTED', `VM "${spec.name}" needs ${spec.vcpus} vCPU(s); node ${node} has ${cpus} free`);
  } else if (!placeVm(model.nodes, spec)) {
    const ready = model.nodes.filter((n) => n.schedulable);
    if (ready.length === 0) throw failedPrecondition('no schedulable node (is the cluster up? drover node list)');
    const most = Math.max(...ready.map((n) => n.memTotalBytes - n.memUsedBytes));
    if (most >= spec.memBytes) throw new DroverError('RESOURCE_EXHAUSTED', `VM "${spec.name}" needs ${spec.vcpus} vCPU(s) and ${(spec.memBytes / MiB).toFixed(0)} MiB; no node has both free`);
    throw new DroverError('RESOURCE_EXHAUSTED', `VM "${spec.name}" needs ${(spec.memBytes / MiB).toFixed(0)} MiB; the most free memory on any node is ${(most / MiB).toFixed(0)} MiB`);
  }
  const rec: VmRecord = { name: spec.name, spec, node: '', desiredNode: node, state: 'pending', lastMovedAt: 0, lastFrom: '', error: '', job: '', createdAt: Date.now() };
  if (!(await casJson(etcd, keys.vm(spec.name), '0', rec))) throw new DroverError('ALREADY_EXISTS', `a VM named "${spec.name}" already exists`);
  return rec;
}

/** Waits until the scheduler placed and started the VM; removes the record if it could not. */
export async function waitPlaced(etcd: Etcd3, name: string, timeoutMs: number): Promise<VmRecord> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await getJson<VmRecord>(etcd, keys.vm(name));
    if (!v) throw notFound(`VM "${name}" was removed while it was being created`);
    if (v.value.state === 'running') return v.value;
    if (v.value.state === 'failed') {
      await etcd.if(keys.vm(name), 'Mod', '==', v.modRevision).then(etcd.delete().key(keys.vm(name))).commit();
      throw new DroverError(/bytes|memory|free/.test(v.value.error) ? 'RESOURCE_EXHAUSTED' : 'FAILED_PRECONDITION', `VM "${name}" was not created: ${v.value.error}`);
    }
    if (Date.now() > deadline) throw new DroverError('DEADLINE_EXCEEDED', `VM "${name}" is still ${v.value.state} after ${timeoutMs / 1000} s (is a scheduler running?)`);
    await sleep(200);
  }
}

async function vmList(etcd: Etcd3, json: boolean): Promise<number> {
  const snap = await readSnapshot(etcd);
  const vms = [...snap.vms.values()].map((v) => v.value).sort((a, b) => a.name.localeCompare(b.name, undefined, { numeric: true }));
  const hb = new Map<string, { dirty: number; cpu: number }>();
  for (const n of snap.nodes.values()) for (const v of n.heartbeat?.vms ?? []) if (v.name) hb.set(`${n.id}/${v.name}`, { dirty: v.dirtyRateBytesPerSec, cpu: v.cpu });
  const rows = vms.map((v) => ({
    name: v.name, node: v.node, state: v.state, memBytes: v.spec.memBytes, vcpus: v.spec.vcpus, profile: v.spec.profile,
    job: v.job, dirtyRateBytesPerSec: hb.get(`${v.node}/${v.name}`)?.dirty ?? 0, cpu: hb.get(`${v.node}/${v.name}`)?.cpu ?? 0, error: v.error,
  }));
  if (json) { console.log(JSON.stringify(rows)); return 0; }
  console.log(table(['NAME', 'NODE', 'STATE', 'MEM', 'PROFILE', 'DIRTY', 'JOB'],
    rows.map((r) => [r.name, r.node || '-', r.state, `${(r.memBytes / MiB).toFixed(0)} MiB`, r.profile, `${(r.dirtyRateBytesPerSec / MiB).toFixed(1)} MiB/s`, r.job || '-'])));
  return 0;
}

async function vmDestroy(etcd: Etcd3, name: string | undefined): Promise<number> {
  if (!name) throw new UsageError('vm destroy: which VM? (drover vm destroy NAME)');
  const v = await getJson<VmRecord>(etcd, keys.vm(name));
  if (!v) throw notFound(`no VM named "${name}"`);
  if (v.value.job) throw failedPrecondition(`VM "${name}" is being migrated (job ${v.value.job}); cancel it or wait`);
  if (v.value.state === 'unknown') throw failedPrecondition(`VM "${name}" is on ${v.value.node}, which is not heartbeating; it cannot be destroyed safely now`);
  // Fence first: mark the record so nobody schedules it, then destroy on the owner, then delete.
  if (!(await casJson(etcd, keys.vm(name), v.modRevision, { ...v.value, state: 'failed', error: 'being destroyed', job: 'destroy' }))) throw new DroverError('ABORTED', `VM "${name}" changed; try again`);
  if (v.value.node) {
    const n = await getJson<{ address: string }>(etcd, keys.node(v.value.node));
    if (n) {
      const agent = new AgentClient(n.value.address);
      try { await agent.destroyVm(name); } catch (e) {
        if ((e as DroverError).code !== 'NOT_FOUND') {
          await updateJson<VmRecord>(etcd, keys.vm(name), () => v.value);
          throw e;
        }
      } finally { agent.close(); }
    }
  }
  await etcd.delete().key(keys.vm(name));
  console.log(`vm ${name} destroyed`);
  return 0;
}

// ---------------------------------------------------------------- migrate, migrations

async function migrateCommand(argv: string[]): Promise<number> {
  const usage = 'drover migrate VM --to NODE [--wait] [--json]';
  const p = parse(argv, { ...ETCD, to: { type: 'string' }, wait: { type: 'boolean' }, json: { type: 'boolean' } }, 'migrate');
  const vm = p.positionals[0];
  if (!vm) throw new UsageError(`migrate: which VM? (usage: ${usage})`);
  noExtra(p, 1, usage);
  const to = required(p, 'to', 'migrate');
  return withEtcd(p, 'migrate', async (etcd) => {
    const job = await createJob(etcd, { vm, to, reason: 'manual' });
    if (!flag(p, 'wait')) {
      if (flag(p, 'json')) console.log(JSON.stringify(jobJson(job)));
      else console.log(`migration ${job.id} queued: ${vm} ${job.from} -> ${to} (drover migrations watch ${job.id})`);
      return 0;
    }
    const done = await watchJob(etcd, job.id, flag(p, 'json') ? () => {} : (j) => console.log(jobLine(j)));
    if (flag(p, 'json')) console.log(JSON.stringify(jobJson(done)));
    return done.result === 'succeeded' ? 0 : 1;
  });
}

/** Follows a job until it finishes, calling `show` on each change; returns the final record. */
export async function watchJob(etcd: Etcd3, id: string, show: (j: JobRecord) => void, timeoutMs = 600_000): Promise<JobRecord> {
  let last = '';
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const j = (await getJson<JobRecord>(etcd, keys.job(id))) ?? (await getJson<JobRecord>(etcd, keys.history(id)));
    if (!j) throw notFound(`no migration with id "${id}"`);
    const line = jobLine(j.value);
    if (line !== last) { show(j.value); last = line; }
    if (TERMINAL_PHASES.has(j.value.phase)) return j.value;
    if (Date.now() > deadline) throw new DroverError('DEADLINE_EXCEEDED', `migration ${id} not finished after ${timeoutMs / 1000} s`);
    await sleep(250);
  }
}

async function migrationsCommand(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  const p = parse(rest, { ...ETCD, json: { type: 'boolean' }, active: { type: 'boolean' } }, `migrations ${sub ?? ''}`.trim());
  return withEtcd(p, `migrations ${sub ?? ''}`, async (etcd) => {
    switch (sub) {
      case 'list': {
        noExtra(p, 0, 'drover migrations list [--json] [--active]');
        const snap = await readSnapshot(etcd);
        const active = [...snap.jobs.values()].map((j) => j.value);
        const all = flag(p, 'active') ? active : [...(await readHistory(etcd)), ...active];
        all.sort((a, b) => a.createdAt - b.createdAt || a.id.localeCompare(b.id));
        if (flag(p, 'json')) { console.log(JSON.stringify(all.map(jobJson))); return 0; }
        console.log(table(['ID', 'VM', 'FROM', 'TO', 'REASON', 'PHASE', 'RESULT', 'DOWNTIME', 'TOTAL', 'ROUNDS', 'SENT'],
          all.map(jobJson).map((j) => [j.id, j.vm, j.from, j.to, j.reason, j.phase, j.result || '-', j.result === 'succeeded' ? `${j.downtimeMs.toFixed(2)} ms` : '-',
            j.totalMs ? `${j.totalMs.toFixed(0)} ms` : '-', j.rounds, `${(j.bytesSent / MiB).toFixed(0)} MiB`])));
        return 0;
      }
      case 'watch': {
        noExtra(p, 1, 'drover migrations watch [ID]');
        const id = p.positionals[0];
        if (id) {
          const j = await watchJob(etcd, id, (x) => console.log(flag(p, 'json') ? JSON.stringify(jobJson(x)) : jobLine(x)));
          return j.result === 'succeeded' ? 0 : 1;
        }
        await watchAll(etcd, (line) => console.log(line), waitSignal());
        return 0;
      }
      case 'cancel': {
        const id = p.positionals[0];
        if (!id) throw new UsageError('migrations cancel: which migration? (drover migrations cancel ID)');
        noExtra(p, 1, 'drover migrations cancel ID');
        const r = await cancelJob(etcd, id);
        if (r === 'cancelled') { console.log(`migration ${id} cancelled (it had not started)`); return 0; }
        const j = await watchJob(etcd, id, () => {}, 120_000);
        if (j.result === 'cancelled' || (j.result === 'failed' && /cancel/.test(j.error))) { console.log(`migration ${id} cancelled in phase ${j.progress ? 'copy' : j.phase}; the VM runs on ${j.from}`); return 0; }
        console.log(`migration ${id} finished before the cancel took effect: ${j.result}`);
        return 1;
      }
      default: throw new UsageError(`migrations: unknown subcommand "${sub ?? ''}" (list, watch, cancel)`);
    }
  });
}

/** Prints job changes (new, phase, progress, finished) until `until` resolves. */
export async function watchAll(etcd: Etcd3, out: (line: string) => void, until: Promise<void>): Promise<void> {
  let done = false;
  void until.then(() => { done = true; });
  const seen = new Map<string, string>();
  const finished = new Set<string>((await readHistory(etcd)).map((j) => j.id));
  while (!done) {
    const snap = await readSnapshot(etcd);
    for (const { value: j } of snap.jobs.values()) {
      const line = jobLine(j);
      if (seen.get(j.id) !== line) { out(line); seen.set(j.id, line); }
    }
    for (const id of seen.keys()) {
      if (!snap.jobs.has(id) && !finished.has(id)) {
        finished.add(id);
        const h = await getJson<JobRecord>(etcd, keys.history(id));
        if (h) out(jobLine(h.value));
      }
    }
    await sleep(300);
  }
}

// ---------------------------------------------------------------- node

async function nodeCommand(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  const p = parse(rest, { ...ETCD, json: { type: 'boolean' }, wait: { type: 'boolean' }, timeout: { type: 'string' } }, `node ${sub ?? ''}`.trim());
  return withEtcd(p, `node ${sub ?? ''}`, async (etcd) => {
    if (sub === 'list') {
      noExtra(p, 0, 'drover node list [--json]');
      const snap = await readSnapshot(etcd);
      const nodes = nodesJson(snap);
      if (flag(p, 'json')) { console.log(JSON.stringify(nodes)); return 0; }
      console.log(table(['NODE', 'STATE', 'ADDRESS', 'MEM USED', 'LOAD', 'VMS', 'NOTE'],
        nodes.map((n) => [n.id, n.state, n.address, `${(n.memUsedBytes / MiB).toFixed(0)}/${(n.memTotalBytes / MiB).toFixed(0)} MiB`, `${(n.load * 100).toFixed(0)}%`, n.vms.join(',') || '-', n.note || ''])));
      return 0;
    }
    if (!['cordon', 'uncordon', 'drain'].includes(sub ?? '')) throw new UsageError(`node: unknown subcommand "${sub ?? ''}" (list, cordon, uncordon, drain)`);
    const id = p.positionals[0];
    if (!id) throw new UsageError(`node ${sub}: which node? (drover node ${sub} NODE)`);
    noExtra(p, 1, `drover node ${sub} NODE`);
    const snap = await readSnapshot(etcd);
    const n = snap.nodes.get(id);
    if (!n) throw notFound(`no node named "${id}" (nodes: ${[...snap.nodes.keys()].join(', ') || 'none'})`);
    const mark = await getJson<NodeMark>(etcd, keys.mark(id));
    const put = async (m: NodeMark | undefined) => {
      const cmp = mark ? etcd.if(keys.mark(id), 'Mod', '==', mark.modRevision) : etcd.if(keys.mark(id), 'Create', '==', 0);
      const r = await cmp.then(m ? etcd.put(keys.mark(id)).value(JSON.stringify(m)) : etcd.delete().key(keys.mark(id))).commit();
      if (!r.succeeded) throw new DroverError('ABORTED', `node ${id} changed meanwhile; try again`);
    };
    if (sub === 'uncordon') {
      if (!mark) { console.log(`node ${id} is not cordoned`); return 0; }
      await put(undefined);
      console.log(`node ${id} uncordoned (was ${mark.value.state})`);
      return 0;
    }
    if (sub === 'cordon') {
      if (mark) { console.log(`node ${id} is already ${mark.value.state}`); return 0; }
      await put({ state: 'cordoned', since: Date.now() });
      console.log(`node ${id} cordoned: no new VMs or migrations to it`);
      return 0;
    }
    // drain
    if (mark?.value.state !== 'draining' && mark?.value.state !== 'drained') {
      const model = planModel(snap);
      const others = model.nodes.filter((x) => x.id !== id && x.schedulable);
      if (others.length === 0) throw failedPrecondition(`cannot drain ${id}: it is the last schedulable node (no other node could take its VMs)`);
      const vms = model.vms.filter((v) => v.node === id).map((v) => ({ ...v, movable: true }));
      const ev = planEvacuation(model.nodes, vms, id);
      if (ev.unplaced.length) throw new DroverError('RESOURCE_EXHAUSTED', `cannot drain ${id}: ${ev.unplaced.map((u) => `${u.vm}: ${u.reason}`).join('; ')}`);
      await put({ state: 'draining', since: Date.now() });
      console.log(`node ${id} draining: ${vms.length} VM(s) to move`);
    } else {
      console.log(`node ${id} is already ${mark.value.state}`);
    }
    if (!flag(p, 'wait')) return 0;
    const deadline = Date.now() + (int(p, 'timeout', 600)! * 1000);
    const printed = new Set<string>();
    for (;;) {
      const s = await readSnapshot(etcd);
      for (const { value: j } of s.jobs.values()) if (j.from === id && !printed.has(j.id + j.phase)) { printed.add(j.id + j.phase); console.log(`  ${jobLine(j)}`); }
      const m = s.nodes.get(id)?.mark;
      if (!m) throw failedPrecondition(`node ${id} was uncordoned during the drain`);
      if (m.state === 'drained') { console.log(`node ${id} drained`); return 0; }
      if (Date.now() > deadline) throw new DroverError('DEADLINE_EXCEEDED', `node ${id} still draining${m.note ? ` (${m.note})` : ''}`);
      await sleep(300);
    }
  });
}

// ---------------------------------------------------------------- rebalance

async function rebalanceCommand(argv: string[]): Promise<number> {
  const p = parse(argv, { ...ETCD, 'dry-run': { type: 'boolean' }, json: { type: 'boolean' }, aggressiveness: { type: 'string' } }, 'rebalance');
  noExtra(p, 0, 'drover rebalance [--dry-run] [--aggressiveness 1-5] [--json]');
  const agg = int(p, 'aggressiveness');
  if (agg !== undefined && (agg < 1 || agg > 5)) throw new UsageError('rebalance: --aggressiveness must be 1..5');
  return withEtcd(p, 'rebalance', async (etcd) => {
    const snap = await readSnapshot(etcd);
    const model = planModel(snap);
    const plan = planRebalance(model.nodes, model.vms, { aggressiveness: agg ?? snap.config.aggressiveness });
    if (flag(p, 'json')) console.log(JSON.stringify(plan));
    else printPlan(plan);
    if (flag(p, 'dry-run') || plan.moves.length === 0) return 0;
    for (const m of plan.moves) {
      const job = await createJob(etcd, { vm: m.vm, to: m.to, reason: 'rebalance', predictedBytes: m.predictedBytes });
      if (!flag(p, 'json')) console.log(`queued ${job.id}: ${m.vm} ${m.from} -> ${m.to}`);
    }
    return 0;
  });
}

export function printPlan(plan: ReturnType<typeof planRebalance>): void {
  console.log(`imbalance ${plan.imbalanceBefore.toFixed(3)} (threshold ${plan.threshold}, aggressiveness ${plan.aggressiveness}) -> ${plan.imbalanceAfter.toFixed(3)} after ${plan.moves.length} move(s) [${plan.stop}]`);
  if (plan.moves.length) {
    console.log(table(['VM', 'FROM', 'TO', 'MEM', 'PREDICTED BYTES', 'PREDICTED TIME', 'IMBALANCE AFTER'],
      plan.moves.map((m) => [m.vm, m.from, m.to, `${(m.memBytes / MiB).toFixed(0)} MiB`, `${(m.predictedBytes / MiB).toFixed(0)} MiB`, `${m.predictedMs.toFixed(0)} ms`, m.imbalanceAfter.toFixed(3)])));
    console.log(`predicted cost: ${(plan.predictedBytes / MiB).toFixed(0)} MiB on the wire, ${plan.predictedMs.toFixed(0)} ms of migration`);
  }
}

/** Writes fields of the cluster config (used by demo and tests). */
export async function setConfig(etcd: Etcd3, patch: Partial<ClusterConfig>): Promise<void> {
  await updateJson<Partial<ClusterConfig>>(etcd, keys.config(), (cur) => ({ ...(cur ?? {}), ...patch }));
}

export type { ClusterSnapshot };
