/**
 * NBD client benchmark: Drover's TypeScript NBD client against `qemu-img bench` (QEMU's own NBD
 * block driver), same server, same export, same parameters.
 *
 * Starts qemu-nbd on a temporary raw file (default 256 MiB), then for each transport (TCP on
 * loopback, and a Unix socket as a second reference) and each pattern measures 4 KiB reads and
 * writes at a fixed queue depth:
 *   - seq:  offsets 0, bs, 2·bs, ... (qemu-img bench -S bs)
 *   - rand: a scattered stride of 7919 blocks, wrapping at the export size (qemu-img bench has no
 *           random mode, so both sides use the same strided walk: -S 7919·bs)
 * Writes use the byte pattern 0xa5 on both sides (qemu-img bench --pattern=0xa5).
 *
 * Run:  node dist/bench/nbd-bench.js [--json] [--count N] [--qemu-count N] [--depth N]
 *                                    [--size 256MiB] [--bs 4096] [--transport tcp|unix|both]
 * `runNbdBench(opts)` is exported for the project's bench runner.
 */
import { spawn } from 'node:child_process';
import { NbdClient } from '../storage/nbd/nbd-client';
import { startQemuNbd, LocalNbdServer } from '../storage/nbd/local-nbd-servers';
import { parseSize } from '../lib/units';

/** Benchmark parameters. */
export interface NbdBenchOptions {
  /** Export size in bytes (default 256 MiB). */
  sizeBytes?: number;
  /** Request size (default 4096). */
  blockSize?: number;
  /** Requests in flight (default 16). */
  depth?: number;
  /** Requests per client run (default 40000). */
  count?: number;
  /** Requests per qemu-img run (default 40000 on Unix sockets, 5000 on TCP where QEMU's client is slow here). */
  qemuImgCount?: number;
  /** Kill a qemu-img run after this long and report no figure (default 120 s). */
  qemuImgTimeoutMs?: number;
  /** Transports to measure (default both). */
  transports?: Array<'tcp' | 'unix'>;
  /** Progress lines go here (default: none). */
  log?: (line: string) => void;
}

/** One measured combination. */
export interface NbdBenchRow {
  /** tcp or unix. */
  transport: 'tcp' | 'unix';
  /** seq or rand. */
  pattern: 'seq' | 'rand';
  /** read or write. */
  op: 'read' | 'write';
  /** Drover client: requests per second. */
  clientIops: number;
  /** Drover client: MB/s (10^6 bytes). */
  clientMBps: number;
  /** qemu-img bench: requests per second (null if it failed or timed out). */
  qemuImgIops: number | null;
  /** qemu-img bench: MB/s. */
  qemuImgMBps: number | null;
  /** clientIops / qemuImgIops (null without a qemu-img figure). */
  ratio: number | null;
  /** Why a figure is missing, if one is. */
  note?: string;
}

/** The whole run. */
export interface NbdBenchResult {
  /** Parameters actually used. */
  params: Required<Omit<NbdBenchOptions, 'log' | 'qemuImgCount'>> & { qemuImgCount: { tcp: number; unix: number } };
  /** qemu-img version line. */
  qemuImgVersion: string;
  /** One row per transport × pattern × op. */
  rows: NbdBenchRow[];
}

const RAND_STRIDE_BLOCKS = 7919;

async function clientRun(c: NbdClient, op: 'read' | 'write', stepBytes: number, bs: number, depth: number, count: number): Promise<number> {
  const span = c.size - (c.size % bs);
  let next = 0;
  const t0 = process.hrtime.bigint();
  await Promise.all(Array.from({ length: depth }, async () => {
    const buf = Buffer.alloc(bs, 0xa5);
    while (next < count) {
      const i = next++;
      const off = (i * stepBytes) % span;
      if (op === 'write') await c.write(off, buf);
      else await c.readInto(off, buf);
    }
  }));
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

function qemuImgRun(target: string, op: 'read' | 'write', stepBytes: number, bs: number, depth: number, count: number, timeoutMs: number): Promise<{ seconds: number | null; note?: string }> {
  const args = ['bench', '-f', 'raw', '-c', String(count), '-d', String(depth), '-s', String(bs), '-S', String(stepBytes)];
  if (op === 'write') args.push('-w', '--pattern=165');
  args.push(target);
  return new Promise((resolve) => {
    const p = spawn('qemu-img', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    p.stderr.on('data', (d: Buffer) => { out += d.toString(); });
    const t = setTimeout(() => { p.kill('SIGKILL'); }, timeoutMs);
    p.on('error', (e) => { clearTimeout(t); resolve({ seconds: null, note: `qemu-img failed to start: ${e.message}` }); });
    p.on('exit', (code, sig) => {
      clearTimeout(t);
      const m = /Run completed in ([0-9.]+) seconds/.exec(out);
      if (code === 0 && m) resolve({ seconds: Number(m[1]) });
      else resolve({ seconds: null, note: sig === 'SIGKILL' ? `qemu-img timed out after ${timeoutMs} ms` : `qemu-img exited ${code}: ${out.trim().slice(-300)}` });
    });
  });
}

function qemuImgVersion(): Promise<string> {
  return new Promise((resolve) => {
    const p = spawn('qemu-img', ['--version'], { stdio: ['ignore', 'pipe', 'ignore'] });
    let out = '';
    p.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    p.on('exit', () => resolve(out.split('\n')[0] ?? ''));
    p.on('error', () => resolve('qemu-img not found'));
  });
}

/** Runs the benchmark and returns one row per transport × pattern × op. */
export async function runNbdBench(opts: NbdBenchOptions = {}): Promise<NbdBenchResult> {
  const size = opts.sizeBytes ?? 256 * 1024 * 1024;
  const bs = opts.blockSize ?? 4096;
  const depth = opts.depth ?? 16;
  const count = opts.count ?? 40000;
  const transports = opts.transports ?? ['tcp', 'unix'];
  const qCount = { tcp: opts.qemuImgCount ?? Math.min(count, 5000), unix: opts.qemuImgCount ?? count };
  const timeoutMs = opts.qemuImgTimeoutMs ?? 120_000;
  const log = opts.log ?? (() => undefined);
  const rows: NbdBenchRow[] = [];
  for (const transport of transports) {
    let server: LocalNbdServer | null = null;
    let client: NbdClient | null = null;
    try {
      server = await startQemuNbd({ export: { name: 'bench', size }, unixSocket: transport === 'unix', shared: 4 });
      client = transport === 'unix'
        ? await NbdClient.connect({ host: 'localhost', socketPath: server.socketPath!, exportName: 'bench' })
        : await NbdClient.connect({ host: server.host, port: server.port, exportName: 'bench' });
      const target = server.uri('bench');
      // Fill the image once so reads hit allocated blocks on both sides.
      const fill = Buffer.alloc(4 * 1024 * 1024, 0x5a);
      for (let off = 0; off < size; off += fill.length) await client.write(off, fill.subarray(0, Math.min(fill.length, size - off)));
      await client.flush();
      for (const pattern of ['seq', 'rand'] as const) {
        const step = pattern === 'seq' ? bs : bs * RAND_STRIDE_BLOCKS;
        for (const op of ['read', 'write'] as const) {
          await clientRun(client, op, step, bs, depth, Math.min(2000, count)); // warm-up
          const cs = await clientRun(client, op, step, bs, depth, count);
          const q = await qemuImgRun(target, op, step, bs, depth, qCount[transport], timeoutMs);
          const clientIops = count / cs;
          const qemuImgIops = q.seconds ? qCount[transport] / q.seconds : null;
          const row: NbdBenchRow = {
            transport, pattern, op,
            clientIops: Math.round(clientIops), clientMBps: +(clientIops * bs / 1e6).toFixed(1),
            qemuImgIops: qemuImgIops === null ? null : Math.round(qemuImgIops),
            qemuImgMBps: qemuImgIops === null ? null : +(qemuImgIops * bs / 1e6).toFixed(1),
            ratio: qemuImgIops === null ? null : +(clientIops / qemuImgIops).toFixed(2),
          };
          if (q.note) row.note = q.note;
          rows.push(row);
          log(`${transport} ${pattern} ${op}: client ${row.clientIops} IOPS, qemu-img ${row.qemuImgIops ?? '-'} IOPS, ratio ${row.ratio ?? '-'}`);
        }
      }
    } finally {
      await client?.close().catch(() => undefined);
      await server?.dispose();
    }
  }
  return {
    params: { sizeBytes: size, blockSize: bs, depth, count, qemuImgCount: qCount, qemuImgTimeoutMs: timeoutMs, transports },
    qemuImgVersion: await qemuImgVersion(),
    rows,
  };
}

function formatTable(r: NbdBenchResult): string {
  const head = ['transport', 'pattern', 'op', 'client IOPS', 'client MB/s', 'qemu-img IOPS', 'qemu-img MB/s', 'client/qemu-img'];
  const body = r.rows.map((x) => [x.transport, x.pattern, x.op, String(x.clientIops), String(x.clientMBps),
    x.qemuImgIops === null ? '-' : String(x.qemuImgIops), x.qemuImgMBps === null ? '-' : String(x.qemuImgMBps),
    x.ratio === null ? `- (${x.note ?? 'n/a'})` : x.ratio.toFixed(2)]);
  const w = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => (i < 3 ? c.padEnd(w[i]) : c.padStart(w[i]))).join('  ');
  const p = r.params;
  return [
    `NBD bench: qemu-nbd raw ${p.sizeBytes / 1048576} MiB, ${p.blockSize} B requests, queue depth ${p.depth}, ` +
      `client ${p.count} req/run, qemu-img ${p.qemuImgCount.tcp} (tcp) / ${p.qemuImgCount.unix} (unix) req/run; ${r.qemuImgVersion}`,
    line(head), line(w.map((n) => '-'.repeat(n))), ...body.map(line),
    ...(r.rows.some((x) => x.transport === 'tcp' && x.ratio !== null && x.ratio > 5)
      ? ['note: qemu-img over TCP runs at ~400 IOPS at depth 16, i.e. one 40 ms delayed ACK per 16 requests: its NBD client leaves',
        'Nagle on (this QEMU); ours sets TCP_NODELAY. The unix rows are the like-for-like comparison.']
      : []),
  ].join('\n');
}

async function main(argv: string[]): Promise<void> {
  const o: NbdBenchOptions = {};
  let json = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    const int = (v: string) => {
      if (!/^[0-9]+$/.test(v) || Number(v) < 1) throw new Error(`${a} wants a positive integer, got "${v}"`);
      return Number(v);
    };
    switch (a) {
      case '--json': json = true; break;
      case '--count': o.count = int(val()); break;
      case '--qemu-count': o.qemuImgCount = int(val()); break;
      case '--depth': o.depth = int(val()); break;
      case '--bs': o.blockSize = int(val()); break;
      case '--size': o.sizeBytes = parseSize(val(), '--size'); break;
      case '--transport': {
        const v = val();
        if (v === 'both') o.transports = ['tcp', 'unix'];
        else if (v === 'tcp' || v === 'unix') o.transports = [v];
        else throw new Error(`--transport wants tcp, unix or both, got "${v}"`);
        break;
      }
      default: throw new Error(`unknown argument "${a}" (use --json --count N --qemu-count N --depth N --bs N --size S --transport tcp|unix|both)`);
    }
  }
  if (!json) o.log = (l) => process.stderr.write(`${l}\n`);
  const r = await runNbdBench(o);
  process.stdout.write(json ? `${JSON.stringify(r)}\n` : `${formatTable(r)}\n`);
}

if (require.main === module) {
  main(process.argv.slice(2)).catch((err) => {
    process.stderr.write(`nbd-bench: ${(err as Error).message}\n`);
    process.exit(1);
  });
}
