/**
 * Process settings of a node agent, whose main thread moves guest memory (1 MiB frames, socket
 * reads, gRPC messages) at hundreds of MB/s. Every launcher starts agents with them
 * (`tunedNodeArgs`, `tunedEnv`); an agent started any other way (an operator's shell, a systemd
 * unit) re-executes itself with them once (`runTuned`), so no launcher can forget them.
 */
import { spawn } from 'node:child_process';
import * as os from 'node:os';
import * as path from 'node:path';
import { BULK_MALLOC_TUNABLES, TUNED_ENV } from '../../lib/malloc-tuning';

/** The compiled CLI entry (dist/cli/main.js). */
export const CLI_MAIN = path.resolve(__dirname, '..', '..', 'cli', 'main.js');

export { BULK_MALLOC_TUNABLES } from '../../lib/malloc-tuning';

/**
 * V8 flags of an agent. A migration allocates ~3 buffers per MiB moved (socket read, frame,
 * gRPC framing); V8 counts that external memory against an old-generation limit of about twice
 * the live heap (~10 MB here), so a stream of buffers started a full mark-compact every 60-100 ms
 * (113 per 1 GiB QEMU migration, ~40% of the agent's CPU). A 256 MiB floor under that limit
 * leaves the short-lived buffers to the young-generation collector: 0 full collections per
 * migration, tunnel throughput 150 -> 204 MB/s on the 2-core test machine. The flag cannot be
 * set from NODE_OPTIONS or at run time, hence the re-exec.
 */
export const DATA_PLANE_NODE_FLAGS: readonly string[] = ['--initial-old-space-size=256'];


/**
 * `DROVER_CPU_PROF=DIR`: every process started with tunedNodeArgs writes a V8 CPU profile of
 * each of its threads into DIR when it exits (node refuses --cpu-prof in NODE_OPTIONS).
 */
export const CPU_PROF_ENV = 'DROVER_CPU_PROF';

/** Node's profiling flags when CPU_PROF_ENV names a folder, else none. */
function profilingFlags(): string[] {
  const dir = process.env[CPU_PROF_ENV];
  return dir ? ['--cpu-prof', `--cpu-prof-dir=${dir}`] : [];
}

/** Node arguments that run `drover ARGS` with the data-plane flags. */
export function tunedNodeArgs(args: string[]): string[] {
  return [...DATA_PLANE_NODE_FLAGS, ...profilingFlags(), '-e', `require(${JSON.stringify(CLI_MAIN)}).main(process.argv.slice(1))`, ...args];
}

/** Environment for a tuned agent (on top of `base`). */
export function tunedEnv(base: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  return { ...base, GLIBC_TUNABLES: base.GLIBC_TUNABLES || BULK_MALLOC_TUNABLES, [TUNED_ENV]: '1' };
}

/** Whether this process runs with the data-plane settings. */
export function isTuned(): boolean {
  return process.env[TUNED_ENV] === '1' || DATA_PLANE_NODE_FLAGS.every((f) => process.execArgv.includes(f));
}

/**
 * Runs `drover ARGS` again as a tuned child and mirrors it: SIGINT/SIGTERM/SIGHUP are passed on,
 * the child's exit code is returned, and the child exits when this process dies (IPC channel).
 */
export function runTuned(args: string[]): Promise<number> {
  const child = spawn(process.execPath, tunedNodeArgs(args), { stdio: ['inherit', 'inherit', 'inherit', 'ipc'], env: tunedEnv() });
  const forward = (sig: NodeJS.Signals) => () => { child.kill(sig); };
  const handlers = (['SIGINT', 'SIGTERM', 'SIGHUP'] as const).map((s) => [s, forward(s)] as const);
  for (const [s, h] of handlers) process.on(s, h);
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code, signal) => {
      for (const [s, h] of handlers) process.off(s, h);
      resolve(code ?? 128 + (signal ? os.constants.signals[signal] : 15));
    });
  });
}

/** In a child started by `runTuned`: exit when the parent is gone (it was killed). */
export function exitWithParent(): void {
  if (process.env[TUNED_ENV] === '1' && typeof process.send === 'function') {
    process.on('disconnect', () => process.exit(1));
    process.channel?.unref(); // the channel alone does not keep the agent alive once it stopped
  }
}
