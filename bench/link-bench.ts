/**
 * Compression where the link is the bottleneck: two hosts as network namespaces on one bridge,
 * each link shaped with `tc tbf` to 1 Gbit/s (test/multihost/topology.ts), a `drover agent` in
 * each, and `drover migrate` of the same VM with page-batch compression never / auto / always,
 * one after the other in one run. Prints total time, bytes on the wire, downtime and how many
 * batches went LZ4-encoded (`--json`: one object per migration). Needs root (namespaces).
 *
 *   node dist/bench/link-bench.js [--profile web,idle] [--mem 512MiB] [--fill 400MiB] [--modes never,auto,always] [--json]
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { parseArgs } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { checkPrivileges, createTopology, destroyNamespaces, type HostNet } from '../test/multihost/topology';
import { droverArgv } from '../test/multihost/processes';
import { formatBytes, formatMs, formatRate } from '../lib/units';
import type { MigrationResult } from '../migration/types';

/** Agent port inside each host namespace. */
const AGENT_PORT = 7000;
/** Guest warm-up before each migration (the working set settles). */
const WARMUP_MS = 1500;

/** Runs `drover ARGS` inside namespace `ns`; resolves with stdout (rejects with stderr on a non-zero exit). */
function droverIn(ns: string, args: string[], timeoutMs = 300_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn('ip', ['netns', 'exec', ns, ...droverArgv([...args, '--insecure'])], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '', err = '';
    child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { err += d.toString(); });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('exit', (code) => { clearTimeout(timer); if (code === 0) resolve(out); else reject(new Error(`drover ${args[0]} ${args[1] ?? ''}: exit ${code}: ${err.trim()}`)); });
  });
}

/** Starts an agent inside host `h`'s namespace; resolves once it answers. */
async function startAgent(h: HostNet): Promise<ChildProcess> {
  const child = spawn('ip', ['netns', 'exec', h.ns, ...droverArgv(['agent', '--listen', `${h.ip}:${AGENT_PORT}`, '--node-id', h.name, '--insecure'])], { stdio: 'ignore' });
  for (let i = 0; i < 100; i++) {
    try { await droverIn(h.ns, ['vm', 'list', '--agent', `${h.ip}:${AGENT_PORT}`], 10_000); return child; } catch { await sleep(200); }
  }
  child.kill('SIGKILL');
  throw new Error(`agent on ${h.name} did not come up`);
}

/** One row of the bench. */
interface Row { profile: string; mode: string; r: MigrationResult }

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { profile: { type: 'string', default: 'web,idle' }, mem: { type: 'string', default: '512MiB' }, fill: { type: 'string', default: '400MiB' }, modes: { type: 'string', default: 'never,auto,always' }, json: { type: 'boolean' } } });
  checkPrivileges();
  const t = createTopology(2);
  const [h1, h2] = t.hosts;
  const agents: ChildProcess[] = [];
  const rows: Row[] = [];
  try {
    agents.push(await startAgent(h1), await startAgent(h2));
    const from = `${h1.ip}:${AGENT_PORT}`, to = `${h2.ip}:${AGENT_PORT}`;
    for (const profile of values.profile!.split(',')) {
      for (const mode of values.modes!.split(',')) {
        const vm = `lb-${profile}-${mode}`;
        await droverIn(h1.ns, ['vm', 'create', vm, '--agent', from, '--mem', values.mem!, '--fill', values.fill!, '--profile', profile]);
        await sleep(WARMUP_MS);
        const out = await droverIn(h1.ns, ['migrate', vm, '--from', from, '--to', to, '--compress', mode, '--verify', '--json']);
        const r = JSON.parse(out.trim().split('\n').pop()!) as MigrationResult;
        rows.push({ profile, mode, r });
        if (values.json) console.log(JSON.stringify({ link: "1gbit", compress: mode, ...r }));
        else console.error(`${vm}: ${formatMs(r.totalMs)}, ${formatBytes(r.bytesSent)} on the wire`);
        await droverIn(h2.ns, ['vm', 'destroy', vm, '--agent', to]).catch(() => undefined);
      }
    }
  } finally {
    for (const a of agents) a.kill('SIGTERM');
    await sleep(500);
    destroyNamespaces(process.pid);
  }
  if (!values.json) console.log(table(rows));
}

/** The table: per profile and mode, total time, wire bytes, downtime, LZ4 batches, and the ratio to `never` of the same profile. */
function table(rows: Row[]): string {
  const lines = ['1 Gbit/s link (tc tbf), one run', 'profile   compress  total     vs never  on the wire  rate         downtime  lz4 batches (ratio)  verified'];
  for (const { profile, mode, r } of rows) {
    const base = rows.find((x) => x.profile === profile && x.mode === 'never')?.r;
    const lz4 = r.compressedBatches ? `${r.compressedBatches} (${((r.compressedBytes ?? 0) / (r.compressedPageBytes || 1)).toFixed(2)})` : '-';
    lines.push([profile.padEnd(9), mode.padEnd(9), formatMs(r.totalMs).padEnd(9), (base ? `${(r.totalMs / base.totalMs).toFixed(2)}x` : '-').padEnd(9),
      formatBytes(r.bytesSent).padEnd(12), formatRate(r.throughputBytesPerSec).padEnd(12), formatMs(r.downtimeMs).padEnd(9), lz4.padEnd(20), r.verified ? 'yes' : 'NO'].join(' '));
  }
  return lines.join('\n');
}

main().catch((err: unknown) => {
  console.error(`link-bench: ${(err as Error).message}`);
  process.exitCode = 1;
});
