/**
 * `npm run bench`: every figure of the project in one run on this machine, each beside its
 * baseline measured in the same run (absolute times on a shared 2-core machine are noisy;
 * the ratios are what to compare). Flags: --quick (256 MiB VMs), --qemu (adds the QEMU bench),
 * --json (one JSON object per line).
 */
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import * as fs from 'node:fs';

const json = process.argv.includes('--json');
const quick = process.argv.includes('--quick');
const qemu = process.argv.includes('--qemu');
const BIN = path.resolve(__dirname, '..', '..', 'bin', 'drover');

function section(title: string): void {
  if (!json) console.log(`\n== ${title} ==`);
}

function run(args: string[], env: NodeJS.ProcessEnv = {}): number {
  const r = spawnSync(process.execPath, args, { stdio: 'inherit', env: { ...process.env, ...env } });
  return r.status ?? 1;
}

/** Fresh-memory first-touch write rate: bounds round 1 into an empty target on this host. */
function firstTouch(): number {
  const sab = new SharedArrayBuffer(256 * 2 ** 20);
  const b = Buffer.from(sab);
  const t = performance.now();
  b.fill(1);
  return (256 * 2 ** 20) / ((performance.now() - t) / 1000);
}

async function main(): Promise<void> {
  let failed = 0;
  section('live migration, sim hypervisor, two agent processes on loopback, with baselines');
  const mem = quick ? '256MiB' : '1GiB';
  failed += run([BIN, 'bench', '--profile', 'all', '--mem', mem, '--warmup', '2s', '--baselines', ...(json ? ['--json'] : [])], { GLIBC_TUNABLES: 'glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=536870912' }) === 0 ? 0 : 1;
  section('data plane: sim 1 GiB idle VM, 900 MiB filled, mutual TLS, over 1, 2 and 4 streams, with baselines');
  failed += run([BIN, 'bench', '--profile', 'idle', '--mem', mem, '--fill', quick ? '230MiB' : '900MiB', '--warmup', '1s', '--tls-only', '--streams', '1,2,4', '--baselines', ...(json ? ['--json'] : [])], { GLIBC_TUNABLES: 'glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=536870912' }) === 0 ? 0 : 1;
  const ft = firstTouch();
  if (json) console.log(JSON.stringify({ baseline: 'first-touch write of fresh memory', bytesPerSec: ft }));
  else console.log(`  first-touch write of fresh memory  ${(ft / 1e9).toFixed(2)} GB/s  (bounds how fast an empty target can take pages)`);

  for (const [title, file, extra] of [
    ['rebalance planner, 1,000 nodes and 20,000 VMs', 'planner-bench.js', []],
    ['cost model: predicted vs actual per profile, uncapped and at 1 Gbit/s', 'analyze-bench.js', quick ? ['--mem', '128MiB'] : []],
    ['convergence: post-copy (the policy) vs pre-copy only, mmuncher loopback and at 1 Gbit/s, db at 200 MiB/s, with the aims', 'postcopy-bench.js', quick ? ['--quick'] : []],
    ['NBD client vs qemu-img bench, same export', 'nbd-bench.js', []],
    // Namespaces need root; elsewhere the section is left out (and says so).
    ...(process.getuid?.() === 0 ? [['compression on a 1 Gbit/s link (two network-namespace hosts, tc tbf): never / auto / always', 'link-bench.js', quick ? ['--mem', '256MiB', '--fill', '200MiB'] : []]] : []),
    ...(qemu ? [['QEMU: through Drover vs QEMU direct TCP', 'qemu-bench.js', []]] : []),
  ] as [string, string, string[]][]) {
    const f = path.join(__dirname, file);
    if (!fs.existsSync(f)) continue;
    section(title);
    failed += run([f, ...extra, ...(json ? ['--json'] : [])]) === 0 ? 0 : 1;
  }
  if (process.getuid?.() !== 0 && !json) console.log('\n(compression on a 1 Gbit/s link: left out, it needs root for network namespaces)');
  process.exitCode = failed ? 1 : 0;
}

void main();
