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
 * How long a scan of /proc/self/task for the named threads is trusted: a thread names itself
 * after it started (hypervisor/sim/thread-name.ts), so a scan taken as it appeared may have
 * missed it; the meter's readings (compressor runs of 16 batches) are far apart against this.
 */
export const THREAD_RESCAN_MS = 500;

/** The threads of one name prefix found by the latest scan, and what the scan saw. */
interface ThreadScan { tids: string[]; atMs: number; threads: number }

const scans = new Map<string, ThreadScan>();
let scanCount = 0;

/** Threads of this process (field 20 of /proc/self/stat); NaN without /proc. */
function threadCount(): number {
  try {
    const stat = fs.readFileSync('/proc/self/stat', 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[17]);
  } catch {
    return NaN;
  }
}

/** Scans /proc/self/task for threads whose kernel name starts with `prefix`; undefined without /proc. */
function scan(prefix: string, threads: number): ThreadScan | undefined {
  let all: string[];
  try { all = fs.readdirSync('/proc/self/task'); } catch { return undefined; }
  scanCount++;
  const tids: string[] = [];
  for (const tid of all) {
    let comm: string;
    try { comm = fs.readFileSync(`/proc/self/task/${tid}/comm`, 'utf8'); } catch { continue; }
    if (comm.startsWith(prefix)) tids.push(tid);
  }
  return { tids, atMs: performance.now(), threads };
}

/** How many times processCpuMsWithout scanned the task list (tests). */
export function threadScans(): number {
  return scanCount;
}

/**
 * CPU ms this process used so far (process.cpuUsage), less that of its threads whose kernel name
 * starts with `prefix` (/proc/self/task/TID/stat, 10 ms resolution). The threads are found by a
 * scan of /proc/self/task that is taken again only when the process's thread count changed, a
 * thread found left, or THREAD_RESCAN_MS passed (on the page path this runs once per 16 batches;
 * a scan reads every thread's name). A thread that ended leaves /proc but not cpuUsage, so its
 * time counts from then on (the compressor clamps its share). Without /proc: the whole process.
 */
export function processCpuMsWithout(prefix: string): number {
  const u = process.cpuUsage();
  const total = (u.user + u.system) / 1000;
  const threads = threadCount();
  let s = scans.get(prefix);
  if (!s || s.threads !== threads || performance.now() - s.atMs >= THREAD_RESCAN_MS) {
    s = scan(prefix, threads);
    if (!s) return total;
    scans.set(prefix, s);
  }
  let named = 0;
  for (const tid of s.tids) {
    const ms = statCpuMs(`/proc/self/task/${tid}/stat`);
    if (Number.isNaN(ms)) { scans.delete(prefix); continue; } // it ended: the next call scans again
    named += ms;
  }
  return Math.max(0, total - named);
}
