/**
 * The scheduler service (`drover scheduler`): one leader among replicas (etcd3 Election under
 * `election/scheduler`); work runs only while this replica leads, and every job it creates is
 * fenced on its campaign key, so a replica that lost leadership cannot write a decision.
 *
 * Each round (once a second, and on changes) the leader:
 * 1. reconciles liveness: VMs of a node whose heartbeat lease expired become `unknown` (never
 *    started elsewhere: the node may still run them); they return to `running` when it reports them;
 *    a VM its live node has not reported for LOST_VM_GRACE_MS (an agent restarted within its
 *    lease comes back empty) becomes `unknown` too, with a `lost: ...` reason (lost-vms.ts); at
 *    once when the node's agent registered anew after the VM was placed there (restarted-agents.ts:
 *    a heartbeat of a new registration starts a round); an `unknown` VM that exactly one live node
 *    reports running (and no job or switchover record holds) gets its record pointed there
 *    (stray-vms.ts), so an orphan etcd lost track of is managed again;
 * 2. places pending VMs (capacity-aware, spread), creating them on the chosen agent;
 * 3. continues drains: a rolling window of evacuation jobs from each draining node (targets chosen
 *    now, with the memory reserved by jobs in flight), then marks the node drained; the state lives
 *    in etcd, so a new leader resumes a drain where the old one stopped;
 * 4. rebalances when the imbalance exceeds the aggressiveness threshold: a few moves at a time
 *    (no more than the migration limits admit), only VMs out of their cool-down, and only once the
 *    previous moves have finished and settled;
 * 5. every HISTORY_PRUNE_EVERY_MS, prunes the job history to the config's `historyMaxJobs` and
 *    `historyMaxAgeMs` (cluster/history.ts), fenced on its campaign key.
 */
import type { Etcd3 } from 'etcd3';
import { AgentClient, agentCredentials } from '../node-agent/client/agent-client';
import { casJson, getJson, readSnapshot, type ClusterSnapshot } from '../../cluster/etcd';
import { requestMigration } from '../../cluster/ops/migrations';
import { capacityShortfall } from '../../cluster/capacity';
import { makeLogger, type Logger } from '../../cluster/log';
import { keys, type NodeHeartbeat, type NodeMark, type SchedulerStatus, type VmRecord, type LinkRecord } from '../../cluster/keyspace';
import { planModel } from './model';
import { findStrays } from './stray-vms';
import { readLinks } from './move-cost';
import { controlMetrics } from '../../cluster/control-metrics';
import { schedulerMetrics } from './scheduler-metrics';
import { LostVmTracker, type LostVm } from './lost-vms';
import { missingFromRegistration, placedBeforeThen } from './restarted-agents';
import { pruneHistory } from '../../cluster/history';
import { imbalance, placeVm, planEvacuation, planRebalance, thresholdOf } from './planner';

/** How often the leader prunes the job history, ms: a keys-only read of at most `historyMaxJobs` keys, so cheap; 10 s of lag is immaterial. */
export const HISTORY_PRUNE_EVERY_MS = 10_000;

/** Options of a scheduler replica. */
export interface SchedulerOptions {
  id?: string;
  /** Election lease TTL, s (default 3). */
  ttlSec?: number;
  roundMs?: number;
  /** Quiet time after rebalancing moves finish before planning again, ms (default 3000). */
  settleMs?: number;
  log?: Logger;
}

/** A scheduler replica: campaigns for leadership; the leader places, drains and rebalances. */
export class Scheduler {
  readonly id: string;
  private readonly log: Logger;
  private leading = false;
  private campaignKey = '';
  private campaign?: ReturnType<ReturnType<Etcd3['election']>['campaign']>;
  private timer?: NodeJS.Timeout;
  private stopped = false;
  private busy = false;
  private lastRebalanceActivity = 0;
  /** A rebalance was triggered and has not reached its target yet (hysteresis). */
  private rebalancing = false;
  private readonly creating = new Set<string>();
  private readonly lost = new LostVmTracker();
  private lastPruneAt = 0;
  /** An urgent round (a new registration) was asked for while one ran: run another right after it. */
  private again = false;
  /** The registration revision last seen in each node's heartbeat (a new one starts a round). */
  private readonly registrations = new Map<string, string>();
  private watcher?: Awaited<ReturnType<ReturnType<Etcd3['watch']>['create']>>;

  constructor(private readonly etcd: Etcd3, private readonly opts: SchedulerOptions = {}) {
    this.id = opts.id ?? `scheduler-${process.pid}`;
    this.log = opts.log ?? makeLogger(this.id);
    schedulerMetrics().track(this);
  }

  /** True while this replica is the leader. */
  isLeader(): boolean {
    return this.leading;
  }

  /** Joins the election; works whenever elected. */
  async start(): Promise<void> {
    this.campaignOnce();
    this.timer = setInterval(() => void this.round(), this.opts.roundMs ?? 1000);
    // Without the watch (etcd down at start) the periodic round still finds them, a round later.
    await this.watchRegistrations().catch((e) => this.log('heartbeat watch not started', { error: (e as Error).message }));
    this.log('started; campaigning');
  }

  /** Starts a round as soon as a node's heartbeat comes from a new registration (a restarted agent). */
  private async watchRegistrations(): Promise<void> {
    const w = await this.etcd.watch().prefix(keys.alives()).create();
    this.watcher = w;
    w.on('put', (kv) => {
      let rev: string | undefined;
      try { rev = (JSON.parse(kv.value.toString()) as NodeHeartbeat).registrationRev; } catch { return; }
      const node = kv.key.toString().slice(keys.alives().length);
      if (!rev || this.registrations.get(node) === rev) return;
      const known = this.registrations.has(node);
      this.registrations.set(node, rev);
      if (known && this.leading) { this.log('node registered anew: checking its VMs now', { node, registrationRev: rev }); void this.round(true); }
    });
    w.on('error', (e) => this.log('heartbeat watch error', { error: (e as Error).message }));
  }

  private campaignOnce(): void {
    if (this.stopped) return;
    const election = this.etcd.namespace(keys.electionPrefix().replace(/election\/$/, '')).election('scheduler', this.opts.ttlSec ?? 3);
    const c = election.campaign(this.id);
    this.campaign = c;
    c.on('elected', async () => {
      try {
        this.campaignKey = await c.getCampaignKey();
        this.leading = true;
        this.lastRebalanceActivity = Date.now();
        this.log('elected leader');
        schedulerMetrics().elected(); controlMetrics().lease('scheduler', true);
        await casJson(this.etcd, keys.schedulerStatus(), (await getJson(this.etcd, keys.schedulerStatus()))?.modRevision ?? '0',
          { leader: this.id, since: Date.now(), lastPlanAt: 0, imbalance: 0, threshold: 0 } satisfies SchedulerStatus).catch(() => false);
        void this.round();
      } catch (e) {
        this.log('election error', { error: (e as Error).message });
      }
    });
    c.on('error', (e) => {
      if (this.leading) this.log('leadership lost: stopping work', { error: e.message });
      if (this.leading) controlMetrics().lease('scheduler', false);
      this.leading = false;
      this.campaignKey = '';
      if (this.campaign === c) setTimeout(() => this.campaignOnce(), 500);
    });
  }

  /** Resigns and stops. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.leading = false;
    if (this.timer) clearInterval(this.timer);
    await this.watcher?.cancel().catch(() => {});
    await this.campaign?.resign().catch(() => {});
  }

  private async stillLeader(): Promise<boolean> {
    if (!this.leading || !this.campaignKey) return false;
    const r = await this.etcd.get(this.campaignKey).exec();
    if (r.kvs.length === 0) { this.leading = false; return false; }
    return true;
  }

  /** One scheduling round (exported for tests through `runRound`); `urgent`: run again right after one in progress. */
  async round(urgent = false): Promise<void> {
    if (this.stopped) return;
    if (this.busy) { if (urgent) this.again = true; return; }
    this.busy = true;
    this.again = false;
    try {
      if (!(await this.stillLeader())) return;
      let snap = await readSnapshot(this.etcd);
      await this.reconcile(snap);
      if (!(await this.stillLeader())) return;
      snap = await readSnapshot(this.etcd);
      await this.place(snap);
      if (!(await this.stillLeader())) return;
      snap = await readSnapshot(this.etcd);
      schedulerMetrics().observe(snap, imbalance(planModel(snap).nodes, snap.config.loadWeights), thresholdOf(snap.config.aggressiveness));
      const draining = await this.drains(snap);
      if (!(await this.stillLeader())) return;
      if (!draining) await this.rebalance(await readSnapshot(this.etcd));
      await this.pruneHistory(snap);
    } catch (e) {
      this.log('round failed', { error: (e as Error).message });
      controlMetrics().loopError('scheduler');
    } finally {
      this.busy = false;
      if (this.again) void this.round(true);
    }
  }

  /** Deletes finished jobs beyond the configured count and age (at most every HISTORY_PRUNE_EVERY_MS). */
  private async pruneHistory(snap: ClusterSnapshot): Promise<void> {
    if (Date.now() - this.lastPruneAt < HISTORY_PRUNE_EVERY_MS || !this.campaignKey) return;
    this.lastPruneAt = Date.now();
    const { historyMaxJobs: maxJobs, historyMaxAgeMs: maxAgeMs } = snap.config;
    const n = await pruneHistory(this.etcd, { maxJobs, maxAgeMs }, this.campaignKey);
    if (n > 0) this.log('job history pruned', { deleted: n, maxJobs, maxAgeMs });
  }

  private fence(txn: ReturnType<Etcd3['if']>): ReturnType<Etcd3['if']> {
    return txn.and(this.campaignKey, 'Version', '>', 0);
  }

  private async putVm(name: string, rev: string, value: VmRecord): Promise<boolean> {
    const r = await this.fence(this.etcd.if(keys.vm(name), 'Mod', '==', rev)).then(this.etcd.put(keys.vm(name)).value(JSON.stringify(value))).commit();
    return r.succeeded;
  }

  /** VMs of dead nodes → unknown; back to running when their node reports them again. */
  private async reconcile(snap: ClusterSnapshot): Promise<void> {
    for (const [name, { value: vm, modRevision }] of snap.vms) {
      if (!vm.node || vm.state === 'pending' || vm.state === 'failed') continue;
      const node = snap.nodes.get(vm.node);
      const hb = node?.heartbeat;
      if (!hb) {
        if (vm.state === 'running' || vm.state === 'creating') {
          if (await this.putVm(name, modRevision, { ...vm, state: 'unknown', error: `node ${vm.node} stopped heartbeating` })) {
            this.log('VM unknown: its node lost its lease (not restarted elsewhere)', { vm: name, node: vm.node });
          }
        }
        continue;
      }
      const reported = hb.vms.find((v) => v.name === name);
      if (vm.state === 'unknown' && reported && reported.state === 'running') {
        if (await this.putVm(name, modRevision, { ...vm, state: 'running', error: '' })) this.log('VM back', { vm: name, node: vm.node });
      }
    }
    await this.markLost(snap);
    await this.adoptStrays(snap);
  }

  /** Unknown VMs a live node runs: the record follows the one node running it, or names the split (stray-vms.ts). */
  private async adoptStrays(snap: ClusterSnapshot): Promise<void> {
    for (const s of findStrays(snap)) {
      if (s.kind === 'adopt') {
        if (await this.putVm(s.name, s.modRevision, { ...s.vm, node: s.node, state: 'running', error: '' })) {
          this.log('VM found running on another node: its record follows it', { vm: s.name, recorded: s.vm.node, node: s.node, was: s.vm.error });
        }
      } else if (await this.putVm(s.name, s.modRevision, { ...s.vm, error: s.reason })) {
        this.log('VM runs on two nodes at once: left unknown for the operator', { vm: s.name, nodes: s.nodes });
      }
    }
  }

  /**
   * VMs their live node does not run → unknown, with the lost reason (fenced on the record's
   * revision): at once when placed before the node's current registration, else after the grace period.
   */
  private async markLost(snap: ClusterSnapshot): Promise<void> {
    const { sure, unsure } = missingFromRegistration(snap);
    for (const u of unsure) if (await placedBeforeThen(this.etcd, u)) sure.push(u);
    const marked = new Set<string>();
    for (const l of sure) if (await this.markOneLost(l)) marked.add(l.name);
    for (const l of this.lost.check(snap)) if (!marked.has(l.name)) await this.markOneLost(l);
  }

  private async markOneLost(l: LostVm): Promise<boolean> {
    this.lost.forget(l.name);
    if (!(await this.putVm(l.name, l.modRevision, { ...l.vm, state: 'unknown', error: l.reason }))) return false;
    schedulerMetrics().vmLost();
    this.log('VM lost: its node is alive but does not run it (not restarted elsewhere)', { vm: l.name, node: l.vm.node, reason: l.reason });
    return true;
  }

  /** Places and creates pending VMs. */
  private async place(snap: ClusterSnapshot): Promise<void> {
    const model = planModel(snap);
    for (const [name, { value: vm, modRevision }] of snap.vms) {
      if (this.creating.has(name)) continue;
      if (vm.state === 'creating' && vm.node) {
        // Resumed after a leader change: create (idempotent) on the node already chosen.
        this.createOn(name, vm.node, snap);
        continue;
      }
      if (vm.state !== 'pending') continue;
      let target = vm.desiredNode;
      if (target) {
        const n = snap.nodes.get(target);
        const pn = model.nodes.find((x) => x.id === target);
        // Memory only here (the agent checks vCPUs when it creates the VM).
        const short = pn ? capacityShortfall(target, { memBytes: pn.memTotalBytes, vcpus: Infinity }, { memBytes: pn.memUsedBytes, vcpus: 0 }, vm.spec) : `no node named "${target}"`;
        if (!n || n.state !== 'ready' || short) {
          await this.putVm(name, modRevision, { ...vm, state: 'failed', error: !n ? `no node named "${target}"` : n.state !== 'ready' ? `node ${target} is ${n.state}` : short ?? '' });
          continue;
        }
      } else {
        const pick = placeVm(model.nodes, vm.spec);
        if (!pick) {
          await this.putVm(name, modRevision, { ...vm, state: 'failed', error: `no schedulable node has ${vm.spec.memBytes} bytes of memory free` });
          continue;
        }
        target = pick.id;
      }
      if (!(await this.putVm(name, modRevision, { ...vm, node: target, state: 'creating' }))) continue;
      const pn = model.nodes.find((x) => x.id === target)!;
      pn.memUsedBytes += vm.spec.memBytes;
      this.log('placing', { vm: name, node: target });
      this.createOn(name, target, snap);
    }
  }

  private createOn(name: string, nodeId: string, snap: ClusterSnapshot): void {
    const node = snap.nodes.get(nodeId);
    if (!node) return;
    this.creating.add(name);
    const agent = new AgentClient(node.record.address, agentCredentials(nodeId));
    (async () => {
      const cur = await getJson<VmRecord>(this.etcd, keys.vm(name));
      if (!cur) return;
      let error = '';
      try {
        await agent.createVm(cur.value.spec);
      } catch (e) {
        const msg = (e as Error).message;
        if (!/ALREADY_EXISTS|already exists/i.test(msg) && (e as { code?: string }).code !== 'ALREADY_EXISTS') error = msg;
      }
      for (let i = 0; i < 10; i++) {
        const v = await getJson<VmRecord>(this.etcd, keys.vm(name));
        if (!v || v.value.state !== 'creating') return;
        const next: VmRecord = error ? { ...v.value, state: 'failed', node: '', error: `creating on ${nodeId}: ${error}` } : { ...v.value, state: 'running', error: '' };
        if (await casJson(this.etcd, keys.vm(name), v.modRevision, next)) {
          this.log(error ? 'create failed' : 'VM running', { vm: name, node: nodeId, error: error || undefined });
          return;
        }
      }
    })().catch((e) => this.log('create error', { vm: name, error: (e as Error).message }))
      .finally(() => { agent.close(); this.creating.delete(name); });
  }

  /** Drives drains; returns true while any node is draining (rebalancing waits). */
  private async drains(snap: ClusterSnapshot): Promise<boolean> {
    let any = false;
    for (const n of snap.nodes.values()) {
      if (n.mark?.state !== 'draining') continue;
      any = true;
      const mine = [...snap.vms.values()].map((v) => v.value).filter((v) => v.node === n.id);
      const jobsOut = [...snap.jobs.values()].map((j) => j.value).filter((j) => j.from === n.id);
      if (mine.length === 0 && jobsOut.length === 0) {
        const m = await getJson<NodeMark>(this.etcd, keys.mark(n.id));
        if (m && m.value.state === 'draining') {
          const r = await this.fence(this.etcd.if(keys.mark(n.id), 'Mod', '==', m.modRevision))
            .then(this.etcd.put(keys.mark(n.id)).value(JSON.stringify({ state: 'drained', since: Date.now() } satisfies NodeMark))).commit();
          if (r.succeeded) this.log('node drained', { node: n.id });
        }
        continue;
      }
      const window = Math.max(1, snap.config.maxOutboundPerNode);
      let free = window - jobsOut.length;
      if (free <= 0) continue;
      const model = planModel(snap);
      const movable = model.vms.filter((v) => v.node === n.id && mine.find((m) => m.name === v.name && m.state === 'running' && !m.job));
      const ev = planEvacuation(model.nodes, movable, n.id);
      const stuck = mine.filter((m) => m.state !== 'running' && m.state !== 'migrating').map((m) => `${m.name} is ${m.state}`);
      for (const u of ev.unplaced) stuck.push(`${u.vm}: ${u.reason}`);
      const note = stuck.join('; ');
      if ((n.mark.note ?? '') !== note) {
        const m = await getJson<NodeMark>(this.etcd, keys.mark(n.id));
        if (m) await casJson(this.etcd, keys.mark(n.id), m.modRevision, { ...m.value, note });
      }
      for (const mv of ev.moves) {
        if (free <= 0) break;
        try {
          const job = await requestMigration(this.etcd, { vm: mv.vm, to: mv.to, reason: 'drain', predictedBytes: mv.predictedBytes, fenceKey: this.campaignKey });
          this.log('drain move', { job: job.id, vm: mv.vm, from: n.id, to: mv.to });
          schedulerMetrics().movePlanned('drain', job.id);
          free--;
        } catch (e) {
          this.log('drain move not created', { vm: mv.vm, error: (e as Error).message });
        }
      }
    }
    return any;
  }

  private async rebalance(snap: ClusterSnapshot): Promise<void> {
    const cfg = snap.config;
    const active = [...snap.jobs.values()].filter((j) => j.value.reason === 'rebalance');
    if (active.length > 0) { this.lastRebalanceActivity = Date.now(); return; }
    if (!cfg.autoRebalance || Date.now() - this.lastRebalanceActivity < (this.opts.settleMs ?? 3000)) return;
    const links = await readLinks(this.etcd).catch(() => new Map<string, LinkRecord>());
    const model = planModel(snap, Date.now(), links);
    const plan = planRebalance(model.nodes, model.vms, { aggressiveness: cfg.aggressiveness, maxMoves: cfg.maxConcurrent, continuing: this.rebalancing, weights: cfg.loadWeights });
    this.rebalancing = plan.moves.length > 0 && plan.stop !== 'balanced';
    const status: SchedulerStatus = { leader: this.id, since: 0, lastPlanAt: Date.now(), imbalance: imbalance(model.nodes, cfg.loadWeights), threshold: thresholdOf(cfg.aggressiveness) };
    const st = await getJson<SchedulerStatus>(this.etcd, keys.schedulerStatus());
    await casJson(this.etcd, keys.schedulerStatus(), st?.modRevision ?? '0', { ...status, since: st?.value.since ?? Date.now() }).catch(() => false);
    if (plan.moves.length === 0) return;
    this.log('rebalancing', { imbalance: plan.imbalanceBefore.toFixed(3), threshold: plan.threshold, moves: plan.moves.length, after: plan.imbalanceAfter.toFixed(3) });
    for (const mv of plan.moves) {
      try {
        const job = await requestMigration(this.etcd, { vm: mv.vm, to: mv.to, reason: 'rebalance', predictedBytes: mv.predictedBytes, fenceKey: this.campaignKey });
        this.log('rebalance move', { job: job.id, vm: mv.vm, from: mv.from, to: mv.to });
        schedulerMetrics().movePlanned('rebalance', job.id);
        this.lastRebalanceActivity = Date.now();
      } catch (e) {
        this.log('rebalance move not created', { vm: mv.vm, error: (e as Error).message });
      }
    }
  }
}
