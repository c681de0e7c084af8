/**
 * The cluster commands of `drover` (etcd from --etcd or DROVER_ETCD): up, demo, migrator,
 * scheduler, vm create|list|show|destroy, migrate VM --to NODE, migrations list|watch|cancel,
 * node list|cordon|uncordon|drain, rebalance. Bad input and impossible requests exit 2 with one
 * line and write nothing (every change is one etcd transaction). Each command group has its
 * own file: it parses, calls the operations module (cluster/ops), prints.
 */
import { UsageError } from '../../args';
import { demoCommand } from './demo';
import { migrateCommand } from './migrate';
import { migrationsCommand } from './migrations';
import { nodeCommand } from './node';
import { rebalanceCommand } from './rebalance';
import { serviceCommand } from './service';
import { upCommand } from './up';
import { vmCommand } from './vm';

/** The cluster commands by name. */
const COMMANDS: Record<string, (argv: string[]) => Promise<number>> = {
  up: upCommand,
  demo: demoCommand,
  migrator: (argv) => serviceCommand('migrator', argv),
  scheduler: (argv) => serviceCommand('scheduler', argv),
  vm: vmCommand,
  migrate: migrateCommand,
  migrations: migrationsCommand,
  node: nodeCommand,
  rebalance: rebalanceCommand,
};

/** Runs a cluster command; returns the exit code. */
export async function runClusterCommand(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  const run = cmd !== undefined && Object.hasOwn(COMMANDS, cmd) ? COMMANDS[cmd] : undefined;
  if (!run) throw new UsageError(`unknown cluster command "${cmd ?? ''}"`);
  return run(rest);
}
