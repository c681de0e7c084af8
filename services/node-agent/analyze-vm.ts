/**
 * AnalyzeVm: observes a hosted VM's dirty pages for a window without sending anything
 * (hypervisor/sim/observe.ts) and returns the dirty rate and the WSS curve; the cost model
 * (migration/policy/cost-model.ts) turns them into a prediction on the caller's side.
 * FAILED_PRECONDITION while the VM migrates; UNIMPLEMENTED for a driver without page access.
 */
import type * as grpc from '@grpc/grpc-js';
import type * as wire from '../../proto/generated/drover-v1';
import type { Input } from '../../proto/load';
import { toServiceError } from '../../lib/grpc-status';
import { DroverError, failedPrecondition, invalidArgument } from '../../lib/errors';
import { MIN_WINDOW_MS, observeDirtyPages } from '../../hypervisor/sim/observe';
import type { VmHost } from './vm-host';

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
    throw new DroverError('UNIMPLEMENTED', `AnalyzeVm ${name}: the ${hypervisorKind} driver migrates by its own stream and offers no dirty log to observe (QEMU calc-dirty-rate is not wired yet)`);
  }
  const busy = () => {
    const pages = m.pages as { dirtyLogging?: boolean };
    return v.outgoing || pages.dirtyLogging ? failedPrecondition(`AnalyzeVm ${name}: the VM is migrating${v.outgoing ? ` (${v.outgoing.id})` : ''}; analyze it before or after`) : undefined;
  };
  const o = await observeDirtyPages(m.pages, windowMs, busy);
  const wss = o.wss.map((p) => ({ windowMs: p.windowMs, bytes: Math.round(p.bytes) }));
  recent.set(`${host.nodeInfo().nodeId}/${name}`, { dirtyRateBytesPerSec: o.dirtyRateBytesPerSec, nonzeroBytes: o.nonzeroBytes, wss, at: Date.now() });
  return {
    name, memBytes: v.domain.spec.memBytes, nonzeroBytes: o.nonzeroBytes, dirtyRateBytesPerSec: o.dirtyRateBytesPerSec,
    wss,
    observedMs: o.observedMs, snapshots: o.snapshots, observationCpuMs: o.cpuMs,
    guestWriteRateBytesPerSec: v.domain.stats?.().dirtyRateBytesPerSec ?? 0,
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
