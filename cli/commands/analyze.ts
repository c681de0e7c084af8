/**
 * `drover analyze VM --agent ADDR`: observes the guest's dirty pages for a window (the agent's
 * AnalyzeVm: nothing is sent) and predicts what a pre-copy migration would cost with the cost
 * model (migration/policy/cost-model.ts): rounds, time, bytes, downtime, convergence, policy.
 */
import { parse, required, flag, duration, rate, address, UsageError } from '../args';
import { AgentClient } from '../../services/node-agent/client/agent-client';
import { formatBytes, formatMs, formatRate } from '../../lib/units';
import { predictMigration } from '../../migration/policy/cost-model';
import { DEFAULT_MAX_DOWNTIME_MS } from '../../migration/types';
import { TLS_OPTIONS, TLS_USAGE, agentChannelCredentials, tlsFromFlags } from '../tls-flags';

/** Usage of the command. */
export const ANALYZE_USAGE = `drover analyze VM --agent ADDR [--bandwidth RATE] [--max-downtime D] [--window 5s] [--json] ${TLS_USAGE}`;
/** Link rate assumed without --bandwidth: 1 Gbit/s. */
export const DEFAULT_LINK_BYTES_PER_SEC = 1e9 / 8;
const DEFAULT_WINDOW_MS = 5000;
const MIN_WINDOW_MS = 50;

/** Runs the command. */
export async function analyzeCommand(argv: string[]): Promise<number> {
  const p = parse(argv, {
    agent: { type: 'string' }, bandwidth: { type: 'string' }, 'max-downtime': { type: 'string' }, window: { type: 'string' }, json: { type: 'boolean' }, ...TLS_OPTIONS,
  }, 'analyze');
  if (p.positionals.length !== 1) throw new UsageError(`analyze: expected one VM name (usage: ${ANALYZE_USAGE})`);
  const vm = p.positionals[0];
  const agent = address(required(p, 'agent', 'analyze'), '--agent');
  const given = rate(p, 'bandwidth');
  if (given !== undefined && !(given > 0)) throw new UsageError(`analyze: --bandwidth must be above 0 (the link rate the prediction assumes)`);
  const link = given ?? DEFAULT_LINK_BYTES_PER_SEC;
  const maxDowntimeMs = duration(p, 'max-downtime', DEFAULT_MAX_DOWNTIME_MS)!;
  if (!(maxDowntimeMs > 0)) throw new UsageError('analyze: --max-downtime must be above 0');
  const windowMs = duration(p, 'window', DEFAULT_WINDOW_MS)!;
  if (windowMs < MIN_WINDOW_MS || windowMs > 60_000) throw new UsageError(`analyze: --window ${windowMs} ms is outside [${MIN_WINDOW_MS}ms, 60s] (too short to measure a curve, or too long)`);
  const json = flag(p, 'json');
  const client = new AgentClient(agent, agentChannelCredentials(tlsFromFlags(p, 'analyze')));
  try {
    await client.waitReady();
    const o = await client.analyzeVm(vm, windowMs);
    const wss = (o.wss ?? []).map((w) => ({ windowMs: Number(w.windowMs), bytes: Number(w.bytes) }));
    const pr = predictMigration({
      memBytes: Number(o.memBytes), nonzeroBytes: Number(o.nonzeroBytes), dirtyRateBytesPerSec: o.dirtyRateBytesPerSec, wss, linkBytesPerSec: link, maxDowntimeMs,
    });
    const out = {
      vm, agent, memBytes: Number(o.memBytes), nonzeroBytes: Number(o.nonzeroBytes), dirtyRateBytesPerSec: o.dirtyRateBytesPerSec,
      guestWriteRateBytesPerSec: o.guestWriteRateBytesPerSec, wss, observedMs: o.observedMs, snapshots: o.snapshots, observationCpuMs: o.observationCpuMs,
      linkBytesPerSec: link, linkAssumed: given === undefined, maxDowntimeMs,
      predictedRounds: pr.rounds, predictedTotalMs: pr.predictedTotalMs, predictedBytes: pr.predictedBytes, predictedDowntimeMs: pr.predictedDowntimeMs,
      converges: pr.converges, policy: pr.policy, policyReason: pr.policyReason,
    };
    if (json) console.log(JSON.stringify(out));
    else printHuman(out);
    return 0;
  } finally {
    client.close();
  }
}

function printHuman(o: { vm: string; memBytes: number; nonzeroBytes: number; dirtyRateBytesPerSec: number; wss: { windowMs: number; bytes: number }[]; observedMs: number; observationCpuMs: number; linkBytesPerSec: number; linkAssumed: boolean; maxDowntimeMs: number; predictedRounds: number; predictedTotalMs: number; predictedBytes: number; predictedDowntimeMs: number; converges: boolean; policy: string; policyReason: string }): void {
  const row = (k: string, v: string) => console.log(`  ${k.padEnd(20)} ${v}`);
  console.log(`${o.vm}: observed ${formatMs(o.observedMs)} (agent CPU ${formatMs(o.observationCpuMs)}), nothing sent`);
  row('memory', `${formatBytes(o.memBytes)} (${formatBytes(o.nonzeroBytes)} non-zero)`);
  row('dirty rate', formatRate(o.dirtyRateBytesPerSec));
  row('WSS curve', o.wss.map((w) => `${formatMs(w.windowMs)}:${formatBytes(w.bytes)}`).join('  '));
  row('link', `${formatRate(o.linkBytesPerSec)}${o.linkAssumed ? ' (assumed: no --bandwidth given)' : ''}, target downtime ${formatMs(o.maxDowntimeMs)}`);
  row('predicted rounds', String(o.predictedRounds));
  row('predicted time', formatMs(o.predictedTotalMs));
  row('predicted bytes', formatBytes(o.predictedBytes));
  row('predicted downtime', formatMs(o.predictedDowntimeMs));
  row('converges', o.converges ? 'yes' : 'no');
  row('policy', `${o.policy}: ${o.policyReason}`);
}
