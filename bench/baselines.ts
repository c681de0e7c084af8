/**
 * Baselines measured in the same run as the migrations: raw TCP over loopback (iperf3 when
 * installed, and a Node socket), and one plain Node HTTP/2 stream with 1 MiB writes. Each
 * receiver runs in its own process, as the target agent does.
 */
import { spawn, spawnSync } from 'node:child_process';
import * as net from 'node:net';
import * as http2 from 'node:http2';

/** One baseline figure. */
export interface Baseline {
  name: string;
  bytes: number;
  seconds: number;
  bytesPerSec: number;
  /** CPU seconds per GB (10^9 bytes) of the sending and of the receiving process (utime + stime). */
  cpuSecondsPerGB?: { sender: number; receiver: number };
}

/** CPU seconds this process used so far (all threads, utime + stime). */
function cpuNow(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

/** The receiver replies "<bytes> <its CPU seconds while receiving>"; with the sender's CPU seconds, the per-GB figures. */
function cpuPerGb(reply: string, senderCpu: number, bytes: number): { sender: number; receiver: number } {
  const receiverCpu = Number(reply.trim().split(' ')[1]);
  return { sender: senderCpu / (bytes / 1e9), receiver: receiverCpu / (bytes / 1e9) };
}

const CHUNK = 1024 * 1024;

/** Receiver process body: `node baselines.js serve tcp|h2` prints its port, counts bytes. */
function serve(kind: string): void {
  if (kind === 'tcp') {
    const srv = net.createServer((s) => {
      let n = 0;
      const c0 = cpuNow();
      s.on('data', (b) => { n += b.length; });
      s.on('end', () => s.end(`${n} ${cpuNow() - c0}`));
    });
    srv.listen(0, '127.0.0.1', () => console.log((srv.address() as net.AddressInfo).port));
  } else {
    const srv = http2.createServer();
    srv.on('stream', (stream) => {
      let n = 0;
      const c0 = cpuNow();
      stream.on('data', (b: Buffer) => { n += b.length; });
      stream.on('end', () => { stream.respond({ ':status': 200 }); stream.end(`${n} ${cpuNow() - c0}`); });
    });
    srv.listen(0, '127.0.0.1', () => console.log((srv.address() as net.AddressInfo).port));
  }
}

async function withServer<T>(kind: string, f: (port: number) => Promise<T>): Promise<T> {
  const child = spawn(process.execPath, [__filename, 'serve', kind], { stdio: ['ignore', 'pipe', 'inherit'] });
  const port = await new Promise<number>((resolve) => child.stdout!.once('data', (b: Buffer) => resolve(Number(b.toString().trim()))));
  try {
    return await f(port);
  } finally {
    child.kill();
  }
}

/** Node TCP socket over loopback, 1 MiB writes, `total` bytes. */
export function nodeTcp(total = 2 * 2 ** 30): Promise<Baseline> {
  return withServer('tcp', (port) => new Promise((resolve, reject) => {
    const buf = Buffer.alloc(CHUNK, 1);
    const s = net.connect(port, '127.0.0.1');
    const t0 = performance.now();
    const c0 = cpuNow();
    let sent = 0;
    const pump = () => {
      while (sent < total) {
        sent += CHUNK;
        if (!s.write(buf)) return void s.once('drain', pump);
      }
      s.end();
    };
    s.on('connect', pump);
    s.on('data', (reply: Buffer) => {
      const sec = (performance.now() - t0) / 1000;
      resolve({ name: 'raw TCP (node socket)', bytes: total, seconds: sec, bytesPerSec: total / sec, cpuSecondsPerGB: cpuPerGb(reply.toString(), cpuNow() - c0, total) });
    });
    s.on('error', reject);
  }));
}

/** One plain HTTP/2 stream (node:http2), 1 MiB writes. */
export function http2Stream(total = 2 * 2 ** 30): Promise<Baseline> {
  return withServer('h2', (port) => new Promise((resolve, reject) => {
    const client = http2.connect(`http://127.0.0.1:${port}`, { settings: { initialWindowSize: 2 ** 24 } });
    const buf = Buffer.alloc(CHUNK, 1);
    const req = client.request({ ':method': 'POST', ':path': '/' });
    const t0 = performance.now();
    const c0 = cpuNow();
    let reply = '';
    let sent = 0;
    const pump = () => {
      while (sent < total) {
        sent += CHUNK;
        if (!req.write(buf)) return void req.once('drain', pump);
      }
      req.end();
    };
    pump();
    req.on('data', (b: Buffer) => { reply += b.toString(); });
    req.on('end', () => {
      const sec = (performance.now() - t0) / 1000;
      client.close();
      resolve({ name: 'one HTTP/2 stream (node:http2)', bytes: total, seconds: sec, bytesPerSec: total / sec, cpuSecondsPerGB: cpuPerGb(reply, cpuNow() - c0, total) });
    });
    req.on('error', reject);
  }));
}

/** iperf3 over loopback for 3 s, when iperf3 is installed; undefined otherwise. */
export async function iperf3(): Promise<Baseline | undefined> {
  if (spawnSync('iperf3', ['--version']).status !== 0) return undefined;
  const port = 15201 + Math.floor(Math.random() * 1000);
  const srv = spawn('iperf3', ['-s', '-1', '-B', '127.0.0.1', '-p', String(port)], { stdio: 'ignore' });
  await new Promise((r) => setTimeout(r, 300));
  try {
    const r = spawnSync('iperf3', ['-c', '127.0.0.1', '-p', String(port), '-t', '3', '-J'], { encoding: 'utf8' });
    const j = JSON.parse(r.stdout);
    const bps = j.end.sum_received.bits_per_second / 8;
    return { name: 'raw TCP (iperf3)', bytes: j.end.sum_received.bytes, seconds: j.end.sum_received.seconds, bytesPerSec: bps };
  } catch {
    return undefined;
  } finally {
    srv.kill();
  }
}

/** Runs every baseline. */
export async function runBaselines(): Promise<Baseline[]> {
  const out: Baseline[] = [];
  const ip = await iperf3();
  if (ip) out.push(ip);
  out.push(await nodeTcp());
  out.push(await http2Stream());
  return out;
}

if (require.main === module && process.argv[2] === 'serve') serve(process.argv[3]);
