/**
 * AnalyzeVm: observes a hosted VM's dirty pages for a window without sending anything
 * (hypervisor/sim/observe.ts) and returns the dirty rate and the WSS curve; the cost model
 * (migration/policy/cost-model.ts) turns them into a prediction on the caller's side.
 * A domain without page access (QEMU) is measured by its hypervisor instead (Domain.measureDirtyRate:
 * QEMU's calc-dirty-rate), beside the guest's own write counter; a QEMU that refuses leaves the
 * figure out and says why in `qemuDirtyRateNote`, the rest of the answer stands.
 * FAILED_PRECONDITION while the VM migrates; UNIMPLEMENTED for a driver with neither.
 */
import type * as grpc from '@grpc/grpc-js';
import type * as wire from '../../proto/generated/drover-v1';
import type { Input } from '../../proto/load';
import { toServiceError } from '../../lib/grpc-status';
import { DroverError, failedPrecondition, invalidArgument } from '../../lib/errors';
import { MIN_WINDOW_MS, observeDirtyPages } from '../../hypervisor/sim/observe';
import type { VmHost } from './vm-host';
import type { DirtyRateMeasurement, Domain } from '../../hypervisor/types';

/** Longest observation, ms. */
export const MAX_WINDOW_MS = 60_000;
/** How long an observation stays in the node's heartbeat (the scheduler's and migrator's cost model use it): a workload changes over minutes. */
export const OBSERVATION_TTL_MS = 10 * 60_000;

/** The last observation of a VM, as the heartbeat carries it. */
export interface RecentObservation {
  dirtyRateBytesPerSec: number;
  nonzeroBytes: number;
  wss: { windowMs: number; bytes: number }[];
  at: number;
}

/** Last observation per `node/vm` (several agents may share a process in tests). */
const recent = new Map<string, RecentObservation>();

/** The last observation of VM `vm` on node `nodeId`, if younger than OBSERVATION_TTL_MS. */
export function recentObservation(nodeId: string, vm: string, now = Date.now()): RecentObservation | undefined {
  const k = `${nodeId}/${vm}`;
  const o = recent.get(k);
  if (o && now - o.at > OBSERVATION_TTL_MS) recent.delete(k);
  return o && now - o.at <= OBSERVATION_TTL_MS ? o : undefined;
}

/** Runs one analysis. */
export async function analyzeVm(host: VmHost, hypervisorKind: string, req: wire.AnalyzeVmRequest): Promise<Input<wire.AnalyzeVmResponse>> {
  const name = req.name;
  const windowMs = Number(req.windowMs);
  if (!(windowMs >= MIN_WINDOW_MS && windowMs <= MAX_WINDOW_MS)) {
    throw invalidArgument(`AnalyzeVm ${name}: window ${windowMs} ms is outside [${MIN_WINDOW_MS} ms, ${MAX_WINDOW_MS} ms]`);
  }
  const v = host.get(name);
  const m = v.domain.migration;
  if (m.kind !== 'pages') {
    if (!v.domain.measureDirtyRate) throw new DroverError('UNIMPLEMENTED', `AnalyzeVm ${name}: the ${hypervisorKind} driver offers neither a dirty log to observe nor a dirty-rate measurement`);
    if (v.outgoing) throw failedPrecondition(`AnalyzeVm ${name}: the VM is migrating (${v.outgoing.id}); analyze it before or after`);
    return analyzeByHypervisor(host, v.domain as Domain & { measureDirtyRate(windowMs: number): Promise<DirtyRateMeasurement> }, windowMs);
  }
  const busy = () => {
    const pages = m.pages as { dirtyLogging?: boolean };
    return v.outgoing || pages.dirtyLogging ? failedPrecondition(`AnalyzeVm ${name}: the VM is migrating${v.outgoing ? ` (${v.outgoing.id})` : ''}; analyze it before or after`) : undefined;
  };
  const o = await observeDirtyPages(m.pages, windowMs, busy);
  const wss = o.wss.map((p) => ({ windowMs: p.windowMs, bytes: Math.round(p.bytes) }));
  const stats = v.domain.stats?.();
  recent.set(`${host.nodeInfo().nodeId}/${name}`, { dirtyRateBytesPerSec: o.dirtyRateBytesPerSec, nonzeroBytes: o.nonzeroBytes, wss, at: Date.now() });
  return {
    name, memBytes: v.domain.spec.memBytes, nonzeroBytes: o.nonzeroBytes, dirtyRateBytesPerSec: o.dirtyRateBytesPerSec,
    wss,
    observedMs: o.observedMs, snapshots: o.snapshots, observationCpuMs: o.cpuMs,
    guestWriteRateBytesPerSec: stats?.dirtyRateBytesPerSec ?? 0, vcpuBusy: stats?.cpu ?? 0, vcpus: v.domain.spec.vcpus,
  };
}

/** The analysis of a domain its hypervisor measures (QEMU): its figure, or why there is none, and the guest's counter. */
async function analyzeByHypervisor(host: VmHost, d: Domain & { measureDirtyRate(windowMs: number): Promise<DirtyRateMeasurement> }, windowMs: number): Promise<Input<wire.AnalyzeVmResponse>> {
  const name = d.spec.name;
  const t0 = performance.now();
  const cpu0 = process.cpuUsage();
  let q: DirtyRateMeasurement | undefined;
  let refused = '';
  try {
    q = await d.measureDirtyRate(windowMs);
  } catch (err) {
    if (d.state() === 'destroyed') throw err;
    refused = `QEMU gave no dirty rate (calc-dirty-rate: ${(err as Error).message.split('\n')[0]}); the dirty rate is the guest's own write counter`;
  }
  const cpu = process.cpuUsage(cpu0);
  const s = d.stats();
  const rate = q ? q.bytesPerSec : s.dirtyRateBytesPerSec;
  const wss = q ? [{ windowMs: q.windowMs, bytes: Math.round(Math.min(d.spec.memBytes, (q.bytesPerSec * q.windowMs) / 1000)) }] : [];
  recent.set(`${host.nodeInfo().nodeId}/${name}`, { dirtyRateBytesPerSec: rate, nonzeroBytes: s.touchedBytes, wss, at: Date.now() });
  return {
    name, memBytes: d.spec.memBytes, nonzeroBytes: s.touchedBytes, dirtyRateBytesPerSec: rate, wss,
    observedMs: performance.now() - t0, snapshots: 0, observationCpuMs: (cpu.user + cpu.system) / 1000,
    guestWriteRateBytesPerSec: s.dirtyRateBytesPerSec, vcpuBusy: s.cpu, vcpus: d.spec.vcpus,
    qemuDirtyRateBytesPerSec: q?.bytesPerSec ?? 0, qemuDirtyRateMethod: q?.method ?? '', qemuDirtyRateNote: q ? q.note : refused,
  };
}

/** The gRPC handler of AnalyzeVm. */
export function analyzeVmHandler(host: VmHost, hypervisorKind: string) {
  return async (call: grpc.ServerUnaryCall<wire.AnalyzeVmRequest, wire.AnalyzeVmResponse>, cb: grpc.sendUnaryData<Input<wire.AnalyzeVmResponse>>): Promise<void> => {
    try {
      cb(null, await analyzeVm(host, hypervisorKind, call.request));
    } catch (err) {
      cb(toServiceError(err) as grpc.ServiceError);
    }
  };
}
