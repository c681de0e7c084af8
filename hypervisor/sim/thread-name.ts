/**
 * Names the calling thread for the kernel (/proc/PID/task/TID/comm, `top -H`, `perf`): the sim's
 * guest threads run inside the agent process, and their names let a meter tell guest CPU from
 * the agent's own (bench's CPU per GB counts the agent without its guests' vCPUs).
 */
import * as fs from 'node:fs';

/** Prefix of a sim vCPU thread's name. */
export const VCPU_THREAD_PREFIX = 'drover-vcpu';
/** The kernel keeps at most this many bytes of a thread's name. */
const COMM_MAX_BYTES = 15;

/** Sets this thread's kernel name to `name` (cut to 15 bytes); best effort: a host without /proc keeps the old name. */
export function nameThisThread(name: string): void {
  try {
    fs.writeFileSync('/proc/thread-self/comm', name.slice(0, COMM_MAX_BYTES));
  } catch {
    // No /proc (or not Linux): the name is only for meters and tools.
  }
}
