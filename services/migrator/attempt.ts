/**
 * One attempt of a migration job, live: drives the source agent with the switchover's fence
 * (the VM record's revision of state migrating, the job, the attempt: protocol 2, the target
 * decides and records its ownership itself), writes phase changes and throttled progress onto
 * the job and runs the watchdog. Nothing of the migrator is in the VM's pause; job-run.ts folds
 * the target's ownership record afterwards (fold.ts).
 */
import { DroverError } from '../../lib/errors';
import { AgentClient, agentCredentials } from '../node-agent/client/agent-client';
import { guestBlackoutMs, type MigrationEventInfo } from '../node-agent/client/agent-codec';
import { getJson } from '../../cluster/etcd';
import type { Logger } from '../../cluster/log';
import { keys, type ClusterConfig, type JobPhase, type JobRecord, type VmRecord } from '../../cluster/keyspace';
import type { MigrationResult } from '../../migration/types';
import { AttemptTracker, type AttemptOutcome } from './attempt-state';
import { Abandoned, type JobHandle, type JobStore } from './job-store';
import { Watchdog, WATCHDOG_PERIOD_MS } from './watchdog';
import { attemptRecord } from './attempt-record';

/** Phases the engine reports while a job is under way (written onto the job as they change). */
export const ENGINE_PHASES = new Set<JobPhase>(['reserving', 'precopy', 'stopcopy', 'verifying', 'activating', 'awaiting-commit']);
/** Phases in which the VM is paused or switching over: nothing is written (the etcd writes stay off the switchover). */
const PAUSED_PHASES = new Set<JobPhase>(['stopcopy', 'verifying', 'activating']);
/** Progress is written onto the job at most this often, ms. */
const PROGRESS_WRITE_MS = 1000;

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
  private readonly vmRev: string;
  private queue: Promise<unknown> = Promise.resolve();
  private lastPhase: JobPhase = 'reserving';
  private lastWrite = 0;
  /** The last result the source agent sent (a failed attempt's too: its pausedMs). */
  private lastResult: MigrationResult | undefined;

  constructor(private readonly a: AttemptStart) {
    this.job = a.run.job;
    this.migId = a.store.agentMigrationId(a.run.job);
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
      const fence = { vmRevision: this.vmRev, job: this.job.id, attempt: this.job.attempts };
      result = await this.source.migrateVm(this.job.vm, this.a.toAddr, { timeoutMs: this.a.timeoutMs }, (ev) => this.onEvent(ev), this.migId, this.job.to, fence);
    } catch (e) {
      error = DroverError.from(e);
    } finally {
      clearInterval(timer);
    }
    await this.queue;
    this.source.close();
    await this.recordAttempt(result ?? this.lastResult, error);
    return this.tracker.outcome(result, error);
  }

  /**
   * Writes this attempt's downtime figures onto the job (after the switchover: nothing in the
   * pause). The sim engine does not measure the guest's blackout: the target's guest does, as the
   * gap of its first heartbeat after the resume (agent-codec.ts guestBlackoutMs).
   */
  private async recordAttempt(result: MigrationResult | undefined, error: DroverError | undefined): Promise<void> {
    let gap: number | undefined;
    if (result?.outcome === 'succeeded' && result.guestBlackoutMs === undefined) {
      const target = new AgentClient(this.a.toAddr, agentCredentials(this.job.to));
      try { gap = guestBlackoutMs(await target.getVm(this.job.vm)); } catch (e) { this.a.log('blackout not measured', { job: this.job.id, error: (e as Error).message }); }
      target.close();
    }
    const rec = attemptRecord(this.job.attempts, result, error, gap);
    this.enqueue(() => this.a.store.patch(this.a.run, (j) => ({
      attemptLog: [...(j.attemptLog ?? []).filter((r) => r.attempt !== rec.attempt), rec], guestBlackoutMs: rec.guestBlackoutMs, pausedMs: rec.pausedMs,
    })));
    await this.queue;
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
    if (ev.result) this.lastResult = ev.result;
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
  }
}
