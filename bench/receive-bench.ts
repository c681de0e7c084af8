/**
 * The target's receive path on its own, in a process of its own: a bulk socket (TLS by default,
 * 16 KiB records as between agents) -> frame decode -> IncomingMigration.apply into an incoming
 * sim domain (copy into guest RAM, page hash, checksum, digest) -> BatchAck, as the agent runs it.
 * The receiver's CPU seconds per GB of page payload are measured inside it (process.cpuUsage,
 * after a warm-up that faults its pages in), so the sender's CPU on the same host is not counted.
 * Two modes, alternating: `pooled` gives each frame's buffer back once its apply settled (the
 * agent since receive buffers are reused), `fresh` never does, so every frame gets a new buffer
 * (the agent before). A whole-agent bench on a shared 2-core host drowns a change of this size.
 *
 * Over the bulk channel's socket and over a gRPC call (grpc-receive-pool.ts swaps its decoder).
 *
 * Run:  node dist/bench/receive-bench.js [--gib N] [--runs N] [--transport bulk,grpc] [--plain] [--json]
 * (the receiver runs with the agent's V8 and malloc settings, process-tuning.ts).
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import * as tls from 'node:tls';
import { randomFillSync } from 'node:crypto';
import { parseArgs } from 'node:util';
import * as grpc from '@grpc/grpc-js';
import { SimHypervisor } from '../hypervisor/sim/sim-hypervisor';
import { PAGE_SIZE } from '../hypervisor/types';
import { BULK_MALLOC_TUNABLES } from '../lib/malloc-tuning';
import { DATA_PLANE_NODE_FLAGS } from '../services/node-agent/process-tuning';
import { pkiFixture } from '../lib/pki/pki-fixture';
import { IncomingMigration } from '../migration/receiver/receiver';
import { BulkSocket } from '../migration/transport/bulk-socket';
import { poolReceiveBuffers } from '../migration/transport/grpc-receive-pool';
import { widenReceiveWindow } from '../lib/grpc-window';
import { BatchBuilder, decodeAck, decodeFrame, encodeAck } from '../migration/wire/frame-codec';
import { foldChecksum, hashPage } from '../migration/wire/page-hash';
import { frames, type Frame } from '../migration/wire/protocol';

/** Pages per batch (1 MiB, the engine's batch). */
const BATCH_PAGES = 256;
/** Distinct batches the sender cycles through (their pages: 64 MiB of the target's memory, rewritten each pass). */
const SLOTS = 64;
/** Batches in flight (a slot's buffer is rewritten only once its batch was acknowledged). */
const WINDOW = 32;
/** Batches before the measurement starts: one pass faults the target's pages in. */
const WARMUP = SLOTS;
const MEM_BYTES = 256 * 2 ** 20;

/** One receiver run's figures. */
interface RunFigures { mode: Mode; transport: Transport; bytes: number; cpuSeconds: number; cpuSecondsPerGB: number; wallSeconds: number }
type Mode = 'pooled' | 'fresh';
type Transport = 'bulk' | 'grpc';

/** The gRPC method the bench carries frames on: raw bytes both ways, as Transfer (agent-server.ts TRANSFER_CODECS). */
const PIPE: grpc.ServiceDefinition = {
  Pipe: { path: '/drover.bench.Receive/Pipe', requestStream: true, responseStream: true, originalName: 'Pipe',
    requestSerialize: (b: Buffer) => b, requestDeserialize: (b: Buffer) => b, responseSerialize: (b: Buffer) => b, responseDeserialize: (b: Buffer) => b },
};

/**
 * The receiver (child process): listens, applies every batch in arrival order as the agent's
 * Transfer call does, gives each frame's buffer back in `pooled` mode, and prints its figures as
 * one JSON line once the sender ended.
 */
async function receiver(mode: Mode, transport: Transport, pkiDir: string | undefined): Promise<void> {
  const hv = new SimHypervisor();
  const dom = await hv.createIncoming({ name: 'rb', memBytes: MEM_BYTES, vcpus: 1, profile: 'idle', seed: 1 });
  const m = new IncomingMigration('m-rb', 'tok', dom);
  m.start(frames.start('m-rb', 'tok', PAGE_SIZE, MEM_BYTES / PAGE_SIZE) as Extract<Frame, { kind: 'start' }>);
  let cpu0 = process.cpuUsage(), wall0 = performance.now(), bytes0 = 0;
  let chain = Promise.resolve();
  /** Queues frame `b`; `ack` sends an ack back; `release` gives the buffer back (pooled mode). */
  const onFrame = (b: Buffer, ack: (a: Buffer) => void, release: ((b: Buffer) => void) | undefined) => {
    chain = chain.then(async () => {
      const f = decodeFrame(b);
      for (const a of await m.apply(f)) ack(encodeAck(a));
      if (f.kind === 'batch' && f.seq === WARMUP) { cpu0 = process.cpuUsage(); wall0 = performance.now(); bytes0 = m.bytes; }
    }).finally(() => { if (mode === 'pooled') release?.(b); });
  };
  const finished = () => chain.then(async () => {
    const c = process.cpuUsage(cpu0);
    const bytes = m.bytes - bytes0, cpuSeconds = (c.user + c.system) / 1e6;
    const out: RunFigures = { mode, transport, bytes, cpuSeconds, cpuSecondsPerGB: cpuSeconds / (bytes / 1e9), wallSeconds: (performance.now() - wall0) / 1000 };
    process.stdout.write(`${JSON.stringify(out)}\n`);
  });
  const cert = pkiDir ? { cert: fs.readFileSync(path.join(pkiDir, 'rb.crt')), key: fs.readFileSync(path.join(pkiDir, 'rb.key')) } : undefined;
  const exit = () => void hv.close().then(() => process.exit(0));
  if (transport === 'grpc') {
    const server = new grpc.Server({ 'grpc.max_receive_message_length': 16 * 2 ** 20 });
    server.addService(PIPE, {
      Pipe: (call: grpc.ServerDuplexStream<Buffer, Buffer>) => {
        widenReceiveWindow(call);
        let release: ((b: Buffer) => void) | undefined;
        let first = true;
        call.on('data', (b: Buffer) => {
          // As the agent: the decoder is swapped between the first frame (Start there) and the next.
          if (first) { first = false; if (mode === 'pooled') release = poolReceiveBuffers(call); }
          onFrame(b, (a) => call.write(a), release);
        });
        call.on('end', () => void finished().then(() => { call.end(); setTimeout(exit, 100); }));
      },
    });
    const creds = cert ? grpc.ServerCredentials.createSsl(null, [{ cert_chain: cert.cert, private_key: cert.key }], false) : grpc.ServerCredentials.createInsecure();
    server.bindAsync('127.0.0.1:0', creds, (err, port) => {
      if (err) throw err;
      process.stdout.write(`listening ${port}\n`);
    });
    return;
  }
  const onSocket = (raw: net.Socket) => {
    const s = new BulkSocket(raw, 'sender');
    s.on('data', (b: Buffer) => onFrame(b, (a) => s.write(a), (x) => s.release(x)));
    s.on('end', () => void finished().then(() => { s.end(); exit(); }));
    s.on('error', (e: Error) => { process.stderr.write(`receiver: ${e.message}\n`); process.exit(1); });
  };
  const server = cert ? tls.createServer({ ...cert, minVersion: 'TLSv1.3' }, onSocket) : net.createServer(onSocket);
  server.listen(0, '127.0.0.1', () => process.stdout.write(`listening ${(server.address() as net.AddressInfo).port}\n`));
}

/** The sender's batches: SLOTS builders of random pages with their range tables and checksums. */
function buildSlots(): { builder: BatchBuilder; ranges: number[]; checksum: number }[] {
  return Array.from({ length: SLOTS }, (_, k) => {
    const builder = new BatchBuilder(BATCH_PAGES * PAGE_SIZE, 2);
    const payload = builder.payloadView();
    randomFillSync(payload);
    const words = new Int32Array(payload.buffer, payload.byteOffset, payload.length >> 2);
    const first = k * BATCH_PAGES;
    let checksum = 0;
    for (let p = 0; p < BATCH_PAGES; p++) checksum = foldChecksum(checksum, first + p, hashPage(words, p * (PAGE_SIZE >> 2)));
    return { builder, ranges: [first, BATCH_PAGES], checksum };
  });
}

/** The sender's side of one stream: a bulk socket or a gRPC call, seen as frames out and acks in. */
interface SenderStream { write(b: Buffer): void; onAck(f: (b: Buffer) => void): void; ready(f: () => void): void; end(): void }

/** Dials the receiver at `port` over `transport` (TLS with `ca`, else plain). */
function dial(transport: Transport, port: number, ca: Buffer | undefined): SenderStream {
  if (transport === 'grpc') {
    const creds = ca ? grpc.credentials.createSsl(ca, null, null, { checkServerIdentity: () => undefined }) : grpc.credentials.createInsecure();
    const Client = grpc.makeGenericClientConstructor(PIPE, 'Pipe');
    const client = new Client(`127.0.0.1:${port}`, creds, { 'grpc.ssl_target_name_override': 'rb' });
    const call = (client as unknown as { Pipe(): grpc.ClientDuplexStream<Buffer, Buffer> }).Pipe();
    call.on('error', () => undefined);
    return { write: (b) => void call.write(b), onAck: (f) => call.on('data', f), ready: (f) => setImmediate(f), end: () => { call.end(); client.close(); } };
  }
  const raw = ca ? tls.connect({ host: '127.0.0.1', port, ca, servername: 'rb', checkServerIdentity: () => undefined }) : net.connect(port, '127.0.0.1');
  const s = new BulkSocket(raw, 'receiver');
  s.on('error', () => undefined);
  return { write: (b) => void s.write(b), onAck: (f) => s.on('data', f), ready: (f) => void raw.once(ca ? 'secureConnect' : 'connect', f), end: () => s.end() };
}

/** One run: starts a receiver in `mode`, sends `batches` batches over a window, returns its figures. */
async function run(mode: Mode, transport: Transport, batches: number, pkiDir: string | undefined, ca: Buffer | undefined): Promise<RunFigures> {
  // The agent's V8 and malloc settings (process-tuning.ts), which decide what a fresh buffer costs.
  const child = spawn(process.execPath, [...DATA_PLANE_NODE_FLAGS, __filename, '--receiver', mode, '--transport', transport, ...(pkiDir ? ['--pki', pkiDir] : [])], { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, GLIBC_TUNABLES: BULK_MALLOC_TUNABLES } });
  let out = '';
  const port = await new Promise<number>((resolve, reject) => {
    child.stdout!.on('data', (d: Buffer) => { out += d.toString(); const m = /listening (\d+)/.exec(out); if (m) resolve(Number(m[1])); });
    child.once('exit', (code) => reject(new Error(`receiver exited with ${code}`)));
  });
  const figures = new Promise<RunFigures>((resolve, reject) => {
    child.once('exit', (code) => {
      const line = out.split('\n').find((l) => l.startsWith('{'));
      if (code === 0 && line) resolve(JSON.parse(line) as RunFigures); else reject(new Error(`receiver exited with ${code}`));
    });
  });
  const s = dial(transport, port, ca);
  const slots = buildSlots();
  let acked = 0, sent = 0;
  await new Promise<void>((resolve) => {
    const pump = () => {
      while (sent < batches && sent - acked < WINDOW) {
        const slot = slots[sent % SLOTS];
        sent++;
        s.write(slot.builder.finish(sent, slot.ranges, [], slot.checksum, BATCH_PAGES * PAGE_SIZE));
      }
      if (acked === batches) resolve();
    };
    s.onAck((b: Buffer) => { const a = decodeAck(b); if (a.kind === 'batch') acked = a.seq; pump(); });
    s.ready(pump);
  });
  s.end();
  return figures;
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { receiver: { type: 'string' }, transport: { type: 'string', default: 'bulk,grpc' }, pki: { type: 'string' }, gib: { type: 'string', default: '1' }, runs: { type: 'string', default: '2' }, plain: { type: 'boolean', default: false }, json: { type: 'boolean', default: false } } });
  const transports = values.transport!.split(',') as Transport[];
  if (transports.some((t) => t !== 'bulk' && t !== 'grpc')) throw new Error(`--transport "${values.transport}" is not a list of bulk, grpc`);
  if (values.receiver) return receiver(values.receiver === 'fresh' ? 'fresh' : 'pooled', transports[0], values.pki);
  const batches = WARMUP + Math.round((Number(values.gib) * 2 ** 30) / (BATCH_PAGES * PAGE_SIZE));
  const pki = values.plain ? undefined : await pkiFixture('drover-receive-bench-');
  try {
    const ca = pki ? (await pki.identity({ role: 'node', name: 'rb', hosts: ['127.0.0.1'] })).ca : undefined;
    const rows: RunFigures[] = [];
    for (let i = 0; i < Number(values.runs); i++) {
      for (const transport of transports) for (const mode of ['fresh', 'pooled'] as const) {
        const r = await run(mode, transport, batches, pki?.dir, ca);
        rows.push(r);
        if (values.json) process.stdout.write(`${JSON.stringify({ ...r, tls: !!pki })}\n`);
        else process.stdout.write(`${transport.padEnd(4)} ${mode.padEnd(6)} ${pki ? 'tls' : 'plain'}  ${(r.bytes / 1e9).toFixed(2)} GB  ${r.cpuSecondsPerGB.toFixed(3)} CPU s/GB  ${(r.bytes / 1e9 / r.wallSeconds).toFixed(2)} GB/s\n`);
      }
    }
  } finally {
    pki?.cleanup();
  }
}

void main().catch((err: unknown) => { process.stderr.write(`receive-bench: ${(err as Error).message}\n`); process.exit(1); });
