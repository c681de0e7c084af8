/**
 * Stream migration: the capability of a hypervisor that sends its own migration stream (QEMU),
 * as opposed to page access (hypervisor/types.ts PageAccess), where the engine copies pages.
 *
 * The driver does the mechanics (sockets, its own dirty tracking, post-copy, throttling); the
 * migration core decides when pre-copy has failed to converge and what to do about it, through
 * the `converge` callback of the policy (migration/policy/convergence.ts). The node agents carry
 * the bytes between the two unix sockets (migration/qemu/*).
 *
 *   target: startIncoming(opts) → IncomingEndpoint { socketPath, postcopy, multifdChannels }
 *   source: migrateOut(endpoint, policy, onProgress) → StreamMigrationResult
 */
import type { DroverError } from '../lib/errors';

/** What the target offers; returned by startIncoming and passed to migrateOut. */
export interface IncomingEndpoint {
  /** Unix socket the target hypervisor listens on. */
  socketPath: string;
  /** True when post-copy is enabled on the target (userfaultfd works there). */
  postcopy: boolean;
  /** multifd channels the target expects (0 = off). */
  multifdChannels: number;
  /**
   * Native migration: the target listens on TCP here instead of `socketPath`; with `tls` the
   * source presents its own certificate and checks the target's for `host`.
   */
  tcp?: { host: string; port: number; tls: boolean };
}

/** How a driver migrates natively (hypervisor to hypervisor, no agent in the byte path); '' = it does not. */
export type NativeTransport = '' | 'tls' | 'tcp';

/** Target side of a native migration: listen on the driver's host, ephemeral port, TLS when the driver has certificates. */
export interface NativeListen {
  /** TLS: the only client certificate DN (RFC 4514 order as QEMU prints it, e.g. "CN=node.a,O=drover,OU=node") let in. */
  authzIdentity?: string;
}

/** Target-side options of startIncoming. */
export interface IncomingOptions {
  /** false: do not enable post-copy even when the target supports it. */
  postcopy?: boolean;
  /** Parallel channels (multifd); 0/1/absent = one stream. */
  multifdChannels?: number;
  /** Native migration: listen on TCP (with TLS) instead of a unix socket. */
  listen?: NativeListen;
}

/** One progress sample of an outgoing stream migration (QEMU: query-migrate). */
export interface StreamMigrationProgress {
  /** The hypervisor's migration status, e.g. "active", "postcopy-active", "completed". */
  status: string;
  /** Dirty bitmap syncs so far (the hypervisor's rounds). */
  rounds: number;
  remainingBytes: number;
  dirtyRateBytesPerSec: number;
  transferRateBytesPerSec: number;
  transferredBytes: number;
  totalRamBytes: number;
  expectedDowntimeMs: number;
  elapsedMs: number;
  postcopy: boolean;
  throttlePercent: number;
  /** Set on the sample where the policy acted. */
  action?: 'postcopy' | 'throttle';
  /** Why the policy acted. */
  reason?: string;
}

/** What the convergence decision sees after each sample, once the first pass has ended. */
export interface ConvergenceSample {
  /** The sample just taken. */
  progress: StreamMigrationProgress;
  /** Remaining bytes right after each dirty sync from round 2 on (the dirty set found then). */
  atSync: readonly number[];
  /** Ms since the first pass over RAM ended. */
  sinceFirstPassMs: number;
  /** How long the first pass took, ms. */
  firstPassMs: number;
  /** The downtime limit the hypervisor was given, ms. */
  downtimeLimitMs: number;
  /** True when the target has post-copy enabled and the policy allows it. */
  postcopyAvailable: boolean;
}

/** The core's answer: go on with pre-copy, or act (switch to post-copy / throttle the guest), with the reason. */
export type ConvergenceDecision =
  | { action: 'continue' }
  | { action: 'postcopy'; reason: string }
  | { action: 'throttle'; reason: string };

/** The convergence decision as the driver calls it (a pure function of the sample). */
export type ConvergenceDecider = (s: ConvergenceSample) => ConvergenceDecision;

/** Migration policy as a stream-migrating driver takes it: its knobs plus the core's decision. Every field optional. */
export interface StreamMigrationPolicy {
  /** Downtime target in ms (QEMU downtime-limit); default 5. */
  downtimeLimitMs?: number;
  /** Bandwidth cap in bytes/s; 0 or absent = unlimited. */
  maxBandwidthBytesPerSec?: number;
  /** multifd channels; 0/1/absent = one stream (multifd is exclusive with post-copy in QEMU 7.2). */
  multifdChannels?: number;
  /** 'never': do not use post-copy even when the target offers it; default 'auto' (the decision may switch). */
  postcopy?: 'auto' | 'never';
  /** Let the hypervisor throttle the guest when the decision says so and post-copy is unavailable (default true). */
  throttle?: boolean;
  /** Give up (cancel, source keeps running) after this many ms; absent = never. */
  deadlineMs?: number;
  /** Progress poll period in ms; default 50. */
  pollMs?: number;
  /** Cancels the migration (refused once post-copy has started: the target owns the VM then). */
  signal?: AbortSignal;
  /**
   * Called right before the driver starts post-copy (the source then stops the VM). A transport
   * that buffers (the agents' tunnel) drains its backlog here, so the switchover does not queue
   * behind pre-copy pages already in flight.
   */
  beforeSwitchover?: () => Promise<void>;
  /**
   * The convergence decision (migration/policy/convergence.ts). Absent = pre-copy runs until it
   * completes or the deadline passes: the driver itself never decides to switch or throttle.
   */
  converge?: ConvergenceDecider;
}

/** Outcome of a completed stream migration. */
export interface StreamMigrationResult {
  status: 'completed';
  /** The hypervisor's measured downtime (ms). */
  downtimeMs: number;
  totalTimeMs: number;
  setupTimeMs: number;
  transferredBytes: number;
  rounds: number;
  /** Whether the policy switched to post-copy, throttled, or neither. */
  action: 'none' | 'postcopy' | 'throttle';
  reason: string;
}

/** A hypervisor event (QEMU: a QMP event), for tracing. */
export interface HypervisorEvent {
  event: string;
  data?: unknown;
  /** The hypervisor's wall-clock time of the event, ms. */
  timestampMs: number;
}

/** Where hypervisor events can be watched (QEMU: its QMP client). */
export interface HypervisorEventSource {
  on(ev: 'event', f: (e: HypervisorEvent) => void): unknown;
}

/**
 * A domain whose hypervisor sends its own migration stream: what migration/qemu/* needs of it.
 * The domain's life cycle and guest probe (heartbeat) stay on the Domain itself.
 */
export interface StreamMigration {
  /** Stream format name carried in Start (protocol.ts tunnel kind), e.g. "qemu". */
  readonly tunnelKind: string;
  /** The native transport this driver is configured for ('' = the agents' tunnel only). */
  readonly nativeTransport: NativeTransport;
  /** Makes this (incoming) domain listen for the stream. */
  startIncoming(opts?: IncomingOptions): Promise<IncomingEndpoint>;
  /** Migrates this domain to the target at `target`; resolves on completion (source paused). */
  migrateOut(target: IncomingEndpoint, policy?: StreamMigrationPolicy, onProgress?: (p: StreamMigrationProgress) => void): Promise<StreamMigrationResult>;
  /** Cancels the outgoing migration (the source keeps running). Refused after post-copy started. */
  cancel(): Promise<void>;
  /** True once post-copy has started for the current/last migration. */
  readonly inPostcopy: boolean;
  /** Hypervisor wall-clock time (ms) of the last vCPU stop (0 = never). */
  readonly stoppedAtMs: number;
  /** Hypervisor wall-clock time (ms) of the last vCPU resume (0 = never). */
  readonly resumedAtMs: number;
  /** Host time of the first heartbeat this domain saw (target: the first beat after switchover). */
  firstBeatMs(): number;
  /** Resolves when the heartbeat count exceeds `beats`, or rejects after timeoutMs. */
  waitBeats(beats: number, timeoutMs?: number): Promise<void>;
  /** The hypervisor's own run state, e.g. "running", "paused", "postmigrate", "inmigrate". */
  runStatus(): Promise<string>;
  /** Target side: the incoming stream's status and error, as the hypervisor reports it ({} when unknown). */
  incomingStatus(): Promise<{ status?: string; error?: string }>;
  /** True while the hypervisor process runs. */
  readonly alive: boolean;
  /** Resolves when the hypervisor process exits. */
  readonly exited: Promise<unknown>;
  /** An error naming `what` and how the hypervisor process exited (its command line, stderr). */
  exitError(what: string): DroverError;
  /** The hypervisor's events, for tracing. */
  readonly events: HypervisorEventSource;
}

/**
 * Downtime as the engine defines it, from the hypervisor's events: the source's stop (at or
 * after `sinceMs`, i.e. of this migration) to the target's resume, in ms; undefined when either is missing.
 */
export function stopToResumeMs(source: Pick<StreamMigration, 'stoppedAtMs'>, targetResumedAtMs: number, sinceMs = 0): number | undefined {
  const stopped = source.stoppedAtMs;
  if (stopped <= 0 || stopped < sinceMs || targetResumedAtMs < stopped) return undefined;
  return targetResumedAtMs - stopped;
}
