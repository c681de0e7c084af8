/** `drover migrate VM --from ADDR --to ADDR`: one live migration between two agents. */
import { parse, required, str, flag, duration, rate, int, address, UsageError, type Parsed } from '../args';
import { AgentClient } from '../../services/node-agent/client/agent-client';
import { guestBlackoutMs } from '../../services/node-agent/client/agent-codec';
import { ProgressLine } from '../progress';
import { formatBytes, formatMs, formatRate } from '../../lib/units';
import { AUTO_CONVERGE_MODES, COMPRESSION_MODES, modeOf, POSTCOPY_MODES, type CompressionMode, type MigrationPolicy, type MigrationResult, type PostcopyMode } from '../../migration/types';
import { TLS_OPTIONS, TLS_USAGE, agentChannelCredentials, tlsFromFlags } from '../tls-flags';
import { DATA_TRANSPORTS, MAX_STREAMS, STREAMS_AUTO, type DataTransport } from '../../migration/wire/protocol';

/**
 * A `--streams N|auto` value: 1..MAX_STREAMS parallel data streams, or STREAMS_AUTO (the source
 * agent picks from its cores). A UsageError naming the flag otherwise.
 */
export function parseStreams(text: string, flagName = '--streams'): number {
  if (text === 'auto') return STREAMS_AUTO;
  const n = /^[0-9]+$/.test(text) ? Number(text) : NaN;
  if (!(n >= 1 && n <= MAX_STREAMS)) throw new UsageError(`${flagName} "${text}" is not a stream count (expected 1..${MAX_STREAMS} or auto)`);
  return n;
}

/** A `--compress never|auto|always` value (page-batch compression); a usage error naming the flag otherwise. */
export function parseCompress(text: string, flagName = '--compress'): CompressionMode {
  return flagMode(COMPRESSION_MODES, text, flagName, 'compression mode');
}

/** `text` given to flag `label` as one of `modes`; a UsageError naming the flag, the value and the modes otherwise. */
function flagMode<T extends string>(modes: readonly T[], text: string, label: string, what: string): T {
  const mode = modeOf(modes, text);
  if (mode === undefined) throw new UsageError(`${label} "${text}" is not ${/^[aeiou]/.test(what) ? 'an' : 'a'} ${what} (expected ${modes.join(', ')})`);
  return mode;
}

/** A `--transport grpc|bulk|auto` value (how page batches travel); a usage error naming the flag otherwise. */
export function parseTransport(text: string, flagName = '--transport'): DataTransport {
  if (!(DATA_TRANSPORTS as readonly string[]).includes(text)) throw new UsageError(`${flagName} "${text}" is not a data transport (expected ${DATA_TRANSPORTS.join(', ')})`);
  return text as DataTransport;
}

/** The convergence flags every migrating command takes (post-copy and auto-converge). */
export const POSTCOPY_OPTIONS = { postcopy: { type: 'string' }, 'no-postcopy': { type: 'boolean' }, 'auto-converge': { type: 'string' } } as const;

/**
 * The policy's convergence choices from the command line. Without flags the engine decides
 * (post-copy 'auto', throttling allowed); the flags override. A UsageError naming the flag on a bad value.
 */
export function convergenceFlags(p: Parsed, command: string): Pick<MigrationPolicy, 'postcopy' | 'autoConverge'> {
  const text = str(p, 'auto-converge');
  const ac = text === undefined ? undefined : flagMode(AUTO_CONVERGE_MODES, text, `${command}: --auto-converge`, 'auto-converge mode');
  return { postcopy: postcopyFlag(p, command) ?? 'auto', ...(ac === 'never' ? { autoConverge: 'never' as const } : {}) };
}

/**
 * `--postcopy never|auto|always` or `--no-postcopy` (= never): the policy's post-copy mode, or
 * undefined when neither is given. A UsageError naming the flag for anything else.
 */
export function postcopyFlag(p: Parsed, command: string): PostcopyMode | undefined {
  const v = str(p, 'postcopy');
  if (flag(p, 'no-postcopy')) {
    if (v !== undefined) throw new UsageError(`${command}: --no-postcopy and --postcopy ${v} contradict each other`);
    return 'never';
  }
  if (v === undefined) return undefined;
  return flagMode(POSTCOPY_MODES, v, `${command}: --postcopy`, 'post-copy mode');
}

/** Usage of the direct form. */
export const MIGRATE_USAGE = `drover migrate VM --from ADDR --to ADDR [--to-node NAME] [--max-downtime 5ms] [--bandwidth 1Gbit|0] [--max-rounds N] [--streams N|auto] [--compress never|auto|always] [--transport auto|grpc|bulk] [--postcopy never|auto|always | --no-postcopy] [--auto-converge never|auto] [--verify] [--json] ${TLS_USAGE}`;

/** ", LZ4 on 12 batches (48 MiB as 24 MiB)" when some batches went compressed, else "". */
function compressedText(r: MigrationResult): string {
  if (!r.compressedBatches) return '';
  return `, LZ4 on ${r.compressedBatches} batches (${formatBytes(r.compressedPageBytes ?? 0)} as ${formatBytes(r.compressedBytes ?? 0)})`;
}

/** Prints a result as a few human lines. */
export function printResult(r: MigrationResult): void {
  const why = r.policyReason ? `\n  policy ${r.policy}: ${r.policyReason}${r.throttledMs ? `; throttled for ${formatMs(r.throttledMs)}` : ''}` : '';
  const compression = r.compressReason ? `\n  compression ${r.compressReason}` : '';
  const pc = r.mode === 'postcopy' ? `, post-copy: ${r.pageWaits ?? 0} page waits (p99 ${formatMs(r.pageWaitP99Ms ?? 0)}), all pages in ${formatMs(r.allPresentMs ?? 0)}` : '';
  console.log(`${r.vm}: ${r.outcome} in ${formatMs(r.totalMs)}, downtime ${formatMs(r.downtimeMs)}, ${r.rounds} rounds (${r.stopReason}${r.throttlePercent ? `, guest throttled to ${100 - r.throttlePercent}% speed` : ''}${pc}), ${formatBytes(r.bytesSent)} sent at ${formatRate(r.throughputBytesPerSec)}${compressedText(r)}${r.verified ? ', verified' : ''}${why}${compression}`);
}

/** Runs the direct migrate form. */
export async function migrateDirect(argv: string[]): Promise<number> {
  const p = parse(argv, {
    from: { type: 'string' }, to: { type: 'string' }, 'max-downtime': { type: 'string' }, bandwidth: { type: 'string' },
    'max-rounds': { type: 'string' }, verify: { type: 'boolean' }, json: { type: 'boolean' }, id: { type: 'string' },
    'to-node': { type: 'string' }, streams: { type: 'string' }, compress: { type: 'string' }, transport: { type: 'string' }, ...POSTCOPY_OPTIONS, ...TLS_OPTIONS,
  }, 'migrate');
  const convergence = convergenceFlags(p, 'migrate');
  if (p.positionals.length !== 1) throw new UsageError(`migrate: expected one VM name (usage: ${MIGRATE_USAGE})`);
  const vm = p.positionals[0];
  const from = address(required(p, 'from', 'migrate'), '--from');
  const to = address(required(p, 'to', 'migrate'), '--to');
  const policy = {
    maxDowntimeMs: duration(p, 'max-downtime'), bandwidthBytesPerSec: rate(p, 'bandwidth'), maxRounds: int(p, 'max-rounds'), verify: flag(p, 'verify'),
    ...(str(p, 'streams') !== undefined ? { streams: parseStreams(str(p, 'streams')!) } : {}),
    ...(str(p, 'compress') !== undefined ? { compress: parseCompress(str(p, 'compress')!) } : {}),
    ...(str(p, 'transport') !== undefined ? { transport: parseTransport(str(p, 'transport')!) } : {}),
    ...convergence,
  };
  const json = flag(p, 'json');
  const tls = tlsFromFlags(p, 'migrate');
  // With TLS the source streams only to the node named here (its certificate must say so).
  const toNode = str(p, 'to-node') ?? '';
  if (tls.mode === 'tls' && !toNode) throw new UsageError('migrate: --to-node NAME is required with TLS (the node the target\'s certificate must name)');
  const src = new AgentClient(from, agentChannelCredentials(tls));
  const dst = new AgentClient(to, agentChannelCredentials(tls, toNode ? { role: 'node', name: toNode } : { role: 'node' }));
  try {
    await src.waitReady();
    await dst.waitReady();
    const line = new ProgressLine();
    let result: MigrationResult | undefined;
    try {
      result = await src.migrateVm(vm, to, policy, json ? undefined : (e) => line.update(e), String(p.values.id ?? ''), toNode);
    } finally {
      line.done();
    }
    if (result.outcome === 'succeeded' && !(result.guestBlackoutMs !== undefined && result.guestBlackoutMs >= 0)) {
      // The sim engine does not measure the guest's blackout: the target's guest does (its first
      // beat's gap after the resume), as the migrator records it for cluster jobs (services/migrator/attempt.ts).
      try { result = { ...result, guestBlackoutMs: guestBlackoutMs(await dst.getVm(vm)) }; } catch { /* not measured: stays -1 */ }
    }
    if (json) console.log(JSON.stringify(result));
    else printResult(result);
    return 0;
  } finally {
    src.close();
    dst.close();
  }
}
