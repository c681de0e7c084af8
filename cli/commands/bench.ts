/**
 * `drover bench`: two agents as separate processes on loopback, one VM per profile created on
 * the first, warmed up, migrated to the second with verification, run there, checked by the
 * guest itself; a table (or one JSON object per migration with --json). `--baselines` adds raw
 * TCP and a plain HTTP/2 stream measured in the same run.
 */
import { parse, str, flag, duration, rate, UsageError } from '../args';
import { SPEC_OPTIONS, specFromFlags } from './vm';
import type { AgentClient } from '../../services/node-agent/client/agent-client';
import { guestBlackoutMs } from '../../services/node-agent/client/agent-codec';
import { cpuMeter, perGb, startBenchPair, tlsComparison, type BenchPair, type CpuReading } from './bench-tls';
import { PROFILE_NAMES, type ProfileName } from '../../hypervisor/types';
import { formatBytes, formatMs, formatRate } from '../../lib/units';
import { ProgressLine } from '../progress';
import type { CompressionMode, MigrationPolicy, MigrationResult } from '../../migration/types';
import { runBaselines, type Baseline } from '../../bench/baselines';
import { startQemuNbd, type LocalNbdServer } from '../../storage/nbd/local-nbd-servers';
import { measureDiskPause, type DiskPauseCost } from '../../bench/disk-pause';
import { setTimeout as sleep } from 'node:timers/promises';
import { convergenceFlags, parseCompress, parseStreams, parseTransport, POSTCOPY_OPTIONS } from './migrate';
import { STREAMS_AUTO, type DataTransport } from '../../migration/wire/protocol';

/** One bench line: the migration result plus what the guest saw. */
export interface BenchResult extends MigrationResult {
  /** The guest-observed blackout: the source's last heartbeat to the target's first (agent-codec.ts guestBlackoutMs). */
  guestDowntimeMs: number;
  /** The target guest's largest heartbeat gap from the pause until right after the migration (also counts stalls after the resume). */
  guestMaxGapMs: number;
  guestCheckOk: boolean;
  memoryVerified: boolean;
  sentOverNonzero: number;
  /** The VM's disk URI ('' = diskless). */
  disk: string;
  /** True only when the VM has a disk and the guest's disk check passed on the target. */
  diskVerified: boolean;
  /** Highest acknowledged WAL record on the target after the run (0 without a disk). */
  diskAckedSeq: number;
  /** How the agents talked (plain text or mutual TLS); `transport` is the data transport the batches took (grpc or bulk). */
  security?: 'plain' | 'tls';
  /** CPU seconds of each agent process during MigrateVm (utime + stime of /proc/PID/stat), less its sim guest's vCPU threads. */
  cpuSeconds?: { source: number; target: number };
  /** CPU seconds of the sim guests' vCPU threads in each agent during MigrateVm (not in cpuSeconds). */
  guestCpuSeconds?: { source: number; target: number };
  /** cpuSeconds per GB (10^9 bytes) on the wire, each side. */
  cpuSecondsPerGB?: { source: number; target: number };
  /** Parallel data streams asked for (STREAMS_AUTO = the source picked). */
  streams: number;
  /** The compression mode asked for with --compress (absent = the engine's default, auto). */
  compress?: CompressionMode;
  /** The data transport asked for with --transport (absent = the engine's default, auto). */
  transportAsked?: DataTransport;
}


/** Runs one migration of a fresh VM of `profile` from a to b. */
export async function benchOne(a: AgentClient, b: AgentClient, spec: ReturnType<typeof specFromFlags>, opts: {
  warmupMs: number; runAfterMs: number; maxDowntimeMs?: number; bandwidth?: number; progress?: ProgressLine; streams?: number;
  /** Page-batch compression (absent = the engine's default). */
  compress?: CompressionMode;
  /** Data transport of the page batches (absent = the engine's default). */
  transport?: DataTransport;
  /** Post-copy and auto-converge choices (convergenceFlags); absent = pre-copy only. */
  convergence?: Pick<MigrationPolicy, 'postcopy' | 'autoConverge'>;
  /** The target's node name (needed with TLS). */
  targetNode?: string;
  /** Started just before MigrateVm; its result (CPU seconds per side) is read right after. */
  meter?: () => () => CpuReading;
}): Promise<BenchResult> {
  await a.createVm(spec);
  try {
    await sleep(opts.warmupMs);
    const stop = opts.meter?.();
    const r = await a.migrateVm(spec.name, b.address, { verify: true, maxDowntimeMs: opts.maxDowntimeMs, bandwidthBytesPerSec: opts.bandwidth, streams: opts.streams ?? 1, ...opts.convergence, ...(opts.compress ? { compress: opts.compress } : {}), ...(opts.transport ? { transport: opts.transport } : {}) }, (e) => opts.progress?.update(e), '', opts.targetNode ?? '');
    const reading = stop?.();
    const cpuSeconds = reading ? { source: reading.source, target: reading.target } : undefined;
    opts.progress?.done();
    const after = await b.getVm(spec.name);
    const beatsAt = after.heartbeatBeats;
    await sleep(opts.runAfterMs);
    const check = await b.verifyVm(spec.name);
    const running = check.heartbeatBeats > beatsAt;
    const memoryVerified = r.verified;
    return {
      ...r, memoryVerified, streams: opts.streams ?? 1, ...(opts.compress ? { compress: opts.compress } : {}), ...(opts.transport ? { transportAsked: opts.transport } : {}), guestCheckOk: check.ok && running,
      verified: memoryVerified && check.ok && running && (!check.diskChecked || check.diskOk),
      guestDowntimeMs: guestBlackoutMs(after), guestMaxGapMs: after.heartbeatMaxGapMs, sentOverNonzero: r.nonzeroBytes > 0 ? r.bytesSent / r.nonzeroBytes : NaN,
      disk: spec.disk ?? '', diskVerified: check.diskChecked && check.diskOk, diskAckedSeq: check.diskAckedSeq ?? 0,
      ...(cpuSeconds ? { cpuSeconds, guestCpuSeconds: reading!.guest, cpuSecondsPerGB: { source: perGb(cpuSeconds.source, r.bytesSent), target: perGb(cpuSeconds.target, r.bytesSent) } } : {}),
    };
  } finally {
    await b.destroyVm(spec.name).catch(() => undefined);
    await a.destroyVm(spec.name).catch(() => undefined);
  }
}

/** "source/target" CPU seconds per GB on the wire, or "-" when not measured. */
function cpuCell(r: BenchResult): string {
  const c = r.cpuSecondsPerGB;
  return c && Number.isFinite(c.source) && Number.isFinite(c.target) ? `${c.source.toFixed(2)}/${c.target.toFixed(2)}` : '-';
}

/** A stream count as printed ("auto" for STREAMS_AUTO). */
function streamsText(n: number): string {
  return n === STREAMS_AUTO ? 'auto' : String(n);
}

/** A result's row label: profile, +disk, /plain or /tls, /grpc or /bulk (the transport taken, once known, else asked for), /xN streams, /lz4-MODE when --compress was given. */
function benchLabel(r: Pick<BenchResult, 'profile' | 'disk' | 'security' | 'streams' | 'compress' | 'transportAsked' | 'transport'>): string {
  const data = r.transport ?? r.transportAsked;
  return `${r.disk ? `${r.profile}+disk` : r.profile}${r.security ? `/${r.security}` : ''}${data ? `/${data}` : ''}${r.streams !== 1 ? `/x${streamsText(r.streams)}` : ''}${r.compress ? `/lz4-${r.compress}` : ''}`;
}

/** "12 (0.51)": batches sent LZ4-encoded and their encoded/page ratio, or "-". */
function lz4Cell(r: BenchResult): string {
  return r.compressedBatches ? `${r.compressedBatches} (${((r.compressedBytes ?? 0) / (r.compressedPageBytes || 1)).toFixed(2)})` : '-';
}

/** What the engine chose and what the guest paid beyond the blackout: throttled time, or post-copy's page waits. */
function policyCell(r: BenchResult): string {
  if (r.mode === 'postcopy') return `postcopy, ${r.pageWaits ?? 0} waits p99 ${formatMs(r.pageWaitP99Ms ?? 0)}, all in ${formatMs(r.allPresentMs ?? 0)}`;
  if (r.throttlePercent) return `throttle ${r.throttlePercent}% for ${formatMs(r.throttledMs ?? 0)} (${r.stopReason})`;
  return `precopy (${r.stopReason})`;
}

/** Formats bench results and baselines as a table. */
export function benchTable(results: BenchResult[], baselines: Baseline[]): string {
  const w = Math.max(10, ...results.map((r) => benchLabel(r).length + 1));
  const lines = [
    `${'profile'.padEnd(w)} mem       downtime  guest-dt  total     rounds  sent       sent/nonzero  throughput   cpu s/GB src/tgt  lz4 (ratio)  policy (guest's bill)                     verified`,
  ];
  for (const r of results) {
    lines.push([
      benchLabel(r).padEnd(w), formatBytes(r.memBytes).padEnd(9), formatMs(r.downtimeMs).padEnd(9), formatMs(r.guestDowntimeMs).padEnd(9),
      formatMs(r.totalMs).padEnd(9), String(r.rounds).padEnd(7), formatBytes(r.bytesSent).padEnd(10), r.sentOverNonzero.toFixed(2).padEnd(13),
      formatRate(r.throughputBytesPerSec).padEnd(12), cpuCell(r).padEnd(17), lz4Cell(r).padEnd(12), policyCell(r).padEnd(41), r.verified ? 'yes' : 'NO',
    ].join(' '));
  }
  if (baselines.length) {
    lines.push('', 'baselines (same run)');
    const h2 = baselines.find((b) => b.name.includes('HTTP/2'));
    for (const b of baselines) {
      const c = b.cpuSecondsPerGB;
      lines.push(`  ${b.name.padEnd(32)} ${formatRate(b.bytesPerSec)}${c ? `  (CPU s/GB sender ${c.sender.toFixed(2)}, receiver ${c.receiver.toFixed(2)})` : ''}`);
    }
    const sock = baselines.find((b) => b.name.includes('node socket'));
    for (const r of results) {
      const label = `${r.profile}${r.security ? `/${r.security}` : ''}${r.transport ? `/${r.transport}` : ''}, ${streamsText(r.streams)} stream${r.streams === 1 ? '' : 's'}${r.compress ? `, lz4 ${r.compress}` : ''}`;
      if (h2) lines.push(`  page stream / HTTP/2 stream (${label}): ${(r.throughputBytesPerSec / h2.bytesPerSec).toFixed(2)}${sock ? `, / node socket: ${(r.throughputBytesPerSec / sock.bytesPerSec).toFixed(2)}` : ''}`);
    }
  }
  const extra = diskExtraDowntime(results);
  if (extra.length) {
    lines.push('', 'disk: end-to-end downtime without -> with the disk, same run (medians over --repeat; noisy on a loaded machine)');
    for (const x of extra) {
      lines.push(`  ${x.profile.padEnd(9)} downtime ${formatMs(x.withoutMs)} -> ${formatMs(x.withMs)} (${x.extraMs >= 0 ? '+' : '-'}${formatMs(Math.abs(x.extraMs))}), guest-dt ${formatMs(x.guestWithoutMs)} -> ${formatMs(x.guestWithMs)}, pause step (vCPUs + disk drain/flush) ${formatMs(x.pauseWithoutMs)} -> ${formatMs(x.pauseWithMs)}, disk verified ${x.diskVerified ? 'yes' : 'NO'}`);
    }
  }
  return lines.join('\n');
}

/** The direct measurement of the disk's share of the blackout, as printed by bench. */
export function diskPauseLine(c: DiskPauseCost): string {
  const f = (x: { median: number; p90: number }) => `median ${formatMs(x.median)}, p90 ${formatMs(x.p90)}`;
  return [
    `disk: pause cost measured directly (${c.cycles} pause/resume cycles of a db VM, same export, ${c.records} WAL records acked)`,
    `  pause without disk ${f(c.pauseNoDiskMs)}; with disk ${f(c.pauseDiskMs)}; of which drain + flush ${f(c.quiesceMs)}`,
    `  extra downtime per migration = drain + flush at pause ≈ ${formatMs(c.pauseDiskMs.median - c.pauseNoDiskMs.median)} (median); the target opens the export at PrepareIncoming (${formatMs(c.openMs)}), before the pause`,
  ].join('\n');
}

/** One profile's downtime with and without a disk (bench --disk runs both, in the same run). */
export interface DiskExtraDowntime {
  profile: string;
  withoutMs: number;
  withMs: number;
  extraMs: number;
  guestWithoutMs: number;
  guestWithMs: number;
  /** The pause step of the downtime breakdown (vCPUs stop; with a disk also drain + flush): the disk's share. */
  pauseWithoutMs: number;
  pauseWithMs: number;
  diskVerified: boolean;
}

/** Pairs each profile's diskless and disk runs (medians over repeats) and reports the difference. */
export function diskExtraDowntime(results: BenchResult[]): DiskExtraDowntime[] {
  const median = (xs: number[]) => { const s = [...xs].sort((a, b) => a - b); return s.length ? s[Math.floor((s.length - 1) / 2)] : NaN; };
  const out: DiskExtraDowntime[] = [];
  for (const profile of [...new Set(results.filter((r) => r.disk).map((r) => r.profile))]) {
    const w = results.filter((r) => r.profile === profile && r.disk);
    const wo = results.filter((r) => r.profile === profile && !r.disk);
    if (!wo.length) continue;
    const withMs = median(w.map((r) => r.downtimeMs));
    const withoutMs = median(wo.map((r) => r.downtimeMs));
    out.push({
      profile, withoutMs, withMs, extraMs: withMs - withoutMs,
      guestWithoutMs: median(wo.map((r) => r.guestDowntimeMs)), guestWithMs: median(w.map((r) => r.guestDowntimeMs)),
      pauseWithoutMs: median(wo.map((r) => r.downtimeBreakdown?.pauseMs ?? NaN)), pauseWithMs: median(w.map((r) => r.downtimeBreakdown?.pauseMs ?? NaN)),
      diskVerified: w.every((r) => r.diskVerified),
    });
  }
  return out;
}

/** Runs `drover bench`. */
export async function benchCommand(argv: string[]): Promise<number> {
  const p = parse(argv, {
    ...SPEC_OPTIONS, hypervisor: { type: 'string', default: 'sim' }, warmup: { type: 'string' }, 'run-after': { type: 'string' },
    'max-downtime': { type: 'string' }, bandwidth: { type: 'string' }, json: { type: 'boolean' }, baselines: { type: 'boolean' },
    repeat: { type: 'string' }, tls: { type: 'boolean' }, streams: { type: 'string' }, 'tls-only': { type: 'boolean' }, ...POSTCOPY_OPTIONS,
    compress: { type: 'string' }, transport: { type: 'string' },
  }, 'bench');
  // --transport grpc,bulk: each VM migrates once per data transport, same agents, same run (absent: auto only).
  const transports = str(p, 'transport') === undefined ? [undefined] : str(p, 'transport')!.split(',').map((x) => parseTransport(x.trim()));
  // --compress never,auto: each VM migrates once per mode, same agents, same run (absent: the engine's default only).
  const compressModes = str(p, 'compress') === undefined ? [undefined] : str(p, 'compress')!.split(',').map((x) => parseCompress(x.trim()));
  const convergence = convergenceFlags(p, 'bench');
  // --streams 1,2,4: each VM migrates once per stream count (N or auto), same agents, same run.
  const streamCounts = (str(p, 'streams') ?? '1').split(',').map((x) => parseStreams(x.trim()));
  if (p.positionals.length) throw new UsageError(`bench: unexpected argument "${p.positionals[0]}"`);
  const hv = str(p, 'hypervisor', 'sim')!;
  if (hv !== 'sim' && hv !== 'qemu') throw new UsageError(`bench: unknown hypervisor "${hv}" (expected sim or qemu)`);
  const profileArg = str(p, 'profile', 'all')!;
  const profiles: ProfileName[] = profileArg === 'all' ? [...PROFILE_NAMES] : profileArg.split(',').map((x) => x.trim() as ProfileName);
  const specs = profiles.map((prof, i) => {
    const q = { ...p, values: { ...p.values, profile: prof, disk: undefined } }; // the disk is added per run below
    return specFromFlags(`bench-${prof}-${i}`, q, { mem: 2 ** 30 });
  });
  const warmupMs = duration(p, 'warmup', 2000)!;
  const runAfterMs = duration(p, 'run-after', 1000)!;
  const maxDowntimeMs = duration(p, 'max-downtime');
  const bandwidth = rate(p, 'bandwidth');
  const json = flag(p, 'json');
  const repeat = Math.max(1, Number(str(p, 'repeat', '1')) || 1);
  const pairs: BenchPair[] = [];
  const results: BenchResult[] = [];
  // --disk nbd://H:P/E uses that export; --disk auto starts a qemu-nbd on a temp file. Each
  // profile then runs without and with the disk, alternating, to measure the disk's extra downtime.
  const diskArg = str(p, 'disk');
  let nbd: LocalNbdServer | undefined;
  let pauseCost: DiskPauseCost | undefined;
  try {
    if (diskArg === 'auto') {
      nbd = await startQemuNbd({ export: { name: 'drover-bench', size: 64 * 2 ** 20 } });
      if (!json) console.error(`bench: started qemu-nbd serving ${nbd.uri()} (${nbd.file()})`);
    }
    const diskUri = nbd ? nbd.uri() : diskArg;
    // --tls: the same VMs also migrate between mutual-TLS agents, in this run (bench-tls.ts).
    // --tls-only: only the mutual-TLS pair (the production setting), without the plain-text comparison.
    if (!flag(p, 'tls-only')) pairs.push(await startBenchPair(hv, 'plain'));
    if (flag(p, 'tls') || flag(p, 'tls-only')) pairs.push(await startBenchPair(hv, 'tls'));
    for (const base of specs) {
      const variants = diskUri ? [{ ...base, disk: undefined }, { ...base, disk: diskUri }] : [base];
      for (let i = 0; i < repeat; i++) {
        for (const spec of variants) {
          for (const pair of pairs) {
            for (const streams of streamCounts) {
              for (const [compress, transport] of compressModes.flatMap((c) => transports.map((t) => [c, t] as const))) {
                const label = benchLabel({ profile: spec.profile, disk: spec.disk ?? '', security: pair.transport, streams, compress, transportAsked: transport });
                const progress = json ? undefined : new ProgressLine(process.stderr, `${label.padEnd(9)} `);
                const meter = () => cpuMeter(pair);
                const r = await benchOne(pair.a, pair.b, spec, { warmupMs, runAfterMs, maxDowntimeMs, bandwidth, progress, targetNode: pair.targetNode, meter, streams, compress, transport, convergence });
                results.push(pairs.length > 1 || pair.transport === 'tls' ? { ...r, security: pair.transport } : r);
                if (json) console.log(JSON.stringify({ ...results[results.length - 1], tls: pair.transport === 'tls' }));
              }
            }
          }
        }
      }
    }
    if (json) for (const x of diskExtraDowntime(results)) console.log(JSON.stringify({ diskExtraDowntime: x }));
    if (diskUri) {
      pauseCost = await measureDiskPause(diskUri);
      if (json) console.log(JSON.stringify({ diskPauseCost: pauseCost }));
    }
  } finally {
    await Promise.all(pairs.map((x) => x.close()));
    await nbd?.dispose();
  }
  const baselines = flag(p, 'baselines') ? await runBaselines() : [];
  if (json) {
    for (const bl of baselines) console.log(JSON.stringify({ baseline: bl.name, bytesPerSec: bl.bytesPerSec, bytes: bl.bytes, seconds: bl.seconds, ...(bl.cpuSecondsPerGB ? { cpuSecondsPerGB: bl.cpuSecondsPerGB } : {}) }));
  } else {
    console.log([benchTable(results, baselines), ...tlsComparison(results)].join('\n'));
    if (pauseCost) console.log(diskPauseLine(pauseCost));
    // QEMU: no page-level image digest (QEMU sends its own stream through the agents' tunnel).
    if (hv === 'qemu') console.log('\nqemu: memory verification is N/A; "verified" = QEMU reported the migration completed and the guest heartbeat continues on the target');
  }
  return results.every((r) => r.verified) ? 0 : 1;
}
