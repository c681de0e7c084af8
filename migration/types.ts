/**
 * The migration engine's domain types: policy in, progress out, result at the end.
 * Protobuf types never reach here; `services/node-agent/agent-codec.ts` converts at the edge.
 */
import type { DataTransport } from './wire/protocol';

/** Phases of one migration, in order (design.md stages). */
export type MigrationPhase =
  | 'reserving'        // PrepareIncoming on the target
  | 'precopy'          // iterative rounds while the VM runs
  | 'stopcopy'         // source paused, last pages and device state
  | 'verifying'        // the target checks its image against the digest
  | 'activating'       // the target resumes, then records its ownership (Owned)
  | 'done'
  | 'failed'
  | 'cancelled';

/** Phases after which cancel is refused: the target may already run the VM. */
export const PHASES_AFTER_SWITCHOVER: ReadonlySet<MigrationPhase> = new Set(['activating', 'done']);

/** Why pre-copy stopped iterating. */
export type StopReason = 'converged' | 'stalled' | 'max-rounds' | 'max-bytes' | 'timeout' | 'forced';

/** How a migration may run; every field has an engine default. */
export interface MigrationPolicy {
  /** Target downtime of the final stop-and-copy, ms (default 5). */
  maxDowntimeMs: number;
  /** Send-rate cap in bytes/s; 0 = unlimited. */
  bandwidthBytesPerSec: number;
  /** Most pre-copy rounds before stop-and-copy (Xen: 29, then the last). */
  maxRounds: number;
  /** Stop iterating once bytes sent exceed this factor x RAM (Xen: 3). */
  maxBytesFactor: number;
  /** Completion timeout, ms; 0 = scaled by VM size (see DEFAULT_TIMEOUT_*). */
  timeoutMs: number;
  /** After activation, compare the paused source's memory with the target's image digest. */
  verify: boolean;
  /** Post-copy (sim driver): 'never' (absent), 'auto' (when pre-copy cannot converge), 'always' (after the first pass). */
  postcopy?: PostcopyMode;
  /** Auto-converge (throttling a guest that outruns the link): 'auto' (absent) or 'never'. */
  autoConverge?: AutoConvergeMode;
  /** Parallel data streams: 1..MAX_STREAMS, or STREAMS_AUTO (the source agent picks); absent = the source agent's --streams (default one; wire/protocol.ts). */
  streams?: number;
  /** Page-batch compression (precopy/batch-compressor.ts); absent = auto. */
  compress?: CompressionMode;
  /** How page batches travel (wire/protocol.ts "Bulk channel"); absent = auto. */
  transport?: DataTransport;
}

/** How page batches are compressed: never, always (when it shrinks them), or auto (when it pays on the measured path). */
export type CompressionMode = 'never' | 'auto' | 'always';
/** The compression modes, for parsing and messages. */
export const COMPRESSION_MODES: readonly CompressionMode[] = ['never', 'auto', 'always'];
/** When a migration may switch to post-copy (`--postcopy`). */
export type PostcopyMode = 'never' | 'auto' | 'always';
/** The values `--postcopy` and MigrationPolicy.postcopy take. */
export const POSTCOPY_MODES: readonly PostcopyMode[] = ['never', 'auto', 'always'];
/** Whether pre-copy may throttle a guest that does not converge (`--auto-converge`). */
export type AutoConvergeMode = 'never' | 'auto';
/** The values `--auto-converge` and MigrationPolicy.autoConverge take. */
export const AUTO_CONVERGE_MODES: readonly AutoConvergeMode[] = ['never', 'auto'];

/** `text` as one of `modes`, or undefined when it is none of them (each caller raises its own error kind). */
export function modeOf<T extends string>(modes: readonly T[], text: string): T | undefined {
  return (modes as readonly string[]).includes(text) ? (text as T) : undefined;
}

/** Default downtime target: the project's aim is millisecond downtime. */
export const DEFAULT_MAX_DOWNTIME_MS = 5;
/** Xen's round limit (29 rounds, then stop-and-copy). */
export const DEFAULT_MAX_ROUNDS = 30;
/** Xen's limit on total bytes sent, as a multiple of RAM. */
export const DEFAULT_MAX_BYTES_FACTOR = 3;
/** Completion timeout base, plus DEFAULT_TIMEOUT_MS_PER_GIB per GiB of RAM: a 1 GiB VM gets 90 s. */
export const DEFAULT_TIMEOUT_BASE_MS = 30_000;
/** Completion timeout per GiB of guest RAM (covers a slow 100 MB/s link with three passes). */
export const DEFAULT_TIMEOUT_MS_PER_GIB = 60_000;

/** The policy with every unset field replaced by its default. */
export function resolvePolicy(p: Partial<MigrationPolicy> = {}): MigrationPolicy {
  return {
    maxDowntimeMs: p.maxDowntimeMs && p.maxDowntimeMs > 0 ? p.maxDowntimeMs : DEFAULT_MAX_DOWNTIME_MS,
    bandwidthBytesPerSec: p.bandwidthBytesPerSec && p.bandwidthBytesPerSec > 0 ? p.bandwidthBytesPerSec : 0,
    maxRounds: p.maxRounds && p.maxRounds > 0 ? p.maxRounds : DEFAULT_MAX_ROUNDS,
    maxBytesFactor: p.maxBytesFactor && p.maxBytesFactor > 0 ? p.maxBytesFactor : DEFAULT_MAX_BYTES_FACTOR,
    timeoutMs: p.timeoutMs && p.timeoutMs > 0 ? p.timeoutMs : 0,
    verify: p.verify ?? false,
    compress: p.compress ?? 'auto',
    ...(p.postcopy && p.postcopy !== 'never' ? { postcopy: p.postcopy } : {}),
    ...(p.autoConverge === 'never' ? { autoConverge: 'never' as const } : {}),
  };
}

/** The completion timeout for a VM of `memBytes` under `policy`. */
export function completionTimeoutMs(policy: MigrationPolicy, memBytes: number): number {
  return policy.timeoutMs > 0 ? policy.timeoutMs : DEFAULT_TIMEOUT_BASE_MS + (DEFAULT_TIMEOUT_MS_PER_GIB * memBytes) / 2 ** 30;
}

/** A live progress report of one migration. */
export interface MigrationProgress {
  migrationId: string;
  phase: MigrationPhase;
  round: number;
  /** Dirty bytes not yet sent. */
  remainingBytes: number;
  dirtyRateBytesPerSec: number;
  /** Send rate over the last interval. */
  rateBytesPerSec: number;
  sentBytes: number;
  /** Estimated ms until switchover (NaN when unknown). */
  etaMs: number;
  elapsedMs: number;
}

/** The result of one migration; `drover migrate --json` and `drover bench --json` print it. */
export interface MigrationResult {
  migrationId: string;
  vm: string;
  profile: string;
  memBytes: number;
  mode: 'precopy' | 'postcopy';
  /** Target memory equals source memory at pause AND the guest's own check passed on the target. */
  verified: boolean;
  /** Source pause to target resume, ms. */
  downtimeMs: number;
  /** Start of the migration to target resume, ms. */
  totalMs: number;
  rounds: number;
  /** Bytes on the wire (encoded frames). */
  bytesSent: number;
  pageBytes: number;
  zeroPages: number;
  deviceBytes: number;
  /** bytesSent / time spent sending them. */
  throughputBytesPerSec: number;
  stopReason: StopReason | '';
  outcome: 'succeeded' | 'failed' | 'cancelled';
  errorCode: string;
  error: string;
  source: string;
  target: string;
  /** Guest RAM the migration moved with content: distinct pages sent as a payload at least once (sim engine), or the guest's touched RAM (QEMU). */
  nonzeroBytes: number;
  /** Where the downtime went. */
  downtimeBreakdown?: DowntimeBreakdown;
  /** Guest-observed blackout: the target's first heartbeat minus the source's last, ms (absent when not measured). */
  guestBlackoutMs?: number;
  /** The hypervisor's own downtime figure when it reports one (QEMU: query-migrate `downtime`, which with a return path also counts the wait for the target to close it). */
  hypervisorDowntimeMs?: number;
  /** Auto-converge: the throttle (% of vCPU time taken away) pre-copy needed to converge; absent when none. */
  throttlePercent?: number;
  /**
   * How long the source VM was paused (result.ts PauseClock): pause to the end of the pause on the
   * source (Owned, or a resume after a rollback or refusal: a failed migration reports it too), ms.
   */
  pausedMs?: number;
  /** Page batches sent LZ4-encoded, the page bytes they held and their encoded size (absent when none was). */
  compressedBatches?: number;
  compressedPageBytes?: number;
  compressedBytes?: number;
  /** Why the batches went raw or LZ4-encoded, with the measured rates behind auto's decision (absent from drivers without page batches). */
  compressReason?: string;
  /** The data transport the page batches took: Transfer streams or the bulk channel (absent: no page stream, e.g. a QEMU tunnel). */
  transport?: 'grpc' | 'bulk';
  /** What the engine chose: pre-copy alone, pre-copy with throttling, or post-copy (absent from drivers that do not say). */
  policy?: 'precopy' | 'throttle' | 'postcopy';
  /** Why, in words (the measured rates behind the choice). */
  policyReason?: string;
  /** How long the guest ran throttled before the pause, ms (0 = never). */
  throttledMs?: number;
  /** Post-copy: vCPU waits for a missing page on the target (absent without post-copy). */
  pageWaits?: number;
  /** Post-copy: median page wait, ms. */
  pageWaitP50Ms?: number;
  /** Post-copy: 99th percentile page wait, ms. */
  pageWaitP99Ms?: number;
  /** Post-copy: the target's resume until every page was present, ms. */
  allPresentMs?: number;
  /** Post-copy recovery: how long the stream was down in total (vCPUs needing missing pages waited), ms (absent when it never dropped). */
  postcopyStalledMs?: number;
  /** Post-copy recovery: how many times the source reconnected (absent when it never dropped). */
  postcopyRecoveries?: number;
  /** Fixed cost of a pre-copy round beyond moving its bytes, ms (policy/round-overhead.ts; absent without a second round). */
  roundOverheadMs?: number;
}

/** Where the downtime went, ms on the source's clock (see agent.proto DowntimeBreakdown). */
export interface DowntimeBreakdown {
  pauseMs: number;
  finalRoundMs: number;
  finalPages: number;
  deviceMs: number;
  /** Complete handed to the transport -> the target's Verified ack back: includes resumeMs and the ack's trip back (after the downtime). */
  verifyMs: number;
  /**
   * Complete handed to the transport -> the target resumed (its Activated.resumedAtMs): the trip
   * there, the target's last batches, device load, digest check and resume; the part of verifyMs
   * inside the downtime. Wall clocks of both nodes (their offset counts across hosts); 0 = not measured.
   */
  resumeMs?: number;
  /** Protocol 2: Activated -> Owned (the target's fenced ownership record; after the downtime, the source still paused). */
  commitMs: number;
  activateMs: number;
}
