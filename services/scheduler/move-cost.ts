/**
 * The cost of moving one VM, by the cost model (migration/policy/cost-model.ts), from what the
 * control plane knows: the VM's last observation (AnalyzeVm, carried by its node's heartbeat
 * while recent) or else the heartbeat's write rate bounded by the spec's working set, and the
 * measured rate of past migrations between the two nodes (`links/<from>/<to>`) or a default.
 * Shared by the migrator (the prediction stored in each job), the scheduler's planner,
 * `drover rebalance`, `drover vm list` and `drover analyze`.
 */
import type { Etcd3 } from 'etcd3';
import { getJson, updateJson } from '../../cluster/etcd';
import { keys, type HeartbeatVm, type JobPrediction, type LinkRecord } from '../../cluster/keyspace';
import type { VmSpec } from '../../hypervisor/types';
import { resolveProfile } from '../../hypervisor/sim/profiles';
import { cpuBoundWriteRate, DEFAULT_LINK_BYTES_PER_SEC, predictMigration, type CostPrediction, type WssPoint } from '../../migration/policy/cost-model';
import { DEFAULT_MAX_DOWNTIME_MS, type MigrationResult } from '../../migration/types';
import { SWITCHOVER_OVERHEAD_MS } from '../../migration/policy/stop-conditions';
import { PAGE_SIZE } from '../../hypervisor/types';
import type { MoveCost } from './planner';

/** Fixed set-up time assumed where no migration has measured the pair (reservation, dirty-log start, verification): the 20-120 ms local clusters measured on this machine class. */
export const DEFAULT_SETUP_MS = 50;
/**
 * Fixed cost of a pre-copy round assumed where no migration has measured the pair, ms: none, as
 * before rounds were timed (migration/policy/round-overhead.ts measured 1-3 ms a round on this
 * machine class at a load of 2-4, 25-50 ms on a host loaded far beyond its cores: the pair's
 * first migration with a second round tells which).
 */
export const DEFAULT_ROUND_MS = 0;
/** Weight of a new sample in a link's moving average: a few migrations settle it, one outlier does not. */
export const LINK_EWMA_ALPHA = 0.3;
/** Smallest migration (bytes sent) whose throughput counts as a link sample: smaller ones measure set-up, not the link (4 MiB idle moves measured 44 and 136 MiB/s back to back). */
export const MIN_LINK_SAMPLE_BYTES = 8 * 2 ** 20;
/**
 * A migration this large (bytes sent) is a full sample of the link; a smaller one weighs in
 * proportion to its size. Its round 1 carries the stream's start-up (connection, window ramp,
 * the compressor's first raw run): an idle 16-32 MiB move measured 40-85 MiB/s on loopback where
 * 64-128 MiB moves of the same guest ran at 120-135 MiB/s (and their later rounds as fast).
 */
export const LINK_FULL_SAMPLE_BYTES = 64 * 2 ** 20;
/**
 * Weight of the default link (DEFAULT_LINK_BYTES_PER_SEC, DEFAULT_SETUP_MS) in a pair's first
 * average: half a full sample. A first move of 8 MiB (the demo's idle VMs; 16 MiB/s on a loaded
 * machine) then moves the link a fifth of the way to its rate instead of all of it, which had
 * made every web VM "not converging" to the planner; a first large move takes two thirds.
 */
export const LINK_PRIOR_WEIGHT = 0.5;
/** Window of the spec-derived WSS prior's first point, ms (the observation's finest window). */
const PRIOR_FIRST_WINDOW_MS = 10;

/** What is known about a VM's dirtying, for the model. */
export interface VmDirtying {
  memBytes: number;
  nonzeroBytes: number;
  dirtyRateBytesPerSec: number;
  wss: WssPoint[];
  /** Unthrottled write speed (cost-model.ts cpuBoundWriteRate: the rate over the heartbeat's vCPU utilisation). */
  maxWriteBytesPerSec: number;
  from: JobPrediction['from'];
}

/**
 * The dirtying of a VM: its heartbeat's recent observation when there is one; else the heartbeat's
 * write rate (or the spec's) with a WSS curve that grows at that rate up to the spec's working
 * set (the sim profile's, hypervisor/sim/profiles.ts) and stays flat.
 */
export function dirtyingOf(spec: VmSpec, hb?: HeartbeatVm): VmDirtying {
  const o = hb?.observed;
  if (o && o.wss.length > 0) {
    return { memBytes: spec.memBytes, nonzeroBytes: Math.min(spec.memBytes, o.nonzeroBytes), dirtyRateBytesPerSec: o.dirtyRateBytesPerSec, wss: o.wss, maxWriteBytesPerSec: cpuBoundWriteRate(o.dirtyRateBytesPerSec, hb?.cpu ?? 0, spec.vcpus), from: 'observed' };
  }
  const prof = resolveProfile(spec);
  const rate = hb && hb.dirtyRateBytesPerSec > 0 ? hb.dirtyRateBytesPerSec : Number.isFinite(prof.dirtyRateBytesPerSec) ? prof.dirtyRateBytesPerSec : spec.memBytes;
  const wssCap = Math.max(prof.wssBytes, 4096);
  const first = Math.min(wssCap, (rate * PRIOR_FIRST_WINDOW_MS) / 1000);
  const satMs = Math.max(PRIOR_FIRST_WINDOW_MS * 2, (wssCap / rate) * 1000);
  const touched = hb?.touchedBytes && hb.touchedBytes > 0 ? hb.touchedBytes : Math.max(prof.fillBytes, prof.wssBytes);
  return {
    memBytes: spec.memBytes, nonzeroBytes: Math.min(spec.memBytes, touched), dirtyRateBytesPerSec: rate,
    wss: [{ windowMs: PRIOR_FIRST_WINDOW_MS, bytes: first }, { windowMs: satMs, bytes: wssCap }, { windowMs: satMs * 2, bytes: wssCap }],
    maxWriteBytesPerSec: cpuBoundWriteRate(rate, hb && hb.dirtyRateBytesPerSec > 0 ? hb.cpu : 0, spec.vcpus),
    from: hb && hb.dirtyRateBytesPerSec > 0 ? 'heartbeat' : 'spec',
  };
}

/** The measured links, by `from/to`. */
export type LinkRates = ReadonlyMap<string, LinkRecord>;

/** Reads every link record. */
export async function readLinks(etcd: Etcd3): Promise<Map<string, LinkRecord>> {
  const res = await etcd.getAll().prefix(keys.links()).exec();
  const out = new Map<string, LinkRecord>();
  for (const kv of res.kvs) out.set(kv.key.toString().slice(keys.links().length), JSON.parse(kv.value.toString()) as LinkRecord);
  return out;
}

/** The link record of one pair, if a migration measured it. */
export async function readLink(etcd: Etcd3, from: string, to: string): Promise<LinkRecord | undefined> {
  return (await getJson<LinkRecord>(etcd, keys.link(from, to)))?.value;
}

/** The link rate of a pair: `given` when set, else the pair's measured rate (`rec`), else the default. */
export function linkRate(rec: LinkRecord | undefined, given?: number): LinkChoice {
  const setupMs = rec?.setupMs ?? 0;
  const roundMs = rec?.roundMs ?? (rec ? 0 : DEFAULT_ROUND_MS);
  const postcopySwitchMs = rec?.postcopySwitchMs ?? SWITCHOVER_OVERHEAD_MS;
  if (given !== undefined) return { bytesPerSec: given, link: 'given', setupMs, roundMs, postcopySwitchMs };
  return rec && rec.bytesPerSec > 0 ? { bytesPerSec: rec.bytesPerSec, link: 'measured', setupMs, roundMs, postcopySwitchMs } : { bytesPerSec: DEFAULT_LINK_BYTES_PER_SEC, link: 'default', setupMs: DEFAULT_SETUP_MS, roundMs: DEFAULT_ROUND_MS, postcopySwitchMs };
}

/** A link as a prediction assumes it. */
export interface LinkChoice {
  bytesPerSec: number;
  link: JobPrediction['link'];
  /** Fixed time outside the rounds, ms (the pair's measured one, else DEFAULT_SETUP_MS). */
  setupMs: number;
  /** Fixed cost of each pre-copy round, ms (the pair's measured one; DEFAULT_ROUND_MS without a record, 0 in a record that predates it). */
  roundMs: number;
  /** Blackout of a post-copy switch, ms (the pair's measured one, else the engine's SWITCHOVER_OVERHEAD_MS). */
  postcopySwitchMs: number;
}

/** The mean measured rate of migrations out of `node` (any target), or undefined when none was measured. */
export function outboundRate(links: LinkRates, node: string): LinkRecord | undefined {
  const mine = [...links].filter(([k]) => k.startsWith(`${node}/`)).map(([, r]) => r).filter((r) => r.bytesPerSec > 0);
  if (mine.length === 0) return undefined;
  return { bytesPerSec: mine.reduce((a, r) => a + r.bytesPerSec, 0) / mine.length, setupMs: mine.reduce((a, r) => a + (r.setupMs ?? 0), 0) / mine.length, roundMs: mine.reduce((a, r) => a + (r.roundMs ?? 0), 0) / mine.length, samples: mine.reduce((a, r) => a + r.samples, 0), at: Math.max(...mine.map((r) => r.at)) };
}

/** The model's cost of moving a VM out of its node to a target not yet known (`vm list`; the planner's fallback): its dirtying, the node's mean outbound link. */
export function vmMoveCost(spec: VmSpec, node: string, hb: HeartbeatVm | undefined, links: LinkRates): MoveCost & { prediction: JobPrediction } {
  const d = dirtyingOf(spec, hb);
  const link = linkRate(outboundRate(links, node));
  const p = predictMove(d, link);
  return { bytes: p.predictedBytes, ms: p.predictedTotalMs, downtimeMs: p.predictedDowntimeMs, converges: p.converges, convergesThrottled: p.convergesThrottled, prediction: jobPrediction(p, d, link) };
}

/**
 * The model's cost of moving a VM out of `node` to each target whose link was measured
 * (`links/<node>/<to>`), by target (planner: PlanVm.costTo). Targets without a record are absent.
 */
export function vmMoveCostByTarget(spec: VmSpec, node: string, hb: HeartbeatVm | undefined, links: LinkRates): Map<string, MoveCost> {
  const out = new Map<string, MoveCost>();
  const prefix = `${node}/`;
  let d: VmDirtying | undefined;
  for (const [k, rec] of links) {
    if (!k.startsWith(prefix) || !(rec.bytesPerSec > 0)) continue;
    d ??= dirtyingOf(spec, hb);
    const p = predictMove(d, linkRate(rec));
    out.set(k.slice(prefix.length), { bytes: p.predictedBytes, ms: p.predictedTotalMs, downtimeMs: p.predictedDowntimeMs, converges: p.converges, convergesThrottled: p.convergesThrottled });
  }
  return out;
}

/** The key of a pair in LinkRates. */
export function pairKey(from: string, to: string): string {
  return `${from}/${to}`;
}

/** What a finished migration tells about its link (MigrationResult's fields). */
export type LinkSample = Pick<MigrationResult, 'bytesSent' | 'throughputBytesPerSec' | 'totalMs' | 'downtimeMs' | 'compressedBytes' | 'compressedPageBytes' | 'roundOverheadMs'> & Partial<Pick<MigrationResult, 'rounds' | 'downtimeBreakdown' | 'mode'>>;

/**
 * A link record with one more migration folded in (`now` its time), or undefined when the
 * migration is no sample (under MIN_LINK_SAMPLE_BYTES, no rate). The throughput and the set-up
 * (time outside sending and the downtime) are weighted averages: a sample weighs
 * min(1, bytesSent / LINK_FULL_SAMPLE_BYTES), and its share is its weight over the record's
 * weight so far (a new pair's: the default link's LINK_PRIOR_WEIGHT), until that reaches
 * 1 / LINK_EWMA_ALPHA; from then on a moving average (a full sample takes LINK_EWMA_ALPHA). So a
 * small first move's start-up-bound rate gives way to the first large move, and later small
 * moves barely move a settled link.
 *
 * The per-round fixed cost (the result's roundOverheadMs) is learned beside them, and the rate is
 * the stream's without it: the migration's sending time less that cost for each pre-copy round
 * (at most half of it), as the cost model adds the cost to every round it predicts. So is the
 * blackout of a post-copy switch beyond its hot pages (postcopySwitchMs).
 */
export function foldLink(cur: LinkRecord | undefined, r: LinkSample, now: number): LinkRecord | undefined {
  const measured = r.throughputBytesPerSec;
  if (!(r.bytesSent >= MIN_LINK_SAMPLE_BYTES && measured > 0 && Number.isFinite(measured))) return undefined;
  const sendingMs = (r.bytesSent / measured) * 1000;
  const perRound = r.roundOverheadMs !== undefined && r.roundOverheadMs >= 0 && Number.isFinite(r.roundOverheadMs) ? r.roundOverheadMs : undefined;
  const roundsMs = Math.min(sendingMs / 2, (perRound ?? 0) * Math.max(0, (r.rounds ?? 1) - 1));
  const rate = (r.bytesSent * 1000) / (sendingMs - roundsMs);
  const setup = Math.max(0, r.totalMs - sendingMs - r.downtimeMs);
  const w = Math.min(1, r.bytesSent / LINK_FULL_SAMPLE_BYTES);
  // A pair not measured yet starts from the default link, weighing LINK_PRIOR_WEIGHT.
  const known: LinkRecord = cur && cur.bytesPerSec > 0 ? cur : { bytesPerSec: DEFAULT_LINK_BYTES_PER_SEC, setupMs: DEFAULT_SETUP_MS, samples: 0, weight: LINK_PRIOR_WEIGHT, at: 0 };
  // Records written before weights were kept hold full samples.
  const before = Math.min(known.weight ?? known.samples, 1 / LINK_EWMA_ALPHA);
  const weight = Math.min(before + w, 1 / LINK_EWMA_ALPHA);
  const share = w / weight;
  const avg = (old: number | undefined, x: number) => (old !== undefined && old >= 0 && before > 0 ? old + share * (x - old) : x);
  // LZ4's ratio on the pages this pair moved (compression auto samples batches even when it stays raw).
  const ratio = r.compressedPageBytes && r.compressedBytes ? r.compressedBytes / r.compressedPageBytes : undefined;
  const lz4Ratio = ratio === undefined ? known.lz4Ratio : known.lz4Ratio === undefined ? ratio : known.lz4Ratio + LINK_EWMA_ALPHA * (ratio - known.lz4Ratio);
  // The round cost: a moving average over the migrations that had a round to measure it by (the first one taken whole).
  const roundMs = perRound === undefined ? known.roundMs : known.roundMs === undefined ? perRound : known.roundMs + LINK_EWMA_ALPHA * (perRound - known.roundMs);
  // A post-copy switch's blackout beyond the hot pages it sends: likewise.
  const fin = r.downtimeBreakdown;
  const sw = r.mode === 'postcopy' && fin && r.downtimeMs > 0 ? Math.max(0, r.downtimeMs - ((fin.finalPages * PAGE_SIZE) / measured) * 1000) : undefined;
  const postcopySwitchMs = sw === undefined ? known.postcopySwitchMs : known.postcopySwitchMs === undefined ? sw : known.postcopySwitchMs + LINK_EWMA_ALPHA * (sw - known.postcopySwitchMs);
  return {
    bytesPerSec: avg(known.bytesPerSec, rate),
    setupMs: avg(known.setupMs, setup),
    ...(roundMs !== undefined ? { roundMs } : {}),
    ...(postcopySwitchMs !== undefined ? { postcopySwitchMs } : {}),
    samples: (cur?.samples ?? 0) + 1,
    weight,
    ...(lz4Ratio !== undefined ? { lz4Ratio } : {}),
    at: now,
  };
}

/** Folds one finished migration into the pair's record (foldLink; skipped for tiny moves). */
export async function recordLink(etcd: Etcd3, from: string, to: string, r: LinkSample): Promise<LinkRecord | undefined> {
  if (!foldLink(undefined, r, 0)) return undefined;
  return updateJson<LinkRecord>(etcd, keys.link(from, to), (cur) => foldLink(cur, r, Date.now())!);
}

/** The model's prediction for moving a VM with dirtying `d` over `link`. */
export function predictMove(d: VmDirtying, link: Pick<LinkChoice, 'bytesPerSec' | 'setupMs'> & Partial<Pick<LinkChoice, 'roundMs' | 'postcopySwitchMs'>>, maxDowntimeMs = DEFAULT_MAX_DOWNTIME_MS): CostPrediction {
  return predictMigration({ memBytes: d.memBytes, nonzeroBytes: d.nonzeroBytes, dirtyRateBytesPerSec: d.dirtyRateBytesPerSec, wss: d.wss, linkBytesPerSec: link.bytesPerSec, maxDowntimeMs, setupMs: link.setupMs, roundOverheadMs: link.roundMs ?? 0, postcopySwitchMs: link.postcopySwitchMs, guestMaxWriteBytesPerSec: d.maxWriteBytesPerSec });
}

/** The job record's form of a prediction. */
export function jobPrediction(p: CostPrediction, d: VmDirtying, link: LinkChoice): JobPrediction {
  return {
    totalMs: p.predictedTotalMs, bytes: p.predictedBytes, downtimeMs: p.predictedDowntimeMs, converges: p.converges, policy: p.policy,
    linkBytesPerSec: link.bytesPerSec, setupMs: link.setupMs, link: link.link, from: d.from,
  };
}
