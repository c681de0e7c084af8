/** Test support for the observability tests: the repository, free ports, a real Prometheus. */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import { freePort } from '../../lib/free-port';
import * as os from 'node:os';
import * as path from 'node:path';

/** The checkout (where deploy/ lives), from the sources or dist/. */
export function repoDir(): string {
  let dir = __dirname;
  for (let i = 0; i < 6; i++) {
    if (fs.existsSync(path.join(dir, 'deploy', 'prometheus'))) return dir;
    dir = path.dirname(dir);
  }
  throw new Error('cannot find deploy/prometheus above ' + __dirname);
}

/** A free TCP port on loopback. */
export { freePort };

/** A Prometheus server started for a test. */
export interface TestPrometheus {
  url: string;
  dir: string;
  /** Runs an instant PromQL query; returns the result vector. */
  query(q: string): Promise<{ metric: Record<string, string>; value: [number, string] }[]>;
  stop(): Promise<void>;
  log(): string;
}

/** Starts `prometheus` on a free port with `config` (YAML text) in a temporary directory. */
export async function startPrometheus(config: string): Promise<TestPrometheus> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'drover-prom-'));
  fs.writeFileSync(path.join(dir, 'prometheus.yml'), config);
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  let log = '';
  const child: ChildProcess = spawn('prometheus', [
    `--config.file=${path.join(dir, 'prometheus.yml')}`, `--storage.tsdb.path=${path.join(dir, 'data')}`,
    `--web.listen-address=127.0.0.1:${port}`, '--log.level=warn',
  ], { stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout!.on('data', (b) => { log = (log + b).slice(-8000); });
  child.stderr!.on('data', (b) => { log = (log + b).slice(-8000); });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(t);
    }
    fs.rmSync(dir, { recursive: true, force: true });
  };
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`prometheus exited: ${log}`);
    try {
      if ((await fetch(`${url}/-/ready`)).status === 200) break;
    } catch { /* not yet */ }
    if (Date.now() > deadline) { await stop(); throw new Error(`prometheus not ready: ${log}`); }
    await new Promise((r) => setTimeout(r, 200));
  }
  return {
    url, dir, stop, log: () => log,
    async query(q) {
      const res = await fetch(`${url}/api/v1/query?query=${encodeURIComponent(q)}`);
      const body = await res.json() as { status: string; error?: string; data: { resultType: string; result: { metric: Record<string, string>; value: [number, string] }[] } };
      if (body.status !== 'success') throw new Error(`query ${q}: ${body.error}`);
      return body.data.result;
    },
  };
}

/** Prometheus's histogram_quantile over cumulative bucket counts (upper bound → count), for comparisons. */
export function histogramQuantile(q: number, buckets: [number, number][]): number {
  const b = [...buckets].sort((x, y) => x[0] - y[0]);
  const total = b[b.length - 1][1];
  const rank = q * total;
  const i = b.findIndex(([, c]) => c >= rank);
  if (i === b.length - 1 && !Number.isFinite(b[i][0])) return b[b.length - 2][0];
  const lower = i === 0 ? 0 : b[i - 1][0];
  const below = i === 0 ? 0 : b[i - 1][1];
  const count = b[i][1] - below;
  return lower + (b[i][0] - lower) * ((rank - below) / count);
}
