/**
 * One attempt of a migration job, live: drives the source agent with `externalCommit`, writes
 * phase changes and throttled progress onto the job, runs the watchdog, and, when the target
 * holds a verified image, flips the VM's owner in one transaction fenced on the VM record's
 * revision, the job's revision (a cancel request wins before it) and this replica's claim; only
 * then it tells the source to activate the target.
 */
import { DroverError } from '../../lib/errors';
import { AgentClient, agentCredentials } from '../node-agent/client/agent-client';
import type { MigrationEventInfo } from '../node-agent/client/agent-codec';
import { getJson } from '../../cluster/etcd';
import { sleep, type Logger } from '../../cluster/log';
import { keys, type ClusterConfig, type JobPhase, type JobRecord, type VmRecord } from '../../cluster/keyspace';
import type { MigrationResult } from '../../migration/types';
import { AttemptTracker, type AttemptOutcome } from './attempt-state';
import { Abandoned, CancelRequested, type JobHandle, type JobStore } from './job-store';
import { Watchdog, WATCHDOG_PERIOD_MS } from './watchdog';

/** Phases the engine reports while a job is under way (written onto the job as they change). */
export const ENGINE_PHASES = new Set<JobPhase>(['reserving', 'precopy', 'stopcopy', 'verifying', 'awaiting-commit']);
/** Phases in which the VM is paused: nothing but the owner flip is written (every ms is downtime). */
const PAUSED_PHASES = new Set<JobPhase>(['stopcopy', 'verifying', 'awaiting-commit']);
/** Progress is written onto the job at most this often, ms. */
const PROGRESS_WRITE_MS = 1000;
/** Tries of the fenced owner flip (each after re-reading a changed VM record). */
const OWNER_FLIP_TRIES = 10;
/** Tries of the commit call to the source once the owner flipped (it must get through). */
const COMMIT_CALL_TRIES = 20;
/** Pause between commit calls, ms. */
const COMMIT_CALL_RETRY_MS = 250;

/** What an attempt starts from: the job (already reserving) and the VM record it fenced. */
export interface AttemptStart {
  store: JobStore;
  log: Logger;
  run: JobHandle;
  cfg: ClusterConfig;
  /** The VM record as written at the start (state migrating) and its revision. */
  vm: VmRecord;
  vmRev: string;
  fromAddr: string;
  toAddr: string;
  /** Whole-attempt limit (scaled by VM size), ms. */
  timeoutMs: number;
}

/** One attempt of one job on the source agent. */
export class MigrationAttempt {
  private readonly tracker = new AttemptTracker();
  private readonly watchdog: Watchdog;
  private readonly source: AgentClient;
  private readonly job: JobRecord;
  private readonly migId: string;
  private vmRec: VmRecord;
  private vmRev: string;
  private queue: Promise<unknown> = Promise.resolve();
  private commitDone?: Promise<void>;
  private lastPhase: JobPhase = 'reserving';
  private lastWrite = 0;

  constructor(private readonly a: AttemptStart) {
    this.job = a.run.job;
    this.migId = a.store.agentMigrationId(a.run.job);
    this.vmRec = a.vm;
    this.vmRev = a.vmRev;
    this.source = new AgentClient(a.fromAddr, agentCredentials(a.run.job.from));
    this.watchdog = new Watchdog({ completionTimeoutMs: a.timeoutMs, progressTimeoutMs: a.cfg.progressTimeoutMs, memBytes: a.vm.spec.memBytes });
  }

  /** Runs the attempt to its end (engine returned, commit and writes settled). */
  async run(): Promise<AttemptOutcome> {
    const timer = setInterval(() => this.onTick(), WATCHDOG_PERIOD_MS);
    let result: MigrationResult | undefined;
    let error: DroverError | undefined;
    try {
      result = await this.source.migrateVm(this.job.vm, this.a.toAddr, { externalCommit: true, timeoutMs: this.a.timeoutMs }, (ev) => this.onEvent(ev), this.migId, this.job.to);
    } catch (e) {
      error = DroverError.from(e);
    } finally {
      clearInterval(timer);
    }
    if (this.commitDone) await this.commitDone;
    await this.queue;
    this.source.close();
    return this.tracker.outcome(result, error);
  }

  private enqueue(f: () => Promise<unknown>): void {
    this.queue = this.queue.then(f).catch((e) => {
      if (e instanceof Abandoned) this.tracker.markLost();
      else this.a.log('write failed', { job: this.job.id, error: (e as Error).message });
    });
  }

  /** Once a commit runs, only the commit itself cancels (before the owner flips); the watchdog stays out. */
  private async cancel(reason: string, byUser = false): Promise<void> {
    if (!this.tracker.cancel(reason, byUser)) return;
    this.a.log('cancelling', { job: this.job.id, reason });
    try { await this.source.cancelMigration(this.migId); } catch (e) { this.a.log('cancel failed', { job: this.job.id, error: (e as Error).message }); }
  }

  private onTick(): void {
    if (!this.tracker.watchdogArmed) return;
    const reason = this.watchdog.check();
    if (reason) { void this.cancel(reason); return; }
    getJson<JobRecord>(this.a.store.etcd, keys.job(this.job.id))
      .then((j) => { if (j?.value.cancelRequested && !this.tracker.commitStarted) void this.cancel('cancelled by user', true); })
      .catch(() => {});
  }

  private onEvent(ev: MigrationEventInfo): void {
    this.watchdog.progress(ev.sentBytes);
    const progress = {
      round: ev.round, remainingBytes: ev.remainingBytes, sentBytes: ev.sentBytes, dirtyRateBytesPerSec: ev.dirtyRateBytesPerSec,
      rateBytesPerSec: ev.rateBytesPerSec, etaMs: Number.isFinite(ev.etaMs) ? ev.etaMs : -1, elapsedMs: ev.elapsedMs, at: Date.now(),
    };
    const phase = ev.phase as JobPhase;
    const paused = PAUSED_PHASES.has(phase);
    if (paused) this.lastWrite = Date.now();
    if (ENGINE_PHASES.has(phase) && !paused && phase !== this.lastPhase && !this.tracker.commitStarted) {
      this.lastPhase = phase;
      this.lastWrite = Date.now();
      this.enqueue(() => this.a.store.patch(this.a.run, { phase, progress }));
    } else if (Date.now() - this.lastWrite > PROGRESS_WRITE_MS) {
      this.lastWrite = Date.now();
      this.enqueue(() => this.a.store.patch(this.a.run, { progress }));
    }
    if (phase === 'awaiting-commit' && this.tracker.mayStartCommit) {
      this.a.log('awaiting commit', { job: this.job.id });
      const awaitingAt = Date.now();
      this.tracker.startCommit(awaitingAt);
      this.commitDone = new Promise<void>((resolve) => this.enqueue(() => this.commit(awaitingAt).finally(resolve)));
    }
  }

  /** Flips the owner in etcd, then tells the source to activate the target. */
  private async commit(awaitingAt: number): Promise<void> {
    const queuedMs = Date.now() - awaitingAt;
    this.a.log('committing', { job: this.job.id, queuedMs });
    if (!(await this.flipOwner())) return;
    const flippedMs = Date.now() - awaitingAt;
    for (let i = 0; i < COMMIT_CALL_TRIES; i++) {
      try {
        await this.source.commitMigration(this.migId);
        this.tracker.acknowledged(Date.now());
        this.a.log('owner flipped', { job: this.job.id, vm: this.job.vm, to: this.job.to, queuedMs, flippedMs, committedMs: Date.now() - awaitingAt });
        return;
      } catch (e) {
        this.a.log('commit call failed, retrying', { job: this.job.id, error: (e as Error).message });
        await sleep(COMMIT_CALL_RETRY_MS);
      }
    }
  }

  /** The fenced owner flip; true once recorded. Anything that beats it cancels the attempt. */
  private async flipOwner(): Promise<boolean> {
    const { store, run } = this.a;
    const job = this.job;
    for (let i = 0; i < OWNER_FLIP_TRIES && !this.tracker.lost; i++) {
      if (run.job.cancelRequested) { await this.cancel('cancelled by user', true); return false; }
      let flipped = false;
      try {
        this.vmRec = { ...this.vmRec, node: job.to, lastMovedAt: Date.now(), lastFrom: job.from };
        this.vmRev = await store.patch(run, (j) => {
          if (j.cancelRequested) throw new CancelRequested();
          return { phase: 'committed', committed: true };
        }, [{ key: keys.vm(job.vm), rev: this.vmRev, value: this.vmRec }]);
        flipped = true;
      } catch (e) {
        this.a.log('commit attempt failed', { job: job.id, attempt: i, error: e instanceof CancelRequested ? 'cancel requested' : (e as Error).message });
        if (e instanceof Abandoned) { this.tracker.markLost(); return false; }
        if (e instanceof CancelRequested) { await this.cancel('cancelled by user', true); return false; }
        const v = await getJson<VmRecord>(store.etcd, keys.vm(job.vm));
        if (!v || v.value.node !== job.from) { await this.cancel(`VM record changed: owner is ${v?.value.node ?? 'nobody'}`); return false; }
        this.vmRec = { ...v.value, state: 'migrating' };
        this.vmRev = v.modRevision;
      }
      if (flipped) { this.tracker.markCommitted(); return true; }
    }
    await this.cancel('could not record the new owner');
    return false;
  }
}
