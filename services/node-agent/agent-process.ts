/**
 * Starts a node agent as a separate process (`drover agent`) on a free loopback port and
 * learns its address from the line it prints. Used by `drover bench`, `drover up` and tests.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { DroverError } from '../../lib/errors';
import { tunedEnv, tunedNodeArgs } from './process-tuning';

export { BULK_MALLOC_TUNABLES, CLI_MAIN } from './process-tuning';

/** A running agent process. */
export interface AgentProcess {
  nodeId: string;
  address: string;
  /** HOST:PORT of its bulk channel listener (absent with --bulk off). */
  bulkAddress?: string;
  child: ChildProcess;
  /** Graceful stop (SIGTERM), then SIGKILL after `graceMs`. */
  stop(graceMs?: number): Promise<void>;
  /** Kills the process at once (fault injection). */
  kill(): void;
  /** Last lines the agent wrote on stderr (for error messages). */
  stderrTail(): string;
}

/** Runs `drover <args>` as a child process with node, with the agents' data-plane settings. */
export function spawnDrover(args: string[], env: NodeJS.ProcessEnv = {}): ChildProcess {
  return spawn(process.execPath, tunedNodeArgs(args), {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: tunedEnv({ ...process.env, DROVER_LOG_JSON: '1', ...env }),
  });
}

/** True when `args` or the environment give the agent certificates. */
function hasTlsFlags(args: string[], env: NodeJS.ProcessEnv): boolean {
  return args.some((a) => a === '--ca' || a === '--cert' || a === '--key' || a === '--insecure') || !!(env.DROVER_CA ?? process.env.DROVER_CA);
}

/** Starts an agent (plain text with --insecure unless `extraArgs` give certificates) on `listen` (default: a free loopback port); resolves once it listens. */
export function startAgent(nodeId: string, extraArgs: string[] = [], env: NodeJS.ProcessEnv = {}, listen = '127.0.0.1:0'): Promise<AgentProcess> {
  const tls = hasTlsFlags(extraArgs, env) ? [] : ['--insecure'];
  const child = spawnDrover(['agent', '--listen', listen, '--node-id', nodeId, ...tls, ...extraArgs], env);
  let tail = '';
  child.stderr!.on('data', (b: Buffer) => {
    tail = (tail + b.toString()).slice(-4000);
  });
  return new Promise((resolve, reject) => {
    let out = '';
    const onData = (b: Buffer) => {
      out += b.toString();
      const m = /listening on (\S+)/.exec(out);
      if (!m) return;
      child.stdout!.off('data', onData);
      child.stdout!.resume();
      const exited = new Promise<void>((r) => child.once('exit', () => r()));
      const bulk = /bulk channel on (\S+)/.exec(out);
      resolve({
        nodeId, address: m[1], child, ...(bulk ? { bulkAddress: bulk[1] } : {}),
        stop: async (graceMs = 5000) => {
          if (child.exitCode !== null || child.signalCode !== null) return;
          child.kill('SIGTERM');
          const t = setTimeout(() => child.kill('SIGKILL'), graceMs);
          await exited;
          clearTimeout(t);
        },
        kill: () => { child.kill('SIGKILL'); },
        stderrTail: () => tail,
      });
    };
    child.stdout!.on('data', onData);
    child.once('exit', (code) => reject(new DroverError('UNAVAILABLE', `agent ${nodeId} exited with ${code} before listening: ${tail.trim().split('\n').slice(-3).join(' | ')}`)));
  });
}
