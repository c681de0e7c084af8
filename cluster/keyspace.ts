/**
 * Drover's etcd keyspace: every key the control plane reads or writes, in one place.
 *
 * All keys live under one prefix (`/drover/v1/`, overridable with DROVER_ETCD_PREFIX for tests):
 *
 * | key | value | lifetime |
 * |---|---|---|
 * | `nodes/<id>` | NodeRecord: address and capacity, written at registration | persistent |
 * | `alive/<id>` | NodeHeartbeat: load, VM list, per-VM dirty rate and CPU | under the node's lease |
 * | `marks/<id>` | NodeMark: cordoned / draining / drained | persistent, until uncordon |
 * | `vms/<name>` | VmRecord: spec, owner node (fenced), desired node, state | persistent |
 * | `jobs/<id>` | JobRecord: an active migration job (spec, phase, progress) | until finished |
 * | `history/<id>` | JobRecord of a finished job (result, timings) | until pruned: the newest `historyMaxJobs`, none older than `historyMaxAgeMs` (cluster/history.ts) |
 * | `claims/<id>` | the migrator that runs job `<id>` | under that migrator's lease |
 * | `owned/<node>/<vm>` | OwnershipClaim: node `<node>` resumed `<vm>` for a migration's fenced intent (the switchover's record, written by the target agent itself; or, with `sourceResumed`, the source's resume record after an unresolved switchover) | until the controller folds it into `vms/<vm>` |
 * | `admission` | Admission: the jobs currently admitted (limits are checked on it) | persistent, CAS |
 * | `election/scheduler` | etcd3 Election keys of the scheduler replicas | under each replica's lease |
 * | `scheduler/status` | SchedulerStatus: leader, last plan | persistent |
 * | `config` | ClusterConfig: limits and aggressiveness | persistent |
 * | `links/<from>/<to>` | LinkRecord: measured migration rate from node `<from>` to `<to>` (EWMA, written by the migrator) | persistent |
 *
 * Fencing: ownership of a VM (`VmRecord.node`) changes only in a transaction that compares the
 * `vms/<name>` mod revision the writer read, so two writers can never both succeed.
 * Admission of jobs (concurrency limits) is one CAS on `admission`, so several migrator
 * replicas never exceed a limit together.
 */
import type { VmSpec } from '../hypervisor/types';
import type { MigrationResult } from '../migration/types';

/** The root of all Drover keys. */
export const PREFIX = process.env.DROVER_ETCD_PREFIX || '/drover/v1/';

/** The etcd key of every record the control plane keeps. */
export const keys = {
  node: (id: string) => `${PREFIX}nodes/${id}`,
  nodes: () => `${PREFIX}nodes/`,
  alive: (id: string) => `${PREFIX}alive/${id}`,
  alives: () => `${PREFIX}alive/`,
  mark: (id: string) => `${PREFIX}marks/${id}`,
  marks: () => `${PREFIX}marks/`,
  vm: (name: string) => `${PREFIX}vms/${name}`,
  vms: () => `${PREFIX}vms/`,
  job: (id: string) => `${PREFIX}jobs/${id}`,
  jobs: () => `${PREFIX}jobs/`,
  history: (id: string) => `${PREFIX}history/${id}`,
  histories: () => `${PREFIX}history/`,
  claim: (id: string) => `${PREFIX}claims/${id}`,
  /** The switchover record of node `node` for VM `vm` (only that node's agent may write it). */
  ownership: (node: string, vm: string) => `${PREFIX}owned/${node}/${vm}`,
  /** Every switchover record of node `node` (the prefix its etcd role may write). */
  ownerships: (node: string) => `${PREFIX}owned/${node}/`,
  /** Every switchover record of the cluster. */
  allOwnerships: () => `${PREFIX}owned/`,
  admission: () => `${PREFIX}admission`,
  electionPrefix: () => `${PREFIX}election/`,
  schedulerStatus: () => `${PREFIX}scheduler/status`,
  config: () => `${PREFIX}config`,
  // The cost model's records (issue 15): measured migration rates between node pairs.
  /** The measured rate of migrations from node `from` to node `to` (LinkRecord). */
  link: (from: string, to: string) => `${PREFIX}links/${from}/${to}`,
  /** Every link record. */
  links: () => `${PREFIX}links/`,
};

/** `links/<from>/<to>`: what finished migrations measured on one node pair (the cost model learns the links). */
export interface LinkRecord {
  /** Weighted moving average of the migrations' throughput (bytes on the wire / time spent sending), bytes/s. */
  bytesPerSec: number;
  /** EWMA of the migrations' time outside sending and downtime (reservation, set-up, verification), ms; absent in older records. */
  setupMs?: number;
  /** Moving average of the migrations' fixed cost of a pre-copy round (MigrationResult.roundOverheadMs), ms; absent until one measured it. */
  roundMs?: number;
  /** Moving average of the post-copy migrations' switch blackout beyond its hot pages (downtime less them at the rate), ms; absent until one was measured. */
  postcopySwitchMs?: number;
  /** Migrations folded into the average. */
  samples: number;
  /** Their weight in the average (services/scheduler/move-cost.ts foldLink: a move under 64 MiB is part of a sample); absent in older records. */
  weight?: number;
  /** Moving average of LZ4's encoded / page bytes on the batches the migrations sampled (the cost model's compressionRatio under a cap); absent until one sampled. */
  lz4Ratio?: number;
  /** Date.now() of the last sample. */
  at: number;
}

/** The cost model's prediction of a migration, stored in its job when the migrator starts it. */
export interface JobPrediction {
  totalMs: number;
  bytes: number;
  downtimeMs: number;
  converges: boolean;
  policy: 'precopy' | 'throttle' | 'postcopy';
  /** The link rate the prediction assumed, bytes/s. */
  linkBytesPerSec: number;
  /** The fixed set-up time the prediction assumed (the link's measured one), ms. */
  setupMs?: number;
  /** Where the link rate came from: the pair's measured rate, the caller's, or the default. */
  link: 'measured' | 'given' | 'default';
  /** What the guest's dirtying came from: an observation (AnalyzeVm), the heartbeat's write rate, or the VM's spec. */
  from: 'observed' | 'heartbeat' | 'spec';
}

/** `owned/<node>/<vm>`: the target agent resumed the VM for this fenced intent (protocol.ts, switchover). */
export interface OwnershipClaim {
  job: string;
  attempt: number;
  /** The `vms/<vm>` mod revision of the intent (state migrating) the record was fenced on. */
  vmRevision: string;
  /** Date.now() of the record. */
  at: number;
  /**
   * True on the source's resume record (`owned/<source>/<vm>`): the source could not learn the
   * switchover's outcome and resumed the VM itself, in a txn that required the target's record of
   * this attempt absent (the target's record requires this one absent: the two exclude each other).
   */
  sourceResumed?: boolean;
  /**
   * True on a target's tombstone `owned/<target>/<vm>` (vmRevision ''): the target could not learn
   * whether its record landed, paused its copy and gave this attempt up; its record txn requires
   * no tombstone of the attempt, so the record can never land after it. Not a claim.
   */
  fenced?: boolean;
}

/** True when `c` is the ownership record of attempt `attempt` of job `job` (a tombstone is none). */
export function isClaimOf(c: OwnershipClaim | undefined, job: string, attempt: number): c is OwnershipClaim {
  return !!c && !c.fenced && c.job === job && c.attempt === attempt;
}

/** The last path segment of a key (the id or name). */
export function idOf(key: string): string {
  return key.slice(key.lastIndexOf('/') + 1);
}

/** A registered node (static part). */
export interface NodeRecord {
  id: string;
  /** host:port of the node agent. */
  address: string;
  hypervisor: string;
  memTotalBytes: number;
  vcpusTotal: number;
  registeredAt: number;
}

/** One VM as a node's heartbeat reports it. */
export interface HeartbeatVm {
  name: string;
  memBytes: number;
  vcpus: number;
  state: string;
  dirtyRateBytesPerSec: number;
  cpu: number;
  /** Guest RAM written at least once (what round 1 sends), bytes; absent from older agents. */
  touchedBytes?: number;
  /** The VM's last observation (AnalyzeVm) when recent: page dirty rate and WSS curve. */
  observed?: { dirtyRateBytesPerSec: number; nonzeroBytes: number; wss: { windowMs: number; bytes: number }[]; at: number };
}

/** A node's heartbeat: exists only while the node's lease lives. */
export interface NodeHeartbeat {
  id: string;
  address: string;
  memTotalBytes: number;
  memUsedBytes: number;
  vcpusTotal: number;
  vcpusUsed: number;
  vms: HeartbeatVm[];
  at: number;
  /**
   * The etcd revision of this agent process's `nodes/<id>` write at start (its registration).
   * The VMs listed are all the process holds; a VM placed on the node before this revision and
   * not listed is lost (the agent restarted without it: services/scheduler/restarted-agents.ts).
   * Absent from older agents.
   */
  registrationRev?: string;
}

/** Maintenance mark of a node. */
export interface NodeMark {
  state: 'cordoned' | 'draining' | 'drained';
  since: number;
  /** Drain: VMs that could not be moved yet, with the reason (shown by `node list`). */
  note?: string;
}

/** What `node list` shows. */
export type NodeState = 'ready' | 'cordoned' | 'draining' | 'drained' | 'unknown';

/**
 * VM states in the control plane. `unknown`: its node stopped heartbeating, or its node is alive
 * but has not reported it for a grace period (lost: `error` starts with `lost: `); never started
 * elsewhere automatically, never migrated.
 */
export type VmState = 'pending' | 'creating' | 'running' | 'migrating' | 'unknown' | 'failed';

/** A VM of the cluster. `node` is the owner: the only node allowed to run it. */
export interface VmRecord {
  name: string;
  spec: VmSpec;
  /** Owner node ('' while pending). Changes only in a revision-fenced transaction. */
  node: string;
  /** Where the user asked for it (vm create --node), '' = scheduler decides. */
  desiredNode: string;
  state: VmState;
  /** Last successful migration end (ms since epoch), for the rebalancer's cool-down. */
  lastMovedAt: number;
  /** Node the VM last came from (hysteresis: never moved straight back). */
  lastFrom: string;
  error: string;
  /** The active migration job of this VM ('' = none): a VM is in at most one job. */
  job: string;
  createdAt: number;
  /**
   * Where and when a migration placed it: the revision of node `node`'s switchover record
   * (`owned/<node>/<vm>`), set by the migrator's fold. A restarted agent of that node registered
   * after it cannot hold the VM unless it moved again (services/scheduler/restarted-agents.ts).
   * Counts only while `node` is the record's node.
   */
  placed?: { node: string; rev: string };
}

/** Why a job exists. */
export type JobReason = 'manual' | 'rebalance' | 'drain';

/** Control-plane phase of a job (the engine's phases plus queueing and terminal states). */
export type JobPhase =
  | 'pending' | 'admitted' | 'reserving' | 'precopy' | 'stopcopy' | 'verifying' | 'awaiting-commit'
  | 'committed' | 'activating' | 'recovering' | 'backoff' | 'done' | 'failed' | 'cancelled';

/** Phases in which a job is finished. */
export const TERMINAL_PHASES: ReadonlySet<JobPhase> = new Set(['done', 'failed', 'cancelled']);
/** Phases after switchover: cancel is refused. */
export const AFTER_SWITCHOVER: ReadonlySet<JobPhase> = new Set(['committed', 'activating', 'done']);

/** Progress of a running job, as the engine reports it. */
export interface JobProgress {
  round: number;
  remainingBytes: number;
  sentBytes: number;
  dirtyRateBytesPerSec: number;
  rateBytesPerSec: number;
  etaMs: number;
  elapsedMs: number;
  at: number;
}

/** A migration job. */
export interface JobRecord {
  id: string;
  vm: string;
  from: string;
  to: string;
  reason: JobReason;
  phase: JobPhase;
  /** succeeded | failed | cancelled | '' while running. */
  result: '' | 'succeeded' | 'failed' | 'cancelled';
  error: string;
  attempts: number;
  maxAttempts: number;
  /** Not before (ms since epoch): retry backoff. */
  notBefore: number;
  cancelRequested: boolean;
  /** The owner flip is written (the target may resume). */
  committed: boolean;
  migrator: string;
  progress?: JobProgress;
  engine?: MigrationResult;
  downtimeMs: number;
  createdAt: number;
  admittedAt: number;
  finishedAt: number;
  /** Predicted cost (bytes) from the planner, when the scheduler made the job. */
  predictedBytes: number;
  /** Deprecated since protocol 2 (the target decides; no commit in the pause): never written, old records may hold it. */
  commitMs?: number;
  /** What each attempt that reached the source agent measured, oldest first (services/migrator/attempt.ts). */
  attemptLog?: AttemptRecord[];
  /** The last attempt's guest-observed blackout, ms; -1 = not measured. */
  guestBlackoutMs?: number;
  /** The last attempt's source pause, ms (a pause that ended in a rollback included). */
  pausedMs?: number;
  /** etcd writes this job has caused so far (for the bench's writes-per-move figure). */
  etcdWrites: number;
  /** The cost model's prediction, written when the migrator started the job. */
  prediction?: JobPrediction;
}

/** What one attempt of a job measured: its downtime figures, in the job's history and `migrations list --json`. */
export interface AttemptRecord {
  attempt: number;
  result: 'succeeded' | 'failed' | 'cancelled';
  /** Source pause -> target resume (STOP -> RESUME), ms; 0 when the switchover did not complete. */
  downtimeMs: number;
  /** Guest-observed blackout (its largest heartbeat gap across the switchover), ms; -1 = not measured. */
  guestBlackoutMs: number;
  /** How long the source VM was paused (MigrationResult.pausedMs), a pause that ended in a rollback included, ms. */
  pausedMs: number;
  errorCode: string;
  error: string;
  /** When the attempt ended, ms since epoch. */
  at: number;
}

/** Jobs admitted under the concurrency limits. */
export interface Admission {
  jobs: { id: string; from: string; to: string; at: number }[];
}

/** Cluster-wide limits and scheduler tuning. */
export interface ClusterConfig {
  maxConcurrent: number;
  maxOutboundPerNode: number;
  maxInboundPerNode: number;
  /** Rebalancing aggressiveness 1 (off) .. 5 (most eager). */
  aggressiveness: number;
  /** A VM is not moved again by the rebalancer for this long after a move. */
  cooldownMs: number;
  /** No progress (bytes sent unchanged) for this long → the job is cancelled. */
  progressTimeoutMs: number;
  maxAttempts: number;
  /** Automatic rebalancing on/off (off still allows `rebalance` from the CLI). */
  autoRebalance: boolean;
  /** Finished jobs kept in `history/` (the newest); older ones are pruned by the scheduler leader. */
  historyMaxJobs: number;
  /** Finished jobs created longer ago than this are pruned, ms. */
  historyMaxAgeMs: number;
  /**
   * Weights of the rebalancer's node score (normalised to sum 1): memory used / RAM, allocated
   * vCPUs / vCPUs, measured CPU / vCPUs. Absent: services/scheduler/planner.ts DEFAULT_LOAD_WEIGHTS
   * (0.5, 0.25, 0.25).
   */
  loadWeights?: { memory?: number; vcpus?: number; cpu?: number };
}

/** Default of `historyMaxJobs`: enough for `migrations list` and a day of busy rebalancing, ~2 MB in etcd. */
export const DEFAULT_HISTORY_MAX_JOBS = 1000;
/** Default of `historyMaxAgeMs`: a week, the span one looks back at when asking what moved. */
export const DEFAULT_HISTORY_MAX_AGE_MS = 7 * 24 * 3600 * 1000;

/** The cluster config where etcd holds none (or only some fields). */
export const DEFAULT_CONFIG: ClusterConfig = {
  maxConcurrent: 4,
  maxOutboundPerNode: 1,
  maxInboundPerNode: 2,
  aggressiveness: 3,
  cooldownMs: 60_000,
  progressTimeoutMs: 20_000,
  maxAttempts: 3,
  autoRebalance: true,
  historyMaxJobs: DEFAULT_HISTORY_MAX_JOBS,
  historyMaxAgeMs: DEFAULT_HISTORY_MAX_AGE_MS,
};

/** What the scheduler leader last did. */
export interface SchedulerStatus {
  leader: string;
  since: number;
  lastPlanAt: number;
  imbalance: number;
  threshold: number;
}

/** A new job record with defaults. */
export function newJob(p: { id: string; vm: string; from: string; to: string; reason: JobReason; maxAttempts?: number; predictedBytes?: number }): JobRecord {
  return {
    id: p.id, vm: p.vm, from: p.from, to: p.to, reason: p.reason, phase: 'pending', result: '', error: '',
    attempts: 0, maxAttempts: p.maxAttempts ?? DEFAULT_CONFIG.maxAttempts, notBefore: 0, cancelRequested: false,
    committed: false, migrator: '', downtimeMs: 0, createdAt: Date.now(), admittedAt: 0, finishedAt: 0,
    predictedBytes: p.predictedBytes ?? 0, etcdWrites: 1,
  };
}

/** A sortable, unique job id: `m-<time>-<random>`. */
export function newJobId(): string {
  return `m-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 7)}`;
}
