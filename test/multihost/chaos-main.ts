/**
 * `npm run chaos -- --migrations N --faults F --seed S [--hosts 3-5] [--kinds k1,k2] [--json]`:
 * builds the hosts as network namespaces, runs a chaos campaign inside them and removes every
 * namespace, veth and bridge it made when it stops (also on Ctrl-C or failure). Exit 0 when
 * every invariant held, 1 when one was violated, 2 for bad flags.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import { parseArgs } from 'node:util';
import { checkPrivileges, createTopology, destroyNamespaces, removeLeftovers, runDir, type Topology } from './topology';
import { parseKinds } from './faults';
import { Campaign, type CampaignOptions } from './campaign';

const USAGE = 'usage: npm run chaos -- --migrations N --faults F --seed S [--hosts 3-5] [--kinds k1,k2] [--stuck-ms 90000] [--max-paused-ms 5000] [--settle-ms 40000] [--vms 6] [--direct-vms 2] [--batch 1] [--agent-restart-min-ms 1000] [--json]';

/** Parses the flags; throws with a one-line message on bad input. */
export function parseFlags(argv: string[]): CampaignOptions & { hosts: number } {
  const { values } = parseArgs({ args: argv, strict: true, allowPositionals: false, options: {
    migrations: { type: 'string' }, faults: { type: 'string' }, seed: { type: 'string' }, hosts: { type: 'string' },
    kinds: { type: 'string' }, json: { type: 'boolean' }, 'stuck-ms': { type: 'string' }, 'max-paused-ms': { type: 'string' },
    'settle-ms': { type: 'string' }, vms: { type: 'string' }, 'agent-restart-min-ms': { type: 'string' }, 'direct-vms': { type: 'string' }, batch: { type: 'string' }, inside: { type: 'boolean' },
  } });
  const num = (k: keyof typeof values, def: number | undefined, lo: number, hi: number): number => {
    const v = values[k];
    if (v === undefined) { if (def === undefined) throw new Error(`--${k} is required (${USAGE})`); return def; }
    if (typeof v !== 'string' || !/^\d+$/.test(v) || Number(v) < lo || Number(v) > hi) throw new Error(`--${k} must be an integer ${lo}..${hi}`);
    return Number(v);
  };
  return {
    migrations: num('migrations', undefined, 1, 10_000), faults: num('faults', undefined, 0, 10_000), seed: num('seed', 1, 0, 2 ** 32 - 1),
    hosts: num('hosts', 3, 3, 5), kinds: parseKinds(values.kinds as string | undefined), json: values.json === true,
    stuckMs: num('stuck-ms', 90_000, 1000, 3_600_000), maxPausedMs: num('max-paused-ms', 5000, 1, 3_600_000),
    settleMs: num('settle-ms', 40_000, 0, 3_600_000), dir: '', vms: num('vms', 6, 1, 40), directVms: num('direct-vms', 2, 0, 20), batch: num('batch', 1, 1, 10),
    agentRestartMinMs: num('agent-restart-min-ms', 1000, 0, 600_000),
  };
}

/** Inside the control namespace: runs the campaign and prints the result. */
async function inside(opts: CampaignOptions, topo: Topology): Promise<number> {
  const c = new Campaign(topo, opts);
  const s = await c.run();
  const bad = c.violated() || s.directLost > s.directLostExplained;
  if (!opts.json) {
    process.stdout.write(`chaos: ${s.migrations} migrations (${s.migrationsFailed} failed), ${s.faults} faults, seed ${s.seed}: ${bad ? 'INVARIANTS VIOLATED' : 'all invariants held'}\n`);
    for (const v of s.violations) process.stdout.write(`  ${v}\n`);
  }
  process.stdout.write(`${JSON.stringify(s)}\n`);
  return bad ? 1 : 0;
}

/** In the root namespace: builds the network, runs `inside` in the control namespace, cleans up. */
async function outside(argv: string[], hosts: number): Promise<number> {
  checkPrivileges();
  const gone = removeLeftovers();
  if (gone.length) process.stderr.write(`[chaos] removed leftovers of dead runs: ${gone.join(' ')}\n`);
  const dir = runDir(process.pid);
  let cleaned = false;
  let keepLogs = Boolean(process.env.CHAOS_KEEP_LOGS);
  const cleanup = () => {
    if (cleaned) return;
    cleaned = true;
    destroyNamespaces(process.pid);
    if (!keepLogs) fs.rmSync(dir, { recursive: true, force: true });
  };
  process.once('exit', cleanup);
  const topo = createTopology(hosts);
  fs.mkdirSync(dir, { recursive: true });
  const child = spawn('ip', ['netns', 'exec', topo.ctl.ns, process.execPath, __filename, ...argv, '--inside'], {
    stdio: 'inherit', env: { ...process.env, CHAOS_TOPOLOGY: JSON.stringify(topo), CHAOS_DIR: dir },
  });
  const forward = (sig: NodeJS.Signals) => () => { child.kill(sig); setTimeout(() => { cleanup(); process.exit(130); }, 8000).unref(); };
  process.on('SIGINT', forward('SIGINT'));
  process.on('SIGTERM', forward('SIGTERM'));
  const code = await new Promise<number>((r) => child.once('exit', (c, s) => r(c ?? (s ? 1 : 0))));
  if (code === 1) keepLogs = true; // the evidence of a violation or failure stays (namespaces do not); not after Ctrl-C
  if (keepLogs) process.stderr.write(`[chaos] logs kept in ${dir}\n`);
  cleanup();
  return code;
}

function main(): void {
  const argv = process.argv.slice(2);
  let opts: ReturnType<typeof parseFlags>;
  try { opts = parseFlags(argv); } catch (e) {
    process.stderr.write(`chaos: ${(e as Error).message.split('\n')[0]}\n`);
    process.exit(2);
  }
  const run = argv.includes('--inside')
    ? (() => {
      process.on('SIGINT', () => process.exit(130)); // the parent removes the namespaces and their processes
      return inside({ ...opts, dir: process.env.CHAOS_DIR! }, JSON.parse(process.env.CHAOS_TOPOLOGY!) as Topology);
    })()
    : outside(argv, opts.hosts);
  run.then((code) => process.exit(code), (e) => {
    process.stderr.write(`chaos: ${(e as Error).message}\n`);
    process.exit(1);
  });
}

// `node --test dist/` loads every file under a test/ folder as a test file (NODE_TEST_CONTEXT is
// set then): this entry point runs only when started as a program (npm run chaos, chaos.test.ts).
if (require.main === module && !process.env.NODE_TEST_CONTEXT) main();
