/**
 * A chaos campaign, run inside the control namespace: starts the cluster in the host
 * namespaces, creates small `web` and `db` VMs, drives N migrations through the CLI (manual
 * moves, drains, rebalances) and direct migrations of `dx-` VMs that live outside etcd
 * (`drover migrate --from --to`: the same protocol-2 switchover without a fence) while injecting
 * F seeded random faults, checks the invariants after every fault and once more after a settle
 * period, measures each fault's recovery time (recovery.ts), and prints one JSON line.
 */
import * as path from 'node:path';
import { Prng } from './prng';
import { ProcessSet } from './processes';
import { agentVms, drover, EtcdView, type JobRec } from './cluster-view';
import { inject, type Fault, type FaultKind } from './faults';
import { Invariants, type Figures } from './invariants';
import type { Topology } from './topology';
import { DIRECT_PREFIX, RecoveryClock, inconsistency, quantile } from './recovery';

/** What the campaign was asked to do. */
export interface CampaignOptions {
  migrations: number; faults: number; seed: number; json: boolean; kinds: FaultKind[];
  stuckMs: number; maxPausedMs: number; settleMs: number; dir: string;
  /** A killed agent is restarted no sooner than this (below the 3 s node TTL: issue #12's silent loss). */
  agentRestartMinMs: number;
  /** VMs created at the start (web and db in turn). */
  vms: number;
  /** VMs created directly on agents (outside etcd) and moved with direct migrations. */
  directVms: number;
  /** A manual-move action queues this many moves of distinct VMs at once (1 = one move). */
  batch: number;
}

/** The final JSON line. */
export type Summary = { migrations: number; faults: number } & Figures & {
  seed: number; migrationsFailed: number; directMigrations: number; directMigrationsFailed: number;
  /** Direct VMs no agent runs at the end, and of those the ones whose host was killed. */
  directLost: number; directLostExplained: number;
  faultsByKind: Record<string, number>;
  /** After the fault became detectable, ms (recovery.ts); `unrecovered` = not within its limit. */
  recoveryMs: { p50: number; max: number; unrecovered: number };
  /** The same, per fault kind. */
  recoveryByKind: Record<string, { p50: number; max: number }>;
  /** Succeeded migrations (cluster jobs and direct), ms. */
  downtimeMs: { p50: number; p99: number; n: number };
  guestBlackoutMs: { p50: number; p99: number; n: number };
  violations: string[];
};

/** What a direct migration's `--json` result carries that the summary reads. */
interface DirectResult { downtimeMs?: number; guestBlackoutMs?: number }

/** Job phases a fault is aimed at (the one that is hit is chosen by the seed). */
const AIM_PHASES = ['admitted', 'precopy', 'stopcopy', 'awaiting-commit', 'committed', 'activating'];

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Share of the load's actions that are direct migrations (when direct VMs exist). */
const DIRECT_SHARE = 0.25;

/** One campaign over a built topology. */
export class Campaign {
  private readonly rnd: Prng;
  private readonly ps: ProcessSet;
  private readonly etcd: EtcdView;
  private readonly env: NodeJS.ProcessEnv;
  private readonly inv: Invariants;
  private readonly injected: Fault[] = [];
  private readonly t0 = Date.now();
  private vmSeq = 0;
  private lastCheck = 'none yet';
  private readonly clock: RecoveryClock;
  /** Direct migrations in flight (in the background, so faults can hit them). */
  private readonly directs = new Set<Promise<void>>();
  private readonly direct = { done: 0, failed: 0, downtimes: [] as number[], blackouts: [] as number[] };
  /** Where each direct VM was last known to run (node id). */
  private readonly directHome = new Map<string, string>();

  constructor(readonly topo: Topology, readonly o: CampaignOptions) {
    this.rnd = new Prng(o.seed);
    this.ps = new ProcessSet(o.dir, topo.hosts, { DROVER_NODE_TTL_SEC: '3', DROVER_LOG_LEVEL: 'info' });
    this.etcd = new EtcdView(this.ps.etcdUrls());
    this.env = { DROVER_ETCD: this.ps.etcdUrls() };
    this.inv = new Invariants(this.etcd, topo.hosts, (h) => this.ps.agentAddr(h), { stuckMs: o.stuckMs, maxPausedMs: o.maxPausedMs }, () => this.injected);
    this.clock = new RecoveryClock(() => inconsistency(this.etcd, topo.hosts, (h) => this.ps.agentAddr(h)));
  }

  private progress(msg: string): void {
    process.stderr.write(`[chaos +${Math.round((Date.now() - this.t0) / 1000)}s] ${msg}\n`);
  }

  /** Starts etcd, agents, schedulers, migrators and waits until every node heartbeats. */
  private async startCluster(): Promise<void> {
    this.ps.declare({ migrators: 2, schedulers: 2, agentMem: '1GiB' });
    this.ps.startAll('etcd');
    await this.until(async () => { await this.etcd.vms(); return true; }, 30_000, 'etcd cluster did not serve');
    this.ps.startAll('agent');
    this.ps.startAll('scheduler');
    this.ps.startAll('migrator');
    await this.until(async () => (await this.etcd.alive()).size === this.topo.hosts.length, 60_000, 'not every agent registered');
    this.progress(`cluster up: ${this.topo.hosts.length} hosts, etcd ${this.ps.etcdUrls()}, logs in ${this.o.dir}`);
  }

  private async until(f: () => Promise<boolean>, ms: number, what: string): Promise<void> {
    const end = Date.now() + ms;
    for (;;) {
      try { if (await f()) return; } catch { /* not yet */ }
      if (Date.now() > end) throw new Error(`${what} within ${ms / 1000} s (logs in ${this.o.dir})`);
      await sleep(300);
    }
  }

  /** Creates one more small VM (web and db in turn). */
  private async createVm(): Promise<void> {
    const profile = this.vmSeq % 2 === 0 ? 'web' : 'db';
    const name = `${profile}-${++this.vmSeq}`;
    const r = await drover(['vm', 'create', name, '--mem', '64MiB', '--profile', profile, '--timeout', '30'], this.env, 40_000);
    this.progress(r.code === 0 ? r.stdout.trim() : `vm create ${name} failed: ${r.stderr.trim()}`);
  }

  /** Creates direct VM number `i` on host i mod N, outside etcd (`vm create --agent`). */
  private async createDirectVm(i: number): Promise<void> {
    const h = this.topo.hosts[i % this.topo.hosts.length];
    const name = `${DIRECT_PREFIX}${i + 1}`;
    const r = await drover(['vm', 'create', name, '--agent', this.ps.agentAddr(h), '--mem', '64MiB', '--profile', 'web', '--insecure'], {}, 40_000);
    if (r.code === 0) this.directHome.set(name, `node-${h.name.slice(1)}`);
    this.progress(r.code === 0 ? `direct VM ${name} on ${h.name}` : `vm create ${name} --agent failed: ${r.stderr.trim()}`);
  }

  /** Starts one direct migration of a running `dx-` VM to another live host, in the background. */
  private async startDirect(): Promise<string> {
    const alive = this.topo.hosts.filter((h) => this.ps.ofKind('agent').some((p) => p.host === h && !p.exited && !p.stopped));
    const lists = await Promise.all(alive.map(async (h) => [h, await agentVms(this.ps.agentAddr(h))] as const));
    const busy = this.inFlight;
    const cands = lists.flatMap(([h, vms]) => (vms ?? []).filter((v) => v.name.startsWith(DIRECT_PREFIX) && v.state === 'running' && !busy.has(v.name)).map((v) => ({ h, v })));
    if (!cands.length) return 'direct: no direct VM to move';
    const { h: from, v } = this.rnd.pick(cands);
    const others = alive.filter((h) => h !== from);
    if (!others.length) return 'direct: no other live host';
    const to = this.rnd.pick(others);
    const toNode = `node-${to.name.slice(1)}`;
    this.inFlight.add(v.name);
    const run = drover(['migrate', v.name, '--from', this.ps.agentAddr(from), '--to', this.ps.agentAddr(to), '--to-node', toNode, '--json', '--insecure'], {}, 90_000).then((r) => {
      const line = r.stdout.trim().split('\n').pop() ?? '';
      if (r.code === 0 && line.startsWith('{')) {
        const res = JSON.parse(line) as DirectResult;
        this.direct.done++;
        if (typeof res.downtimeMs === 'number') this.direct.downtimes.push(res.downtimeMs);
        if (typeof res.guestBlackoutMs === 'number' && res.guestBlackoutMs >= 0) this.direct.blackouts.push(res.guestBlackoutMs);
        this.directHome.set(v.name, toNode);
      } else {
        this.direct.failed++;
        this.progress(`direct ${v.name} ${from.name} -> ${to.name} failed: ${(r.stderr || r.stdout).trim().split('\n').pop()}`);
      }
    }).finally(() => { this.inFlight.delete(v.name); this.directs.delete(run); });
    this.directs.add(run);
    return `direct ${v.name} ${from.name} -> ${to.name}: started`;
  }

  private readonly inFlight = new Set<string>();

  private async jobsSince(): Promise<{ active: Map<string, JobRec>; done: JobRec[] }> {
    const [active, hist] = await Promise.all([this.etcd.jobs(), this.etcd.history()]);
    return { active, done: [...hist.values()].filter((j) => j.createdAt >= this.t0) };
  }

  /** One migration action: a manual move, a drain (then uncordon) or a rebalance. */
  private async act(kind: 'migrate' | 'drain' | 'rebalance' | 'direct'): Promise<string> {
    if (kind === 'direct') return this.startDirect();
    const vms = [...(await this.etcd.vms()).values()].filter((v) => v.state === 'running' && !v.job);
    const alive = [...(await this.etcd.alive())].sort();
    const marks = await this.etcd.marks();
    for (const [n] of marks) await drover(['node', 'uncordon', n], this.env);
    if (kind === 'rebalance' || vms.length === 0) return `rebalance: ${(await drover(['rebalance'], this.env)).stdout.trim().split('\n').pop() ?? ''}`;
    if (kind === 'drain') {
      const busy = alive.filter((n) => vms.some((v) => v.node === n));
      const n = busy.length ? this.rnd.pick(busy) : this.rnd.pick(alive);
      const r = await drover(['node', 'drain', n], this.env);
      return `drain ${n}: ${(r.stdout || r.stderr).trim()}`;
    }
    const lines: string[] = [];
    for (let i = 0; i < this.o.batch && vms.length; i++) {
      const vm = vms.splice(this.rnd.int(0, vms.length - 1), 1)[0];
      const to = this.rnd.pick(alive.filter((n) => n !== vm.node).length ? alive.filter((n) => n !== vm.node) : alive);
      const r = await drover(['migrate', vm.name, '--to', to, '--json'], this.env);
      lines.push(`migrate ${vm.name} ${vm.node} -> ${to}: ${r.code === 0 ? 'queued' : r.stderr.trim()}`);
    }
    return lines.join('; ');
  }

  /** Waits until no job is active and no direct migration runs (or `ms` passed). */
  private async quiesce(ms: number): Promise<void> {
    const end = Date.now() + ms;
    while (Date.now() < end) {
      try { if ((await this.etcd.jobs()).size === 0 && this.directs.size === 0) return; } catch { /* etcd busy */ }
      await sleep(500);
    }
  }

  /** Injects one fault mid-migration and checks the invariants once it is repaired. */
  private async fault(kind: FaultKind): Promise<void> {
    const active = await this.aim(this.rnd.pick(AIM_PHASES));
    const target = active.length ? active[0].to : undefined;
    const drawn = kind === 'stop-target' ? 10_000 : kind === 'stall-etcd' ? 5000 : this.rnd.int(1000, 10_000);
    const dur = kind === 'kill-agent' || kind === 'kill-target' ? Math.max(drawn, this.o.agentRestartMinMs) : drawn;
    let watching: Promise<void> = Promise.resolve();
    const f = await inject(kind, this.ps, this.rnd, dur, { target, migrator: active[0]?.migrator }, (x) => {
      this.progress(`fault ${this.injected.length + 1}/${this.o.faults}: ${x.kind} ${x.victim} for ${x.durationMs} ms${active[0] ? ` (job ${active[0].id} ${active[0].vm} ${active[0].from} -> ${active[0].to} in ${active[0].phase})` : ''}`);
      watching = this.clock.watch(x, (m) => this.progress(m));
    });
    if (!f) { this.progress(`fault ${kind}: no victim available, skipped this one`); return; }
    this.injected.push(f);
    await watching;
    if (f.killedNode) {
      await sleep(5000); // node TTL 3 s: the scheduler can mark its VMs unknown
      await this.createVm(); // keep the load up: the killed host's VMs are gone
    }
    await this.quiesce(30_000);
    await this.runCheck(false);
  }

  /** Waits (up to 4 s) until an active job is in `phase`, so the fault lands inside that window. */
  private async aim(phase: string): Promise<JobRec[]> {
    const end = Date.now() + 4000;
    let seen: JobRec[] = [];
    while (Date.now() < end) {
      try { seen = [...(await this.etcd.jobs()).values()]; } catch { seen = []; }
      if (seen.some((j) => j.phase === phase)) return seen.sort((a, b) => Number(b.phase === phase) - Number(a.phase === phase));
      await sleep(40);
    }
    return seen;
  }

  private async runCheck(final: boolean): Promise<void> {
    try { this.lastCheck = await this.inv.check(final); } catch (e) { this.lastCheck = `check failed: ${(e as Error).message}`; }
    this.progress(`invariants${final ? ' (final)' : ''}: ${this.lastCheck}`);
  }

  /** Runs the campaign; returns the summary (the cluster is stopped before it returns). */
  async run(): Promise<Summary> {
    try {
      await this.startCluster();
      for (let i = 0; i < this.o.vms; i++) await this.createVm();
      for (let i = 0; i < this.o.directVms; i++) await this.createDirectVm(i);
      await this.runCheck(false);
      await this.loop();
      this.progress(`settling (up to ${this.o.settleMs / 1000} s)`);
      for (const [n] of await this.etcd.marks()) await drover(['node', 'uncordon', n], this.env);
      await this.quiesce(this.o.settleMs);
      await sleep(4000);
      await this.runCheck(false); // the final verdicts that need two snapshots in a row get the first here
      await this.runCheck(true);
      return await this.summary();
    } finally {
      this.etcd.close();
      await this.ps.stopAll();
    }
  }

  private async loop(): Promise<void> {
    const due = Array.from({ length: this.o.faults }, (_, k) => Math.floor(((k + 0.5) * this.o.migrations) / Math.max(1, this.o.faults)));
    let step = 0;
    const end = Date.now() + 60_000 + this.o.migrations * 20_000;
    for (;;) {
      const { done } = await this.jobsSince().catch(() => ({ done: [] as JobRec[] }));
      if (done.length + this.direct.done + this.direct.failed >= this.o.migrations && this.injected.length >= this.o.faults) return;
      if (Date.now() > end) { this.progress('campaign time limit reached'); return; }
      const faultHere = due.filter((d) => d === step).length || (done.length + this.direct.done + this.direct.failed >= this.o.migrations ? 1 : 0);
      const kinds = Array.from({ length: faultHere }, () => this.rnd.pick(this.o.kinds));
      const direct = this.o.directVms > 0 && this.rnd.next() < DIRECT_SHARE;
      const action = kinds.some((k) => k.endsWith('scheduler')) ? 'drain' : direct ? 'direct' : this.rnd.next() < 0.65 ? 'migrate' : this.rnd.next() < 0.6 ? 'drain' : 'rebalance';
      this.progress(`migrations ${done.length}/${this.o.migrations}, faults ${this.injected.length}/${this.o.faults}: ${await this.act(action)}`);
      for (const k of kinds) if (this.injected.length < this.o.faults) await this.fault(k);
      if (!kinds.length) await this.quiesce(30_000);
      step++;
    }
  }

  private async summary(): Promise<Summary> {
    const { done } = await this.jobsSince();
    const f = this.inv.figures();
    const ok = done.filter((j) => j.result === 'succeeded');
    const downs = [...ok.map((j) => j.downtimeMs), ...this.direct.downtimes];
    const blackouts = [...ok.map((j) => j.guestBlackoutMs ?? -1).filter((x) => x >= 0), ...this.direct.blackouts];
    const byKind: Record<string, number> = {};
    for (const x of this.injected) byKind[x.kind] = (byKind[x.kind] ?? 0) + 1;
    const rec = this.clock.samples;
    const lost = await this.directLost();
    return {
      migrations: done.length + this.direct.done + this.direct.failed, faults: this.injected.length, ...f, seed: this.o.seed,
      migrationsFailed: done.filter((j) => j.result !== 'succeeded').length + this.direct.failed,
      directMigrations: this.direct.done + this.direct.failed, directMigrationsFailed: this.direct.failed,
      directLost: lost.lost, directLostExplained: lost.explained, faultsByKind: byKind,
      recoveryMs: { p50: quantile(rec.map((r) => r.ms), 0.5), max: Math.max(0, ...rec.map((r) => r.ms)), unrecovered: rec.filter((r) => !r.recovered).length },
      recoveryByKind: Object.fromEntries(Object.keys(byKind).map((k) => {
        const ms = rec.filter((r) => r.kind === k).map((r) => r.ms);
        return [k, { p50: quantile(ms, 0.5), max: Math.max(0, ...ms) }];
      })),
      downtimeMs: { p50: quantile(downs, 0.5), p99: quantile(downs, 0.99), n: downs.length },
      guestBlackoutMs: { p50: quantile(blackouts, 0.5), p99: quantile(blackouts, 0.99), n: blackouts.length },
      violations: this.inv.evidence,
    };
  }

  /** Direct VMs no agent runs at the end; explained when the node it last ran on was killed. */
  private async directLost(): Promise<{ lost: number; explained: number }> {
    const lists = await Promise.all(this.topo.hosts.map((h) => agentVms(this.ps.agentAddr(h))));
    const seen = new Set(lists.flatMap((l) => (l ?? []).map((v) => v.name)));
    const killed = new Set(this.injected.map((x) => x.killedNode).filter(Boolean));
    let lost = 0;
    let explained = 0;
    for (const [name, home] of this.directHome) {
      if (seen.has(name)) continue;
      lost++;
      if (killed.has(home)) explained++;
      else this.inv.evidence.push(`${new Date().toISOString()} DIRECT VM LOST: ${name} (last on ${home}) runs nowhere`);
    }
    return { lost, explained };
  }

  /** Whether any invariant was violated. */
  violated(): boolean { return this.inv.violated(); }
}

/** Where a run keeps its logs. */
export function logDir(root: string): string { return path.join(root, 'logs'); }
