/**
 * `drover analyze VM --agent ADDR`: observes the guest's dirty pages for a window (the agent's
 * AnalyzeVm: nothing is sent) and predicts what a pre-copy migration would cost with the cost
 * model (migration/policy/cost-model.ts): rounds, time, bytes, downtime, convergence, policy.
 *
 * Without --agent, through the cluster (DROVER_ETCD or --etcd): the VM's node comes from etcd,
 * its agent is reached with the environment's identity (the admin's, DIR/drover.env), and the
 * link rate is --bandwidth, else the measured rate of past migrations from that node
 * (`links/<node>/<to>`: the pair with --to NODE, else the mean over the node's measured pairs).
 */
import { parse, flag, duration, rate, address, str, UsageError, type Parsed } from '../args';
import { AgentClient, agentCredentials } from '../../services/node-agent/client/agent-client';
import { readSnapshot } from '../../cluster/etcd';
import { DEFAULT_ROUND_MS, readLinks } from '../../services/scheduler/move-cost';
import { ETCD, withEtcd } from './cluster/common';
import { formatBytes, formatMs, formatRate } from '../../lib/units';
import { cpuBoundWriteRate, DEFAULT_LINK_BYTES_PER_SEC, predictMigration } from '../../migration/policy/cost-model';
import { DEFAULT_MAX_DOWNTIME_MS } from '../../migration/types';
import { SWITCHOVER_OVERHEAD_MS } from '../../migration/policy/stop-conditions';
import { DroverError } from '../../lib/errors';
import { TLS_OPTIONS, TLS_USAGE, agentChannelCredentials, tlsFromFlags } from '../tls-flags';
import { postcopyFlag } from './migrate';
import type { PostcopyMode } from '../../migration/types';

/** Usage of the command. */
export const ANALYZE_USAGE = `drover analyze VM (--agent ADDR ${TLS_USAGE} | [--etcd URL] [--to NODE]) [--bandwidth RATE] [--max-downtime D] [--postcopy never|auto|always] [--window 5s] [--json]`;
const DEFAULT_WINDOW_MS = 5000;
const MIN_WINDOW_MS = 50;

/** What both forms measure and print. */
interface Ask {
  vm: string;
  agent: string;
  link: number;
  /** Where the link rate came from, in words ('' = --bandwidth). */
  linkNote: string;
  /** Fixed set-up time of a migration on the link (measured), ms. */
  setupMs: number;
  /** Fixed cost of each pre-copy round on the link (measured, else DEFAULT_ROUND_MS), ms. */
  roundMs: number;
  /** Blackout of a post-copy switch on the link (measured, else the engine's overhead), ms. */
  postcopySwitchMs: number;
  maxDowntimeMs: number;
  windowMs: number;
  /** The post-copy mode the migration would run with (`--postcopy`, default auto as `drover migrate`'s). */
  postcopy: PostcopyMode;
  json: boolean;
}

/** Runs the command. */
export async function analyzeCommand(argv: string[]): Promise<number> {
  const p = parse(argv, {
    agent: { type: 'string' }, bandwidth: { type: 'string' }, 'max-downtime': { type: 'string' }, window: { type: 'string' }, json: { type: 'boolean' },
    to: { type: 'string' }, postcopy: { type: 'string' }, 'no-postcopy': { type: 'boolean' }, ...ETCD, ...TLS_OPTIONS,
  }, 'analyze');
  if (p.positionals.length !== 1) throw new UsageError(`analyze: expected one VM name (usage: ${ANALYZE_USAGE})`);
  const vm = p.positionals[0];
  const given = rate(p, 'bandwidth');
  if (given !== undefined && !(given > 0)) throw new UsageError(`analyze: --bandwidth must be above 0 (the link rate the prediction assumes)`);
  const maxDowntimeMs = duration(p, 'max-downtime', DEFAULT_MAX_DOWNTIME_MS)!;
  if (!(maxDowntimeMs > 0)) throw new UsageError('analyze: --max-downtime must be above 0');
  const windowMs = duration(p, 'window', DEFAULT_WINDOW_MS)!;
  if (windowMs < MIN_WINDOW_MS || windowMs > 60_000) throw new UsageError(`analyze: --window ${windowMs} ms is outside [${MIN_WINDOW_MS}ms, 60s] (too short to measure a curve, or too long)`);
  const json = flag(p, 'json');
  const postcopy = postcopyFlag(p, 'analyze') ?? 'auto';
  const agentFlag = str(p, 'agent');
  if (agentFlag === undefined) return analyzeInCluster(p, { vm, given, maxDowntimeMs, windowMs, postcopy, json });
  const agent = address(agentFlag, '--agent');
  const client = new AgentClient(agent, agentChannelCredentials(tlsFromFlags(p, 'analyze')));
  const link = given ?? DEFAULT_LINK_BYTES_PER_SEC;
  return analyzeOn(client, { vm, agent, link, linkNote: given === undefined ? 'assumed: no --bandwidth given' : '', setupMs: 0, roundMs: DEFAULT_ROUND_MS, postcopySwitchMs: SWITCHOVER_OVERHEAD_MS, maxDowntimeMs, windowMs, postcopy, json });
}

/** The cluster form: the VM's node from etcd, the link from --bandwidth or the node's measured links. */
async function analyzeInCluster(p: Parsed, a: { vm: string; given?: number; maxDowntimeMs: number; windowMs: number; postcopy: PostcopyMode; json: boolean }): Promise<number> {
  if (str(p, 'etcd') === undefined && !process.env.DROVER_ETCD) throw new UsageError(`analyze: give --agent ADDR, or --etcd URL / DROVER_ETCD to find the VM's node (usage: ${ANALYZE_USAGE})`);
  const to = str(p, 'to');
  return withEtcd(p, 'analyze', async (etcd) => {
    const snap = await readSnapshot(etcd);
    const rec = snap.vms.get(a.vm)?.value;
    if (!rec) throw new UsageError(`analyze: no VM named "${a.vm}" in the cluster`);
    if (!rec.node) throw new UsageError(`analyze: VM "${a.vm}" is not placed on a node yet (state ${rec.state})`);
    const node = snap.nodes.get(rec.node);
    if (!node?.heartbeat) throw new DroverError('UNAVAILABLE', `analyze: VM "${a.vm}" is on node ${rec.node}, which is not heartbeating`);
    if (to !== undefined && !snap.nodes.has(to)) throw new UsageError(`analyze: --to ${to} is not a node of the cluster`);
    let link = a.given ?? 0;
    let linkNote = '';
    let setupMs = 0;
    const mine = [...(await readLinks(etcd))].filter(([k]) => k.startsWith(`${rec.node}/`) && (to === undefined || k === `${rec.node}/${to}`));
    const timed = mine.filter(([, r]) => r.roundMs !== undefined);
    // The round cost is the path's, whatever rate --bandwidth sets.
    const roundMs = timed.length > 0 ? timed.reduce((s, [, r]) => s + r.roundMs!, 0) / timed.length : DEFAULT_ROUND_MS;
    const switched = mine.filter(([, r]) => r.postcopySwitchMs !== undefined);
    const postcopySwitchMs = switched.length > 0 ? switched.reduce((s, [, r]) => s + r.postcopySwitchMs!, 0) / switched.length : SWITCHOVER_OVERHEAD_MS;
    if (a.given === undefined) {
      if (mine.length > 0) {
        link = mine.reduce((s, [, r]) => s + r.bytesPerSec, 0) / mine.length;
        setupMs = mine.reduce((s, [, r]) => s + (r.setupMs ?? 0), 0) / mine.length;
        linkNote = `measured: ${mine.map(([k, r]) => `${k} ${formatRate(r.bytesPerSec)}, set-up ${formatMs(r.setupMs ?? 0)}, over ${r.samples} migration(s)`).join('; ')}`;
      } else {
        link = DEFAULT_LINK_BYTES_PER_SEC;
        linkNote = `assumed: no migration from ${rec.node}${to ? ` to ${to}` : ''} measured yet and no --bandwidth given`;
      }
    }
    const client = new AgentClient(node.record.address, agentCredentials(rec.node));
    return analyzeOn(client, { vm: a.vm, agent: node.record.address, link, linkNote, setupMs, roundMs, postcopySwitchMs, maxDowntimeMs: a.maxDowntimeMs, windowMs: a.windowMs, postcopy: a.postcopy, json: a.json });
  });
}

/** Observes the VM on `client`, predicts, prints. */
async function analyzeOn(client: AgentClient, a: Ask): Promise<number> {
  const { vm, agent, link, maxDowntimeMs, windowMs } = a;
  try {
    await client.waitReady();
    const o = await client.analyzeVm(vm, windowMs);
    const wss = (o.wss ?? []).map((w) => ({ windowMs: Number(w.windowMs), bytes: Number(w.bytes) }));
    const maxWrite = cpuBoundWriteRate(o.dirtyRateBytesPerSec, o.vcpuBusy, o.vcpus);
    const pr = predictMigration({
      memBytes: Number(o.memBytes), nonzeroBytes: Number(o.nonzeroBytes), dirtyRateBytesPerSec: o.dirtyRateBytesPerSec, wss, linkBytesPerSec: link, maxDowntimeMs, setupMs: a.setupMs,
      roundOverheadMs: a.roundMs, postcopySwitchMs: a.postcopySwitchMs, guestMaxWriteBytesPerSec: maxWrite,
      // The page engine's targets offer post-copy; the mode decides whether it may be used.
      postcopyAvailable: a.postcopy !== 'never', postcopy: a.postcopy,
    });
    const out = {
      vm, agent, memBytes: Number(o.memBytes), nonzeroBytes: Number(o.nonzeroBytes), dirtyRateBytesPerSec: o.dirtyRateBytesPerSec,
      guestWriteRateBytesPerSec: o.guestWriteRateBytesPerSec, vcpuBusy: o.vcpuBusy, guestMaxWriteBytesPerSec: maxWrite, wss, observedMs: o.observedMs, snapshots: o.snapshots, observationCpuMs: o.observationCpuMs,
      linkBytesPerSec: link, linkAssumed: a.linkNote.startsWith('assumed'), linkNote: a.linkNote, setupMs: a.setupMs, roundMs: a.roundMs, postcopySwitchMs: a.postcopySwitchMs, maxDowntimeMs,
      predictedRounds: pr.rounds, predictedTotalMs: pr.predictedTotalMs, predictedBytes: pr.predictedBytes, predictedDowntimeMs: pr.predictedDowntimeMs,
      converges: pr.converges, policy: pr.policy, policyReason: pr.policyReason, postcopyMode: a.postcopy,
      ...(pr.postcopy ? { postcopy: pr.postcopy } : {}),
      ...qemuFigure(o),
    };
    if (a.json) console.log(JSON.stringify(out));
    else printHuman(out);
    return 0;
  } finally {
    client.close();
  }
}

/** QEMU's own measurement, when the agent's driver made one (or says why it could not): absent for a sim VM. */
function qemuFigure(o: { qemuDirtyRateBytesPerSec: number; qemuDirtyRateMethod: string; qemuDirtyRateNote: string }): { qemuDirtyRateBytesPerSec?: number; qemuDirtyRateMethod?: string; qemuDirtyRateNote?: string } {
  if (!o.qemuDirtyRateMethod && !o.qemuDirtyRateNote) return {};
  return { qemuDirtyRateBytesPerSec: o.qemuDirtyRateBytesPerSec, qemuDirtyRateMethod: o.qemuDirtyRateMethod, qemuDirtyRateNote: o.qemuDirtyRateNote };
}

function printHuman(o: { guestWriteRateBytesPerSec: number; qemuDirtyRateBytesPerSec?: number; qemuDirtyRateMethod?: string; qemuDirtyRateNote?: string;  vm: string; memBytes: number; nonzeroBytes: number; dirtyRateBytesPerSec: number; wss: { windowMs: number; bytes: number }[]; observedMs: number; observationCpuMs: number; linkBytesPerSec: number; linkNote: string; maxDowntimeMs: number; predictedRounds: number; predictedTotalMs: number; predictedBytes: number; predictedDowntimeMs: number; converges: boolean; policy: string; policyReason: string; postcopy?: { afterRound: number; remainderBytes: number; allPresentMs: number; pageWaits: number; pageWaitMaxMs: number } }): void {
  const row = (k: string, v: string) => console.log(`  ${k.padEnd(20)} ${v}`);
  console.log(`${o.vm}: observed ${formatMs(o.observedMs)} (agent CPU ${formatMs(o.observationCpuMs)}), nothing sent`);
  row('memory', `${formatBytes(o.memBytes)} (${formatBytes(o.nonzeroBytes)} non-zero)`);
  row('dirty rate', formatRate(o.dirtyRateBytesPerSec));
  if (o.qemuDirtyRateMethod) row('QEMU dirty rate', `${formatRate(o.qemuDirtyRateBytesPerSec ?? 0)} (calc-dirty-rate ${o.qemuDirtyRateMethod}: ${o.qemuDirtyRateNote})`);
  else if (o.qemuDirtyRateNote) row('QEMU dirty rate', `none: ${o.qemuDirtyRateNote}`);
  if (o.qemuDirtyRateNote) row('guest writes', `${formatRate(o.guestWriteRateBytesPerSec)} (the guest's own counter, repeated writes included)`);
  row('WSS curve', o.wss.map((w) => `${formatMs(w.windowMs)}:${formatBytes(w.bytes)}`).join('  '));
  row('link', `${formatRate(o.linkBytesPerSec)}${o.linkNote ? ` (${o.linkNote})` : ''}, target downtime ${formatMs(o.maxDowntimeMs)}`);
  row('predicted rounds', String(o.predictedRounds));
  row('predicted time', formatMs(o.predictedTotalMs));
  row('predicted bytes', formatBytes(o.predictedBytes));
  row('predicted downtime', formatMs(o.predictedDowntimeMs));
  row('converges', o.converges ? 'yes' : 'no');
  row('policy', `${o.policy}: ${o.policyReason}`);
  if (o.postcopy) row('post-copy', `after round ${o.postcopy.afterRound}: ${formatBytes(o.postcopy.remainderBytes)} pushed, all pages present ${formatMs(o.postcopy.allPresentMs)} after the switch, about ${o.postcopy.pageWaits} page waits of up to ${formatMs(o.postcopy.pageWaitMaxMs)}`);
}
