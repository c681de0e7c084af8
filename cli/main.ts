/**
 * The `drover` command: dispatches to subcommands. Errors print one line on stderr; bad input
 * and unreachable services exit 2, failed operations exit 1 (cli/exit.ts).
 */
import { DroverError } from '../lib/errors';
import { exitCodeFor } from './exit';
import { UsageError } from './args';

/** Top-level usage. */
export const USAGE = `usage: drover <command> [flags]

node and VM commands (talk to one agent; TLS: --ca FILE --cert FILE --key FILE, or --insecure):
  agent --listen HOST:PORT --node-id ID       run a node agent
  vm create|list|show|destroy|verify --agent ADDR ...
  migrate VM --from ADDR --to ADDR [--to-node NAME] [--max-downtime 5ms] [--bandwidth 1Gbit] [--json]
  analyze VM --agent ADDR [--bandwidth 1Gbit] [--max-downtime 5ms] [--window 5s] [--json]   (without --agent: through the cluster, DROVER_ETCD)
  bench [--profile all|idle|web|db|mmuncher] [--mem 1GiB] [--warmup 2s] [--json] [--baselines] [--tls]

cluster commands (etcd: --etcd URL or DROVER_ETCD):
  up --nodes N --dir DIR | demo | migrator | scheduler
  vm create NAME --mem 1GiB --profile web [--node N] | vm list [--json]
  migrate VM --to NODE [--wait] | migrations list|watch|cancel [--json]
  node list|cordon|uncordon|drain [--wait] | rebalance [--dry-run]`;

async function run(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  const has = (f: string) => rest.some((a) => a === `--${f}` || a.startsWith(`--${f}=`));
  switch (cmd) {
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      console.log(USAGE);
      return cmd === undefined ? 2 : 0;
    case 'agent':
      return (await import('./commands/agent')).agentCommand(rest);
    case 'bench':
      return (await import('./commands/bench')).benchCommand(rest);
    case 'pki': return (await import('./commands/pki')).pkiCommand(rest);
    case 'analyze': return (await import('./commands/analyze')).analyzeCommand(rest);
    case 'vm':
      if (has('agent')) return (await import('./commands/vm')).vmCommand(rest);
      return clusterCommand(argv);
    case 'migrate':
      if (has('from')) return (await import('./commands/migrate')).migrateDirect(rest);
      return clusterCommand(argv);
    case 'up': case 'demo': case 'migrator': case 'scheduler': case 'node': case 'rebalance': case 'migrations':
      return clusterCommand(argv);
    default:
      throw new UsageError(`unknown command "${cmd}"\n${USAGE}`);
  }
}

async function clusterCommand(argv: string[]): Promise<number> {
  let mod: { runClusterCommand(argv: string[]): Promise<number> };
  try {
    mod = await import('./commands/cluster');
  } catch (err) {
    throw new DroverError('UNIMPLEMENTED', `cluster commands are not available in this build: ${(err as Error).message}`);
  }
  return mod.runClusterCommand(argv);
}

/** Entry point used by bin/drover. */
export function main(argv: string[]): void {
  run(argv).then(
    (code) => {
      process.exitCode = code;
    },
    (err) => {
      const e = err instanceof DroverError ? err : DroverError.from(err);
      process.stderr.write(`drover: ${e.message}\n`);
      if (process.env.DROVER_DEBUG) process.stderr.write(`${(err as Error).stack}\n`);
      process.exitCode = exitCodeFor(e);
    },
  );
}
