/**
 * Metrics of a migrator replica, recorded into the process registry of lib/metrics.ts.
 *
 * | metric | type | labels | what |
 * |---|---|---|---|
 * | drover_migrator_jobs_started_total | counter | trigger=manual\|rebalance\|drain | job attempts started |
 * | drover_migrator_jobs_finished_total | counter | result, trigger | jobs finished (moved to the history) |
 * | drover_migrator_job_retries_total | counter | trigger | transient failures retried with backoff |
 * | drover_migrator_jobs_inflight | gauge | – | jobs this replica drives |
 * | drover_migrator_admitted_jobs | gauge | – | jobs admitted cluster-wide (the admission window) |
 * | drover_migrator_limit | gauge | limit=concurrent\|outbound_per_node\|inbound_per_node | configured limits |
 * | drover_migration_prediction_error_ratio | histogram | field=total\|bytes\|downtime | (actual − predicted) / predicted of each succeeded migration (the cost model's prediction stored in the job) |
 *
 * The source VM's pause per migration is the agents' `drover_vm_paused_seconds` (agent-metrics.ts): an
 * agent sees every pause, direct migrations and rollbacks included; protocol 2 has no commit in the pause.
 */
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { registry } from '../../lib/metrics';
import type { ClusterConfig, Admission, JobPrediction, JobRecord } from '../../cluster/keyspace';
import type { MigrationResult } from '../../migration/types';

/** Buckets of the signed relative prediction error: ±5/15/25/50% resolve the 15% aim; up to 10x for a model far off. */
export const PREDICTION_ERROR_BUCKETS = [-0.9, -0.5, -0.25, -0.15, -0.05, 0.05, 0.15, 0.25, 0.5, 1, 2, 5, 10];

/** Metrics of a migrator replica. */
export class MigratorMetrics {
  readonly jobsStarted: Counter<'trigger'>;
  readonly jobsFinished: Counter<'result' | 'trigger'>;
  readonly retries: Counter<'trigger'>;
  readonly admitted: Gauge<string>;
  readonly limit: Gauge<'limit'>;
  readonly predictionError: Histogram<'field'>;
  private readonly migrators = new Set<{ activeJobs(): string[] }>();

  constructor(reg: Registry) {
    const { migrators } = this; // read by the gauge's collect(), where `this` is the gauge
    const registers = [reg];
    this.jobsStarted = new Counter({ name: 'drover_migrator_jobs_started_total', help: 'Job attempts started, by what created the job.', labelNames: ['trigger'], registers });
    this.jobsFinished = new Counter({ name: 'drover_migrator_jobs_finished_total', help: 'Jobs finished, by result and trigger.', labelNames: ['result', 'trigger'], registers });
    this.retries = new Counter({ name: 'drover_migrator_job_retries_total', help: 'Transient job failures retried with backoff.', labelNames: ['trigger'], registers });
    new Gauge({
      name: 'drover_migrator_jobs_inflight', help: 'Jobs this replica drives now.', registers,
      collect() { this.set([...migrators].reduce((n, m) => n + m.activeJobs().length, 0)); },
    });
    this.admitted = new Gauge({ name: 'drover_migrator_admitted_jobs', help: 'Jobs admitted cluster-wide under the concurrency limits.', registers });
    this.limit = new Gauge({ name: 'drover_migrator_limit', help: 'Configured migration limits.', labelNames: ['limit'], registers });
    this.predictionError = new Histogram({
      name: 'drover_migration_prediction_error_ratio', help: 'Cost model error of succeeded migrations: (actual - predicted) / predicted, by field (total time, bytes on the wire, downtime).',
      labelNames: ['field'], buckets: PREDICTION_ERROR_BUCKETS, registers,
    });
  }

  /** A succeeded migration against its prediction (fields whose prediction is 0 are skipped). */
  observePrediction(p: JobPrediction, r: Pick<MigrationResult, 'totalMs' | 'bytesSent' | 'downtimeMs'>): void {
    const obs = (field: string, actual: number, predicted: number) => { if (predicted > 0 && Number.isFinite(actual)) this.predictionError.observe({ field }, (actual - predicted) / predicted); };
    obs('total', r.totalMs, p.totalMs);
    obs('bytes', r.bytesSent, p.bytes);
    obs('downtime', r.downtimeMs, p.downtimeMs);
  }

  /** Reports this migrator's in-flight jobs at scrape time. */
  track(m: { activeJobs(): string[] }): void { this.migrators.add(m); }

  /** Limits and the admission window, from each scan. */
  limits(cfg: ClusterConfig, adm: Admission): void {
    this.limit.set({ limit: 'concurrent' }, cfg.maxConcurrent);
    this.limit.set({ limit: 'outbound_per_node' }, cfg.maxOutboundPerNode);
    this.limit.set({ limit: 'inbound_per_node' }, cfg.maxInboundPerNode);
    this.admitted.set(adm.jobs.length);
  }

  /** A job attempt started. */
  jobStarted(job: Pick<JobRecord, 'reason'>): void { this.jobsStarted.inc({ trigger: job.reason || 'manual' }); }
  /** A transient failure of the job, retried with backoff. */
  jobRetried(job: Pick<JobRecord, 'reason'>): void { this.retries.inc({ trigger: job.reason || 'manual' }); }
  /** The job finished (moved to the history). */
  jobFinished(job: Pick<JobRecord, 'reason' | 'result' | 'phase'>): void {
    this.jobsFinished.inc({ result: job.result || job.phase, trigger: job.reason || 'manual' });
  }
}

let migrator: MigratorMetrics | undefined;
/** The migrator metrics of this process. */
export function migratorMetrics(): MigratorMetrics { return (migrator ??= new MigratorMetrics(registry)); }
