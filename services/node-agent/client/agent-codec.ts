/**
 * Conversions between the node agent's protobuf objects (camel-cased by protobufjs) and
 * Drover's domain types. The only place where both kinds meet.
 */
import type { VmSpec } from '../../../hypervisor/types';
import { specToWire, specFromWire } from '../../../migration/wire/spec-codec';

/** The VmSpec codec (migration/wire/spec-codec.ts), re-exported for the agent's users. */
export { specToWire, specFromWire };
import { AUTO_CONVERGE_MODES, COMPRESSION_MODES, modeOf, POSTCOPY_MODES, type AutoConvergeMode, type CompressionMode, type MigrationPolicy, type MigrationProgress, type MigrationResult, type MigrationPhase, type PostcopyMode } from '../../../migration/types';
import { invalidArgument } from '../../../lib/errors';
import { DATA_TRANSPORTS, type DataTransport } from '../../../migration/wire/protocol';
import type * as wire from '../../../proto/generated/drover-v1';
import type { Input } from '../../../proto/load';

/** A VM as an agent reports it. */
export interface VmInfo {
  spec: VmSpec;
  state: string;
  nodeId: string;
  dirtyRateBytesPerSec: number;
  touchedBytes: number;
  cpu: number;
  heartbeatBeats: number;
  heartbeatLastMs: number;
  heartbeatMaxGapMs: number;
  /** Gap of the guest's first beat after its latest resume (HeartbeatReading.resumeGapMs); -1 = not measured. */
  heartbeatResumeGapMs: number;
  /** Why the VM stays paused here (a migration whose outcome is unknown: `drover vm resume`); absent = not held. */
  held?: string;
}

/**
 * The guest-observed blackout of a VM that just migrated here: the source's last heartbeat to the
 * target's first (the resume gap), or the largest gap since the pause when the driver does not
 * measure the resume gap (the largest gap also counts stalls after the resume).
 */
export function guestBlackoutMs(v: VmInfo): number {
  return v.heartbeatResumeGapMs >= 0 ? v.heartbeatResumeGapMs : v.heartbeatMaxGapMs;
}

/** What an agent says about its node. */
export interface NodeInfo {
  nodeId: string;
  hypervisor: string;
  memTotalBytes: number;
  memUsedBytes: number;
  vcpusTotal: number;
  vcpusUsed: number;
  protocolVersion: number;
  vms: VmInfo[];
}

/** The guest's check and heartbeat, as VerifyVm returns them. */
export interface VerifyInfo {
  ok: boolean;
  pagesChecked: number;
  badPages: number;
  detail: string;
  diskChecked: boolean;
  diskOk: boolean;
  /** Disk check verdict (names the export); empty without a disk. */
  diskDetail: string;
  /** Highest acknowledged WAL record of the guest's disk log (0 without a disk). */
  diskAckedSeq: number;
  heartbeatLastMs: number;
  heartbeatMaxGapMs: number;
  heartbeatBeats: number;
}

/** One event of a MigrateVm stream: progress, with `result` on the last. */
export interface MigrationEventInfo extends MigrationProgress {
  result?: MigrationResult;
}

/** VmInfo → wire. */
export function vmToWire(v: VmInfo): wire.Vm {
  return { ...v, spec: specToWire(v.spec), held: v.held ?? '' };
}

/** Wire → VmInfo. */
export function vmFromWire(w: wire.Vm): VmInfo {
  return {
    // an unset spec decodes as null: every field of it then reads as undefined, as before
    spec: specFromWire(w.spec ?? ({} as wire.VmSpec)), state: w.state, nodeId: w.nodeId,
    dirtyRateBytesPerSec: w.dirtyRateBytesPerSec, touchedBytes: Number(w.touchedBytes), cpu: w.cpu,
    heartbeatBeats: Number(w.heartbeatBeats), heartbeatLastMs: w.heartbeatLastMs, heartbeatMaxGapMs: w.heartbeatMaxGapMs,
    heartbeatResumeGapMs: w.heartbeatResumeGapMs, ...(w.held ? { held: w.held } : {}),
  };
}

/** NodeInfo → wire. */
export function nodeInfoToWire(n: NodeInfo): wire.NodeInfo {
  return { ...n, vms: n.vms.map(vmToWire) };
}

/** Wire → NodeInfo. */
export function nodeInfoFromWire(w: wire.NodeInfo): NodeInfo {
  return {
    nodeId: w.nodeId, hypervisor: w.hypervisor, memTotalBytes: Number(w.memTotalBytes), memUsedBytes: Number(w.memUsedBytes),
    vcpusTotal: w.vcpusTotal, vcpusUsed: w.vcpusUsed, protocolVersion: w.protocolVersion, vms: (w.vms ?? []).map(vmFromWire),
  };
}

/** Policy → wire. */
export function policyToWire(p: Partial<MigrationPolicy>): wire.MigrationPolicy {
  return {
    maxDowntimeMs: p.maxDowntimeMs ?? 0, bandwidthBytesPerSec: p.bandwidthBytesPerSec ?? 0, maxRounds: p.maxRounds ?? 0,
    maxBytesFactor: p.maxBytesFactor ?? 0, timeoutMs: p.timeoutMs ?? 0, streams: p.streams ?? 0, verify: p.verify ?? false,
    externalCommit: false, // deprecated since protocol 2 (the target decides)
    compress: p.compress ?? '', transport: p.transport ?? '',
    postcopy: p.postcopy ?? '', autoConverge: p.autoConverge ?? '',
  };
}

/** A wire compression mode ("" = engine default); INVALID_ARGUMENT naming an unknown one. */
function compressFromWire(v: string | undefined): CompressionMode | undefined {
  return v ? wireMode(COMPRESSION_MODES, 'policy.compress', v) : undefined;
}

/** A wire policy mode `v` of field `field`; INVALID_ARGUMENT naming the field and the value for anything else. */
function wireMode<T extends string>(modes: readonly T[], field: string, v: string): T {
  const mode = modeOf(modes, v);
  if (mode === undefined) throw invalidArgument(`${field} must be one of ${modes.join(', ')}, got '${v}'`);
  return mode;
}

/** A wire data transport ("" = auto); INVALID_ARGUMENT naming an unknown one. */
export function transportFromWire(v: string | undefined): DataTransport | undefined {
  if (!v) return undefined;
  if (!(DATA_TRANSPORTS as readonly string[]).includes(v)) throw invalidArgument(`policy.transport must be one of ${DATA_TRANSPORTS.join(', ')}, got "${v}"`);
  return v as DataTransport;
}

/** Wire → partial policy (zero values mean "engine default"). */
export function policyFromWire(w: wire.MigrationPolicy | null | undefined): Partial<MigrationPolicy> {
  return {
    maxDowntimeMs: w?.maxDowntimeMs || undefined, bandwidthBytesPerSec: w?.bandwidthBytesPerSec || undefined,
    maxRounds: w?.maxRounds || undefined, maxBytesFactor: w?.maxBytesFactor || undefined, timeoutMs: w?.timeoutMs || undefined,
    verify: !!w?.verify, compress: compressFromWire(w?.compress),
    ...(w?.transport ? { transport: transportFromWire(w.transport) } : {}),
    ...(w?.postcopy ? { postcopy: postcopyModeOf(w.postcopy) } : {}),
    ...(w?.autoConverge ? { autoConverge: autoConvergeOf(w.autoConverge) } : {}),
  };
}

/** A wire post-copy mode; INVALID_ARGUMENT naming the value for anything else. */
export function postcopyModeOf(v: string): PostcopyMode {
  return wireMode(POSTCOPY_MODES, 'policy.postcopy', v);
}

/** A wire auto-converge mode; INVALID_ARGUMENT naming the value for anything else. */
export function autoConvergeOf(v: string): AutoConvergeMode {
  return wireMode(AUTO_CONVERGE_MODES, 'policy.auto_converge', v);
}

/** MigrationEventInfo → wire. */
export function eventToWire(e: MigrationEventInfo): Input<wire.MigrationEvent> {
  const result = e.result ? { ...e.result, guestBlackoutMs: e.result.guestBlackoutMs ?? -1, hypervisorDowntimeMs: e.result.hypervisorDowntimeMs ?? -1,
    policy: e.result.policy ?? '', policyReason: e.result.policyReason ?? '', throttledMs: e.result.throttledMs ?? 0,
    pageWaits: e.result.pageWaits ?? 0, pageWaitP50Ms: e.result.pageWaitP50Ms ?? -1, pageWaitP99Ms: e.result.pageWaitP99Ms ?? -1, allPresentMs: e.result.allPresentMs ?? -1, transport: e.result.transport ?? '',
    postcopyStalledMs: e.result.postcopyStalledMs ?? 0, postcopyRecoveries: e.result.postcopyRecoveries ?? 0, roundOverheadMs: e.result.roundOverheadMs ?? -1 } : undefined;
  return { ...e, etaMs: Number.isFinite(e.etaMs) ? e.etaMs : -1, result };
}

/** A wire figure where -1 means "not measured" → the optional domain figure. */
function measured(v: unknown): number | undefined {
  return typeof v === 'number' && v >= 0 ? v : undefined;
}

/** Wire → MigrationEventInfo. */
export function eventFromWire(w: wire.MigrationEvent): MigrationEventInfo {
  const ev: MigrationEventInfo = {
    migrationId: w.migrationId, phase: w.phase as MigrationPhase, round: w.round, remainingBytes: Number(w.remainingBytes),
    dirtyRateBytesPerSec: w.dirtyRateBytesPerSec, rateBytesPerSec: w.rateBytesPerSec, sentBytes: Number(w.sentBytes),
    etaMs: w.etaMs < 0 ? NaN : w.etaMs, elapsedMs: w.elapsedMs,
  };
  if (w.result && w.result.migrationId) {
    const r = w.result;
    ev.result = {
      migrationId: r.migrationId, vm: r.vm, profile: r.profile, memBytes: Number(r.memBytes), mode: (r.mode || 'precopy') as MigrationResult['mode'],
      verified: r.verified, downtimeMs: r.downtimeMs, totalMs: r.totalMs, rounds: r.rounds, bytesSent: Number(r.bytesSent),
      pageBytes: Number(r.pageBytes), zeroPages: Number(r.zeroPages), deviceBytes: Number(r.deviceBytes),
      throughputBytesPerSec: r.throughputBytesPerSec, stopReason: r.stopReason as MigrationResult['stopReason'], outcome: r.outcome as MigrationResult['outcome'],
      errorCode: r.errorCode, error: r.error, source: r.source, target: r.target, nonzeroBytes: Number(r.nonzeroBytes),
      downtimeBreakdown: r.downtimeBreakdown ?? undefined,
      guestBlackoutMs: measured(r.guestBlackoutMs),
      hypervisorDowntimeMs: measured(r.hypervisorDowntimeMs),
      ...(r.throttlePercent ? { throttlePercent: r.throttlePercent } : {}),
      ...(r.pausedMs ? { pausedMs: r.pausedMs } : {}),
      ...(r.transport === 'grpc' || r.transport === 'bulk' ? { transport: r.transport } : {}),
      ...(r.compressReason ? { compressReason: r.compressReason } : {}),
      ...(r.compressedBatches ? { compressedBatches: r.compressedBatches, compressedPageBytes: Number(r.compressedPageBytes), compressedBytes: Number(r.compressedBytes) } : {}),
      ...(r.policy ? { policy: r.policy as MigrationResult['policy'], policyReason: r.policyReason, throttledMs: r.throttledMs } : {}),
      ...(r.pageWaitP50Ms >= 0 && r.allPresentMs >= 0 && r.mode === 'postcopy' ? { pageWaits: r.pageWaits, pageWaitP50Ms: r.pageWaitP50Ms, pageWaitP99Ms: r.pageWaitP99Ms, allPresentMs: r.allPresentMs } : {}),
      ...(r.postcopyRecoveries ? { postcopyStalledMs: r.postcopyStalledMs, postcopyRecoveries: r.postcopyRecoveries } : {}),
      ...(measured(r.roundOverheadMs) !== undefined ? { roundOverheadMs: r.roundOverheadMs } : {}),
    };
  }
  return ev;
}
