/**
 * The invariants a campaign checks after every fault and at the end: no VM runs twice, every
 * guest check passes, etcd names the node where each VM runs (no orphans), no job stuck, the
 * longest guest pause beyond the injected outage, and VMs lost with a killed host are reported
 * as such (state unknown/failed in etcd), never silently running nowhere.
 */
import { agentVms, verifyVm, type AgentVm, type EtcdView } from './cluster-view';
import type { Fault } from './faults';
import type { HostNet } from './topology';
import { DIRECT_PREFIX } from './recovery';

/** The campaign's figures (the keys of the final JSON line). */
export interface Figures {
  vmsRunTwice: number; vmsCorrupted: number; vmsOrphaned: number; jobsStuck: number;
  maxPausedMs: number; vmsLost: number; vmsLostExplained: number;
}

/** Bounds of the checks. */
export interface Bounds { stuckMs: number; maxPausedMs: number }

/** Where each VM runs now, by VM name: [node, state] per agent that lists it. */
type Placement = Map<string, { node: string; host: HostNet; state: string }[]>;

/** Accumulates violations over a campaign. */
export class Invariants {
  private readonly runTwice = new Set<string>();
  private readonly corrupted = new Set<string>();
  private readonly orphaned = new Set<string>();
  private readonly stuck = new Set<string>();
  private readonly lost = new Set<string>();
  private readonly lostExplained = new Set<string>();
  private readonly suspects = new Map<string, string>();
  private readonly jobPhase = new Map<string, { phase: string; since: number }>();
  private maxPaused = 0;
  /** Evidence lines of every violation, in order. */
  readonly evidence: string[] = [];

  constructor(private readonly etcd: EtcdView, private readonly hosts: HostNet[], private readonly agentAddr: (h: HostNet) => string,
    private readonly bounds: Bounds, private readonly faults: () => Fault[]) {}

  private violate(set: Set<string>, key: string, line: string): void {
    if (set.has(key)) return;
    set.add(key);
    this.evidence.push(`${new Date().toISOString()} ${line}`);
  }

  /** A suspect becomes a violation when it is seen on two checks in a row (or on the final one). */
  private confirm(next: Map<string, string>, final: boolean, set: Set<string>, key: string, line: string): void {
    next.set(key, line);
    if (final || this.suspects.has(key)) this.violate(set, key.slice(key.indexOf(':') + 1), `${line}${this.suspects.has(key) ? ` (first seen: ${this.suspects.get(key)})` : ''}`);
  }

  private async placement(): Promise<{ where: Placement; unreachable: string[] }> {
    const where: Placement = new Map();
    const unreachable: string[] = [];
    const lists = await Promise.all(this.hosts.map(async (h) => [h, await agentVms(this.agentAddr(h))] as const));
    for (const [h, vms] of lists) {
      if (!vms) { unreachable.push(h.name); continue; }
      for (const v of vms as AgentVm[]) where.set(v.name, [...(where.get(v.name) ?? []), { node: v.node, host: h, state: v.state }]);
    }
    return { where, unreachable };
  }

  /** Runs every check once; returns a one-line summary. `final` = after the settle period. */
  async check(final: boolean): Promise<string> {
    const { where, unreachable } = await this.placement();
    const [vms, jobs] = await Promise.all([this.etcd.vms(), this.etcd.jobs()]);
    const next = new Map<string, string>();
    for (const [name, places] of where) {
      const running = places.filter((p) => p.state === 'running');
      if (running.length > 1) this.confirm(next, final, this.runTwice, `twice:${name}`, `RUN TWICE: ${name} runs on ${running.map((p) => p.node).join(' and ')}`);
    }
    await Promise.all([...where].flatMap(([name, places]) => places.map((p) => this.verifyOne(name, p))));
    for (const [name, rec] of vms) this.checkRecord(name, rec, where.get(name) ?? [], jobs, unreachable, final, next);
    for (const [name, places] of where) {
      // Direct (`dx-`) VMs live outside etcd: run twice, guest check and pause apply, not the record.
      if (!vms.has(name) && !name.startsWith(DIRECT_PREFIX)) this.confirm(next, final, this.orphaned, `orphan:${name}`, `ORPHAN: ${name} runs on ${places.map((p) => p.node).join(',')} but etcd has no record of it`);
    }
    this.checkJobs(jobs);
    this.suspects.clear();
    for (const [k, v] of next) this.suspects.set(k, v);
    return `${where.size} VMs seen, ${jobs.size} active jobs${unreachable.length ? `, unreachable agents: ${unreachable.join(',')}` : ''}; violations so far ${this.evidence.length}`;
  }

  private async verifyOne(name: string, p: { node: string; host: HostNet; state: string }): Promise<void> {
    if (p.state === 'migrating') return;
    const r = await verifyVm(this.agentAddr(p.host), name);
    if (typeof r === 'string') return; // migrating or gone meanwhile: checked next time
    if (!r.ok) this.violate(this.corrupted, name, `CORRUPTED: ${name} on ${p.node}: guest check failed: ${r.badPages} bad page(s) ${r.detail.slice(0, 200)}`);
    const credit = Math.max(0, ...this.faults().filter((f) => f.hosts.includes('*') || f.hosts.includes(p.host.name)).map((f) => f.durationMs));
    const paused = Math.max(0, r.heartbeatMaxGapMs - credit);
    if (paused > this.maxPaused) this.maxPaused = paused;
    if (paused > this.bounds.maxPausedMs) {
      this.evidence.push(`${new Date().toISOString()} PAUSED: ${name} on ${p.node} (state ${p.state}): heartbeat max gap ${r.heartbeatMaxGapMs} ms, injected outage credit ${credit} ms -> ${paused} ms > bound ${this.bounds.maxPausedMs} ms`);
    }
  }

  private checkRecord(name: string, rec: { node: string; state: string; job: string; error: string }, places: { node: string; state: string }[],
    jobs: Map<string, { vm: string }>, unreachable: string[], final: boolean, next: Map<string, string>): void {
    const inJob = rec.job !== '' || [...jobs.values()].some((j) => j.vm === name);
    const ownerUnreachable = unreachable.includes(`h${rec.node.replace('node-', '')}`);
    if (rec.state === 'pending' || rec.state === 'creating' || ownerUnreachable) return;
    if (places.length === 0) {
      const explained = rec.state === 'unknown' || rec.state === 'failed';
      // One snapshot can miss a VM mid-switchover (agents are listed, then etcd is read): a VM
      // counts as lost silently only when the check before the final one missed it too.
      if (!final) { if (!explained) next.set(`lost:${name}`, 'missing'); return; }
      if (!explained && !this.suspects.has(`lost:${name}`)) return;
      this.lost.add(name);
      if (explained) this.lostExplained.add(name);
      else this.evidence.push(`${new Date().toISOString()} LOST SILENTLY: ${name}: etcd says ${rec.state} on ${rec.node || '-'} (error "${rec.error}"), no agent runs it`);
      return;
    }
    if (inJob && !final) return;
    const elsewhere = places.filter((p) => p.node !== rec.node);
    if (elsewhere.length) {
      this.confirm(next, final, this.orphaned, `orphan:${name}`, `ORPHAN: ${name}: etcd owner ${rec.node || '-'} (state ${rec.state}, job "${rec.job}"), agents report ${places.map((p) => `${p.node}:${p.state}`).join(', ')}`);
    } else if (!places.some((p) => p.state === 'running') && rec.state === 'running') {
      this.confirm(next, final, this.orphaned, `orphan:${name}`, `NOT RUNNING: ${name}: etcd says running on ${rec.node}, the agent reports ${places.map((p) => p.state).join(',')}`);
    }
  }

  private checkJobs(jobs: Map<string, { id: string; vm: string; phase: string; from: string; to: string }>): void {
    const now = Date.now();
    for (const [id, j] of jobs) {
      const seen = this.jobPhase.get(id);
      if (!seen || seen.phase !== j.phase) { this.jobPhase.set(id, { phase: j.phase, since: now }); continue; }
      if (now - seen.since > this.bounds.stuckMs) this.violate(this.stuck, id, `STUCK JOB: ${id} (${j.vm} ${j.from} -> ${j.to}) in phase ${j.phase} for ${Math.round((now - seen.since) / 1000)} s`);
    }
  }

  /** The figures so far. */
  figures(): Figures {
    return {
      vmsRunTwice: this.runTwice.size, vmsCorrupted: this.corrupted.size, vmsOrphaned: this.orphaned.size, jobsStuck: this.stuck.size,
      maxPausedMs: Math.round(this.maxPaused), vmsLost: this.lost.size, vmsLostExplained: this.lostExplained.size,
    };
  }

  /** Whether any invariant was violated. */
  violated(): boolean {
    const f = this.figures();
    return f.vmsRunTwice + f.vmsCorrupted + f.vmsOrphaned + f.jobsStuck > 0 || f.maxPausedMs > this.bounds.maxPausedMs || f.vmsLost > f.vmsLostExplained;
  }
}
