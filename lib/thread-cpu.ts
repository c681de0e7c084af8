/**
 * This process's CPU time without some of its threads: the sim's guest vCPUs run as threads of
 * the agent (named by hypervisor/sim/thread-name.ts), and a meter of the agent's own work (the
 * compressor's CPU share, precopy/batch-compressor.ts) must not count a busy guest as the agent's.
 */
import * as fs from 'node:fs';

/** Clock ticks per second of /proc's utime and stime (USER_HZ, 100 on Linux). */
const TICKS_PER_SEC = 100;

/** utime + stime of one /proc stat file (a process's or a thread's), ms; NaN when it cannot be read (it ended, or no /proc). */
export function statCpuMs(file: string): number {
  try {
    const stat = fs.readFileSync(file, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' '); // fields 14, 15 of stat(5)
    return ((Number(f[11]) + Number(f[12])) * 1000) / TICKS_PER_SEC;
  } catch {
    return NaN;
  }
}

/**
 * CPU ms this process used so far (process.cpuUsage), less that of its threads whose kernel name
 * starts with `prefix` (/proc/self/task/TID/stat, 10 ms resolution). A thread that ended leaves
 * /proc but not cpuUsage, so its time counts from then on (the compressor clamps its share).
 * Without /proc: the whole process.
 */
export function processCpuMsWithout(prefix: string): number {
  const u = process.cpuUsage();
  let total = (u.user + u.system) / 1000;
  let tids: string[];
  try { tids = fs.readdirSync('/proc/self/task'); } catch { return total; }
  for (const tid of tids) {
    let comm: string;
    try { comm = fs.readFileSync(`/proc/self/task/${tid}/comm`, 'utf8'); } catch { continue; }
    if (comm.startsWith(prefix)) total -= statCpuMs(`/proc/self/task/${tid}/stat`) || 0;
  }
  return Math.max(0, total);
}
