/**
 * `node dist/bench/cpuprofile-top.js FILE.cpuprofile [N]`: the N functions (default 10) with the
 * most self time in a V8 CPU profile, as the agents write them with DROVER_CPU_PROF=DIR
 * (services/node-agent/process-tuning.ts). Each line: seconds, share of the busy (non-idle)
 * time, function, file:line. A profile samples wall time while the thread runs JavaScript or
 * native code, so on a loaded host the seconds overstate CPU; the shares are what to compare.
 */
import * as fs from 'node:fs';

/** The parts of a .cpuprofile this reads. */
interface CpuProfile {
  nodes: { id: number; callFrame: { functionName: string; url: string; lineNumber: number } }[];
  samples: number[];
  timeDeltas: number[];
}

/** Functions V8 reports for time that is not work. */
const NOT_WORK = new Set(['(idle)']);
/** Default number of functions printed. */
const DEFAULT_TOP = 10;

/** Self time per function ("name file:line"), microseconds. */
export function selfTimes(p: CpuProfile): Map<string, number> {
  const perNode = new Map<number, number>();
  p.samples.forEach((id, i) => perNode.set(id, (perNode.get(id) ?? 0) + (p.timeDeltas[i] ?? 0)));
  const out = new Map<string, number>();
  for (const n of p.nodes) {
    const cf = n.callFrame;
    const file = cf.url.replace(/^.*\/(dist|node_modules)\//, '$1/').replace(/^node:/, '');
    const key = `${cf.functionName || '(anonymous)'} ${file}:${cf.lineNumber + 1}`;
    out.set(key, (out.get(key) ?? 0) + (perNode.get(n.id) ?? 0));
  }
  return out;
}

/** The report lines of profile `file`: its busy time, then the `top` functions by self time. */
export function topLines(file: string, top = DEFAULT_TOP): string[] {
  const times = selfTimes(JSON.parse(fs.readFileSync(file, 'utf8')) as CpuProfile);
  const work = [...times].filter(([k]) => !NOT_WORK.has(k.split(' ')[0]));
  const busy = work.reduce((a, [, v]) => a + v, 0);
  const lines = [`${file.split('/').pop()}: busy ${(busy / 1e6).toFixed(2)} s`];
  for (const [k, v] of work.sort((a, b) => b[1] - a[1]).slice(0, top)) {
    lines.push(`  ${(v / 1e6).toFixed(3).padStart(7)} s ${((100 * v) / busy).toFixed(1).padStart(5)}%  ${k}`);
  }
  return lines;
}

if (require.main === module) {
  const [file, n] = process.argv.slice(2);
  if (!file) {
    console.error('usage: node dist/bench/cpuprofile-top.js FILE.cpuprofile [N]');
    process.exit(2);
  }
  console.log(topLines(file, Number(n) || DEFAULT_TOP).join('\n'));
}
