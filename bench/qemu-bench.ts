/**
 * Baseline for the qemu driver: QEMU's own direct TCP migration over loopback against the
 * driver's unix-socket path with its policy (a Node pipe stands in for the agents' gRPC bridge).
 *
 * For each workload (1 GiB guest, RAM filled; 16 MiB working set at 16 MiB/s "slow", 64 MiB
 * rewritten flat out "fast") and each path:
 *   tcp-default   QEMU defaults (downtime-limit 300 ms, max-bandwidth 128 MiB/s), direct TCP
 *   tcp-5ms       downtime-limit 5 ms (bandwidth still QEMU's default), cancelled after 30 s
 *   tcp-5ms-unl   downtime-limit 5 ms, max-bandwidth unlimited, cancelled after 30 s
 *   drover-direct the driver's policy at 5 ms, source straight to the target's unix socket
 *   drover-pipe   unix socket → Node pipe → unix socket, driver policy at 5 ms (post-copy/throttle)
 *   agents        through the agents: two `drover agent --hypervisor qemu --insecure` processes,
 *                 QEMU's stream tunnelled over their plain-text gRPC Transfer stream, engine policy
 *                 at 5 ms (MigrateVm; downtime = QEMU's, bytes = the tunnel's StreamData frames)
 *   tcp-tls       the encrypted baseline: QEMU direct, downtime-limit 5 ms, uncapped, with
 *                 tls-creds-x509 on both QEMUs (verify-peer, tls-authz on the source's DN,
 *                 tls-hostname), node certificates from a throw-away CA
 *   agents-tls    TLS agents (node certificates from the same CA): the agents set up QEMU's
 *                 native TLS migration between the QEMUs and keep the control (protocol.ts
 *                 "QEMU native"); engine policy at 5 ms
 *   agents-tls-multifd  as agents-tls with --streams 4: the agents set up 4 multifd TLS channels
 *                 between the QEMUs (compare with tcp-tls-multifd)
 *   agents-tunnel TLS agents, the target configured `--qemu-migration tunnel`: QEMU's stream
 *                 through the agents' mutual-TLS gRPC Transfer stream (the fallback)
 * The encrypted rows print their total and downtime as a ratio to tcp-tls of the same run, and
 * the CPU seconds both agent processes spent per GB QEMU sent (0 for the direct paths).
 * Measures the downtime (source QEMU's STOP event to the target QEMU's RESUME event, QEMU's own
 * timestamps), QEMU's own downtime figure (the source's view: without a return path it ends at the
 * last byte written, with one it also waits for the target to close it), total time, bytes sent,
 * and the guest-observed blackout (gap between the source's last heartbeat and the target's first).
 *
 *   node dist/bench/qemu-bench.js [--json] [--mem MiB] [--only slow|fast] [--paths a,b] [--deadline ms]
 *   node dist/bench/qemu-bench.js --only slow --paths tcp-tls,agents-tls,agents-tunnel   (the TLS comparison)
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { pkiFixture, type PkiFixture } from '../lib/pki/pki-fixture';
import { certificateDn, linkCredentials } from '../hypervisor/qemu/migration-tls';
import type { TlsFiles } from '../lib/pki/tls-files';
import { freePort } from '../lib/free-port';
import type { VmSpec } from '../hypervisor/types';
import { QemuHypervisor, stopToResumeMs, type QemuDomain } from '../hypervisor/qemu/qemu-hypervisor';
import { bridgeUnixSockets } from '../hypervisor/qemu/unix-bridge';
import { startAgents, stopAgents, type LocalAgent } from '../services/node-agent/local-agents';
import { convergenceDecider, convergencePolicy } from '../migration/policy/convergence';
import { resolvePolicy } from '../migration/types';

const MiB = 1024 * 1024;

export type QemuBenchPath = 'tcp-default' | 'tcp-5ms' | 'tcp-5ms-unl' | 'drover-direct' | 'drover-pipe' | 'agents' | 'tcp-tls' | 'agents-tls' | 'agents-tunnel' | 'tcp-tls-multifd' | 'agents-tls-multifd';

/** Every path, in the order a run measures them. */
export const QEMU_BENCH_PATHS: QemuBenchPath[] = ['tcp-default', 'tcp-5ms', 'tcp-5ms-unl', 'drover-direct', 'drover-pipe', 'agents', 'tcp-tls', 'agents-tls', 'agents-tunnel', 'tcp-tls-multifd', 'agents-tls-multifd'];
/** multifd channels of the tcp-tls-multifd row (QEMU direct, TLS on each channel). */
const BENCH_MULTIFD_CHANNELS = 4;
/** The encrypted baseline the TLS rows are compared with. */
const TLS_BASELINE: QemuBenchPath = 'tcp-tls';
/** Paths through TLS agents (the agents' processes are started once per run). */
const TLS_AGENT_PATHS: ReadonlySet<QemuBenchPath> = new Set(['agents-tls', 'agents-tunnel', 'agents-tls-multifd']);
/** Direct QEMU paths with TLS. */
const TLS_DIRECT_PATHS: ReadonlySet<QemuBenchPath> = new Set(['tcp-tls', 'tcp-tls-multifd']);

export interface QemuBenchOptions {
  /** Guest RAM in MiB; default 1024. */
  memMiB?: number;
  /** Workloads to run; default both. */
  workloads?: Array<'slow' | 'fast'>;
  /** Paths to run; default all. */
  paths?: QemuBenchPath[];
  /** Cancel a migration that has not converged after this many ms; default 30000. */
  deadlineMs?: number;
  /** QEMU binary. */
  binary?: string;
  /** Called with each row as it is measured. */
  onRow?: (row: QemuBenchRow) => void;
}

export interface QemuBenchRow {
  workload: 'slow' | 'fast';
  path: QemuBenchPath;
  accel: string;
  memMiB: number;
  status: 'completed' | 'cancelled' | 'failed';
  /** Downtime: source QEMU's STOP event to target QEMU's RESUME event (ms); absent when not completed. */
  downtimeMs?: number;
  /** QEMU's own downtime figure (query-migrate; the source's view). */
  qemuDowntimeMs?: number;
  /** Guest-observed blackout: target's first heartbeat − source's last (ms). */
  blackoutMs?: number;
  totalTimeMs: number;
  transferredBytes: number;
  rounds: number;
  /** Policy action on the drover path. */
  action?: string;
  /** Encrypted rows: total time / the tcp-tls row's of the same workload and run. */
  totalVsBaseline?: number;
  /** Encrypted rows: downtime / the tcp-tls row's. */
  downtimeVsBaseline?: number;
  /** Agent paths: CPU seconds (user + system) of both agent processes per GB QEMU sent. */
  agentCpuSecondsPerGB?: number;
  detail?: string;
}

function spec(workload: 'slow' | 'fast', memMiB: number): VmSpec {
  const memBytes = memMiB * MiB;
  const fillBytes = memBytes - 8 * MiB; // everything above the guest's 4 MiB data start, minus slack
  return workload === 'slow'
    ? { name: 'bench-slow', memBytes, vcpus: 1, profile: 'web', fillBytes, wssBytes: 16 * MiB, dirtyRateBytesPerSec: 16 * MiB }
    : { name: 'bench-fast', memBytes, vcpus: 1, profile: 'mmuncher', fillBytes, wssBytes: 64 * MiB };
}


interface QueryMigrate {
  status: string;
  'total-time'?: number;
  downtime?: number;
  'error-desc'?: string;
  ram?: { transferred: number; 'dirty-sync-count': number };
}

/** QEMU's native path: target `migrate-incoming tcp:`, source `migrate tcp:`, raw QMP. */
async function nativeTcp(src: QemuDomain, dst: QemuDomain, params: Record<string, unknown>, deadlineMs: number, tls?: BenchTls): Promise<Omit<QemuBenchRow, 'workload' | 'path' | 'accel' | 'memMiB'>> {
  const port = await freePort();
  if (tls) {
    await src.proc.qmp.execute('object-add', { 'qom-type': 'tls-creds-x509', id: 'tls0', endpoint: 'client', 'verify-peer': true, dir: linkCredentials(path.join(src.proc.dir, 'tls'), 'client', tls.src.paths) });
    await dst.proc.qmp.execute('object-add', { 'qom-type': 'tls-creds-x509', id: 'tls0', endpoint: 'server', 'verify-peer': true, dir: linkCredentials(path.join(dst.proc.dir, 'tls'), 'server', tls.dst.paths) });
    await dst.proc.qmp.execute('object-add', { 'qom-type': 'authz-simple', id: 'authz0', identity: certificateDn(tls.src.cert) });
    await dst.proc.qmp.execute('migrate-set-parameters', { 'tls-creds': 'tls0', 'tls-authz': 'authz0' });
    params = { ...params, 'tls-creds': 'tls0', 'tls-hostname': '127.0.0.1' };
  }
  await dst.proc.qmp.execute('migrate-incoming', { uri: `tcp:127.0.0.1:${port}` });
  if (Object.keys(params).length) await src.proc.qmp.execute('migrate-set-parameters', params);
  const t0 = Date.now();
  await src.proc.qmp.execute('migrate', { uri: `tcp:127.0.0.1:${port}` });
  let cancelled = false;
  let last = { totalTimeMs: 0, transferredBytes: 0, rounds: 0 };
  for (;;) {
    await new Promise((r) => setTimeout(r, 50));
    const q = await src.proc.qmp.execute<QueryMigrate>('query-migrate');
    // a cancelled/failed migration reports no RAM figures: keep the last sample's
    const base = q.ram ? { totalTimeMs: q['total-time'] ?? Date.now() - t0, transferredBytes: q.ram.transferred, rounds: q.ram['dirty-sync-count'] } : { ...last, totalTimeMs: Date.now() - t0 };
    last = base;
    if (q.status === 'completed') return { status: 'completed', qemuDowntimeMs: q.downtime, ...base };
    if (q.status === 'cancelled') return { status: 'cancelled', ...base, detail: `no convergence in ${deadlineMs} ms` };
    if (q.status === 'failed') return { status: 'failed', ...base, detail: q['error-desc'] };
    if (!cancelled && Date.now() - t0 > deadlineMs) {
      cancelled = true;
      await src.proc.qmp.execute('migrate_cancel');
    }
  }
}

/** Certificates of the direct TLS baseline: the source's (client) and the target's (server). */
interface BenchTls { src: TlsFiles; dst: TlsFiles }

/** CPU seconds (user + system) a process has used so far (/proc/<pid>/stat, clock ticks at 100 Hz). */
function cpuSeconds(pid: number | undefined): number {
  if (!pid) return 0;
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / CLOCK_TICKS_PER_SEC;
  } catch {
    return 0;
  }
}
/** USER_HZ on Linux (sysconf(_SC_CLK_TCK)): /proc's CPU times are in these ticks. */
const CLOCK_TICKS_PER_SEC = 100;

/** The agents path: create on a, migrate to b over gRPC (MigrateVm, engine policy at 5 ms), check b runs it. */
async function throughAgents(a: LocalAgent, b: LocalAgent, s: VmSpec, deadlineMs: number, streams = 1): Promise<Omit<QemuBenchRow, 'workload' | 'path' | 'accel' | 'memMiB'>> {
  await a.client.createVm(s);
  try {
    await new Promise((r) => setTimeout(r, 500)); // let the working set settle into its pace
    const t0 = Date.now();
    const cpu0 = cpuSeconds(a.proc.child.pid) + cpuSeconds(b.proc.child.pid);
    const m = await a.client.migrateVm(s.name, b.address, { maxDowntimeMs: 5, timeoutMs: deadlineMs, verify: true, streams }, undefined, '', b.proc.nodeId);
    const cpu = cpuSeconds(a.proc.child.pid) + cpuSeconds(b.proc.child.pid) - cpu0;
    const on = await b.client.getVm(s.name);
    return {
      agentCpuSecondsPerGB: m.pageBytes > 0 ? Math.round((cpu / (m.pageBytes / 1e9)) * 100) / 100 : undefined,
      status: 'completed', downtimeMs: Math.round(m.downtimeMs * 10) / 10, qemuDowntimeMs: m.hypervisorDowntimeMs, blackoutMs: m.guestBlackoutMs, totalTimeMs: Math.round(m.totalMs), transferredBytes: m.bytesSent, rounds: m.rounds,
      action: m.mode === 'postcopy' ? 'postcopy' : m.stopReason === 'stalled' ? 'throttle' : 'none',
      detail: `QEMU sent ${m.pageBytes} B; ${(m.throughputBytesPerSec / 1e9).toFixed(2)} GB/s; MigrateVm ${Date.now() - t0} ms; target beats ${on.heartbeatBeats}`,
    };
  } catch (err) {
    return { status: 'failed', totalTimeMs: 0, transferredBytes: 0, rounds: 0, detail: (err as Error).message };
  } finally {
    await b.client.destroyVm(s.name).catch(() => undefined);
    await a.client.destroyVm(s.name).catch(() => undefined);
  }
}

/** Runs the bench; returns one row per migration. */
export async function runQemuBench(opts: QemuBenchOptions = {}): Promise<QemuBenchRow[]> {
  const memMiB = opts.memMiB ?? 1024;
  const deadlineMs = opts.deadlineMs ?? 30_000;
  const hv = new QemuHypervisor({ binary: opts.binary });
  const accel = await hv.accel();
  const rows: QemuBenchRow[] = [];
  const paths = opts.paths ?? QEMU_BENCH_PATHS;
  // Two agent processes for the `agents` path (each hosts its own QEMUs), started once per run.
  const qemuArgs = ['--hypervisor', 'qemu', ...(opts.binary ? ['--qemu-binary', opts.binary] : [])];
  const agents = paths.includes('agents') ? await startAgents(2, 'qbench', qemuArgs) : [];
  // TLS rows: one throw-away CA; agents qbt-0 -> qbt-1 (native TLS) and qbt-0 -> qbu-0 (tunnel only)
  const needTls = paths.some((p) => TLS_DIRECT_PATHS.has(p) || TLS_AGENT_PATHS.has(p));
  const pki: PkiFixture | undefined = needTls ? await pkiFixture('drover-qbench-') : undefined;
  const tlsAgents: LocalAgent[] = [];
  let benchTls: BenchTls | undefined;
  try {
    if (pki) {
      benchTls = { src: await pki.identity({ role: 'node', name: 'qsrc', hosts: ['127.0.0.1'] }), dst: await pki.identity({ role: 'node', name: 'qdst', hosts: ['127.0.0.1'] }) };
      if (paths.some((p) => TLS_AGENT_PATHS.has(p))) {
        const tls = { dir: pki.dir, client: await pki.identity({ role: 'controller', name: 'qbench' }) };
        tlsAgents.push(...await startAgents(2, 'qbt', qemuArgs, { tls }), ...await startAgents(1, 'qbu', [...qemuArgs, '--qemu-migration', 'tunnel'], { tls }));
      }
    }
    for (const workload of opts.workloads ?? ['slow', 'fast']) {
      for (const path of paths) {
        const s = spec(workload, memMiB);
        if (path === 'agents' || TLS_AGENT_PATHS.has(path)) {
          const [from, to] = path === 'agents' ? agents : path === 'agents-tls' || path === 'agents-tls-multifd' ? [tlsAgents[0], tlsAgents[1]] : [tlsAgents[0], tlsAgents[2]];
          const streams = path === 'agents-tls-multifd' ? BENCH_MULTIFD_CHANNELS : 1;
          const row: QemuBenchRow = { workload, path, accel, memMiB, ...(await throughAgents(from, to, s, deadlineMs, streams)) };
          rows.push(row);
          opts.onRow?.(row);
          continue;
        }
        const src = await hv.createDomain(s);
        const dst = await hv.createIncoming(s);
        await new Promise((r) => setTimeout(r, 500)); // let the working set settle into its pace
        let r: Omit<QemuBenchRow, 'workload' | 'path' | 'accel' | 'memMiB'>;
        try {
          if (path === 'drover-pipe' || path === 'drover-direct') {
            const ep = await hv.startIncoming(dst);
            const bridge = path === 'drover-pipe'
              ? await bridgeUnixSockets(`${ep.socketPath}.bridge`, ep.socketPath)
              : { path: ep.socketPath, bytes: () => 0, close: async () => undefined };
            try {
              const m = await hv.migrateOut(src, { ...ep, socketPath: bridge.path }, { downtimeLimitMs: 5, deadlineMs, converge: convergenceDecider(convergencePolicy(resolvePolicy({}))) });
              r = { status: 'completed', qemuDowntimeMs: m.downtimeMs, totalTimeMs: m.totalTimeMs, transferredBytes: m.transferredBytes, rounds: m.rounds, action: m.action, detail: m.reason };
            } catch (err) {
              r = { status: 'failed', totalTimeMs: 0, transferredBytes: bridge.bytes(), rounds: 0, detail: (err as Error).message };
            } finally {
              await bridge.close();
            }
          } else {
            const params: Record<string, unknown> =
              path === 'tcp-default' ? {} : path === 'tcp-5ms' ? { 'downtime-limit': 5 } : { 'downtime-limit': 5, 'max-bandwidth': 1e12 };
            if (path === 'tcp-tls-multifd') {
              for (const d of [src, dst]) {
                await d.proc.qmp.execute('migrate-set-capabilities', { capabilities: [{ capability: 'multifd', state: true }] });
                await d.proc.qmp.execute('migrate-set-parameters', { 'multifd-channels': BENCH_MULTIFD_CHANNELS });
              }
            }
            r = await nativeTcp(src, dst, params, deadlineMs, TLS_DIRECT_PATHS.has(path) ? benchTls : undefined);
          }
          if (r.status === 'completed') {
            // a target that never beats is a finding of this row, not the end of the run
            await dst.waitBeats(0, 30_000).then(
              () => {
                r.blackoutMs = Math.round(dst.firstBeatMs() - src.heartbeat().lastBeatMs);
                const d = stopToResumeMs(src, dst.resumedAtMs);
                if (d !== undefined) r.downtimeMs = Math.round(d * 10) / 10;
              },
              (err) => { r.detail = `${r.detail ? `${r.detail}; ` : ''}${(err as Error).message} (QEMU status ${dst.state()})`; },
            );
          }
        } finally {
          await src.destroy();
          await dst.destroy();
        }
        const row: QemuBenchRow = { workload, path, accel, memMiB, ...r };
        rows.push(row);
        opts.onRow?.(row);
      }
    }
  } finally {
    await hv.close();
    await stopAgents([...agents, ...tlsAgents]);
    pki?.cleanup();
  }
  compareWithBaseline(rows);
  return rows;
}

/** Sets the TLS rows' ratios to the tcp-tls row of the same workload (when both completed). */
function compareWithBaseline(rows: QemuBenchRow[]): void {
  for (const r of rows) {
    const base = rows.find((b) => b.workload === r.workload && b.path === TLS_BASELINE && b.status === 'completed');
    if (!base || r.status !== 'completed' || !(TLS_DIRECT_PATHS.has(r.path) || TLS_AGENT_PATHS.has(r.path))) continue;
    r.totalVsBaseline = Math.round((r.totalTimeMs / base.totalTimeMs) * 100) / 100;
    if (r.downtimeMs !== undefined && base.downtimeMs) r.downtimeVsBaseline = Math.round((r.downtimeMs / base.downtimeMs) * 100) / 100;
  }
}

/** Formats rows as a table. */
export function formatQemuBench(rows: QemuBenchRow[]): string {
  const head = ['workload', 'path', 'status', 'downtime', 'QEMU says', 'blackout', 'total', 'sent', 'rounds', 'action', 'total/tcp-tls', 'downtime/tcp-tls', 'agent CPU s/GB'];
  const body = rows.map((r) => [
    `${r.memMiB} MiB ${r.workload}`, r.path, r.status,
    r.downtimeMs !== undefined ? `${r.downtimeMs} ms` : '-',
    r.qemuDowntimeMs !== undefined ? `${r.qemuDowntimeMs} ms` : '-',
    r.blackoutMs !== undefined ? `${r.blackoutMs} ms` : '-',
    `${(r.totalTimeMs / 1000).toFixed(2)} s`, `${(r.transferredBytes / 1e9).toFixed(2)} GB`, String(r.rounds), r.action ?? '-',
    r.totalVsBaseline !== undefined ? `${r.totalVsBaseline}x` : '-', r.downtimeVsBaseline !== undefined ? `${r.downtimeVsBaseline}x` : '-',
    r.agentCpuSecondsPerGB !== undefined ? String(r.agentCpuSecondsPerGB) : '-',
  ]);
  const w = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(w[i])).join('  ');
  return [line(head), line(w.map((n) => '-'.repeat(n))), ...body.map(line)].join('\n');
}

if (require.main === module) {
  const argv = process.argv.slice(2);
  const val = (k: string) => { const i = argv.indexOf(k); return i >= 0 ? argv[i + 1] : undefined; };
  const json = argv.includes('--json');
  const only = val('--only') as 'slow' | 'fast' | undefined;
  const paths = val('--paths')?.split(',') as QemuBenchPath[] | undefined;
  runQemuBench({
    memMiB: val('--mem') ? Number(val('--mem')) : undefined,
    deadlineMs: val('--deadline') ? Number(val('--deadline')) : undefined,
    workloads: only ? [only] : undefined,
    paths,
    onRow: json ? (row) => console.log(JSON.stringify(row)) : (row) => console.error(`measured ${row.workload}/${row.path}: ${row.status}`),
  }).then((rows) => {
    if (!json) console.log(formatQemuBench(rows));
  }).catch((err) => {
    console.error(err);
    process.exit(1);
  });
}
