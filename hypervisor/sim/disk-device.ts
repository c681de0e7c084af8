/**
 * The sim guest's disk: a block device on a shared NBD export that follows the VM across nodes.
 *
 * Like QEMU's block layer, the device runs in the agent's main thread (the vCPU workers never
 * touch the socket). The guest's block I/O is a write-ahead log (`storage/wal-disk.ts`): records
 * with sequence numbers and CRC-32s, each acknowledged only once its NBD WRITE with FUA completed.
 *
 * - Pacing: `recordsPerSec` records per second (default DISK_DEFAULT_RECORDS_PER_SEC = 200, i.e.
 *   200 x 4 KiB = 800 KiB/s of FUA writes, a busy OLTP log), at most `depth` in flight (default 1,
 *   a database log writer with one log write outstanding), by a token bucket read from the clock
 *   on a 5 ms timer and on each completion.
 *   Why depth 1: qemu-nbd 7.2 does not set TCP_NODELAY on its client sockets (strace: only
 *   SO_REUSEADDR), so with several requests pipelined its small replies wait for the client's
 *   delayed ACK: 4 FUA writes in flight took 48 ms median against qemu-nbd, 1-2 ms against
 *   nbd-server; a pause then spent ~40 ms draining. With one in flight a pause drains in ~1 ms.
 * - Region: the log lives in the first `regionBytes` of the export (default 4 MiB = 1024 records,
 *   a ring). A freshly booted VM formats (zeroes) it; a migrated VM continues it.
 * - `quiesce()` (pause / stop-and-copy): stops submitting, waits for every in-flight write and
 *   flushes the export before it resolves. After it nothing is in flight, every acknowledged
 *   record is durable and `walState` is exact: it travels in the device state.
 * - `start()` (resume) restarts submitting. `close()` stops and disconnects (NBD_CMD_DISC only:
 *   nothing is written after a quiesce).
 * - `open()` connects to the export; any failure is FAILED_PRECONDITION naming the export
 *   (a target that cannot reach the VM's disk refuses the migration up front).
 *
 * One export carries one VM's log: two VMs on the same export would overwrite each other's ring.
 */
import { DroverError } from '../../lib/errors';
import { NbdClient } from '../../storage/nbd/nbd-client';
import { parseNbdUri } from '../../storage/nbd/nbd-uri';
import { WalDiskWriter, WalState, checkWalRegion, parseWalState, WAL_DEFAULT_RECORD_SIZE } from '../../storage/wal-disk';

/** Default guest disk I/O rate: WAL records (4 KiB, FUA) per second. */
export const DISK_DEFAULT_RECORDS_PER_SEC = 200;
/** Default records in flight (see the module header for why 1). */
export const DISK_DEFAULT_DEPTH = 1;
/** Token bucket burst: records that may be caught up after a slow write. */
const DISK_BURST = 8;
/** Default size of the WAL region at the start of the export. */
export const DISK_DEFAULT_REGION_BYTES = 4 * 1024 * 1024;
/** Device-state section magic 'DRDK' (appended to the sim device state). */
export const DISK_SECTION_MAGIC = 0x4452444b;
/** Device-state section format version. */
export const DISK_SECTION_VERSION = 1;
/** Bytes of the section header: magic, version, payload length, FNV-1a of the payload. */
export const DISK_SECTION_HEADER_BYTES = 16;

/** Tunables of the disk device. */
export interface DiskDeviceOptions {
  /** WAL records per second (default 200; 0 = no I/O, the device only holds the disk). */
  recordsPerSec?: number;
  /** Records in flight at most (default 1). */
  depth?: number;
  /** Bytes of the WAL region at offset 0 (default 4 MiB, capped at the export size). */
  regionBytes?: number;
  /** Connect + handshake timeout (default 5000 ms). */
  connectTimeoutMs?: number;
}

/** What travels in the device state. */
export interface DiskSection {
  /** Export name (the URI's host may differ between nodes; the export must not). */
  exportName: string;
  /** The WAL writer's state, exact after a quiesce. */
  wal: WalState;
}

function fnv1a(b: Uint8Array): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < b.length; i++) h = Math.imul(h ^ b[i], 0x01000193);
  return h >>> 0;
}

/** Encodes a disk section (header + JSON payload). */
export function encodeDiskSection(s: DiskSection): Uint8Array {
  const payload = Buffer.from(JSON.stringify(s), 'utf8');
  const out = Buffer.alloc(DISK_SECTION_HEADER_BYTES + payload.length);
  out.writeUInt32LE(DISK_SECTION_MAGIC, 0);
  out.writeUInt32LE(DISK_SECTION_VERSION, 4);
  out.writeUInt32LE(payload.length, 8);
  out.writeUInt32LE(fnv1a(payload), 12);
  payload.copy(out, DISK_SECTION_HEADER_BYTES);
  return out;
}

/** Decodes a disk section; throws an Error naming what is wrong (`who` prefixes the message). */
export function decodeDiskSection(b: Uint8Array, who: string): DiskSection {
  const buf = Buffer.from(b.buffer, b.byteOffset, b.byteLength);
  if (buf.length < DISK_SECTION_HEADER_BYTES) throw new Error(`${who}: disk section of ${buf.length} bytes is shorter than its ${DISK_SECTION_HEADER_BYTES}-byte header`);
  const magic = buf.readUInt32LE(0);
  if (magic !== DISK_SECTION_MAGIC) throw new Error(`${who}: trailing section is not a disk section (magic 0x${magic.toString(16)}, expected 0x${DISK_SECTION_MAGIC.toString(16)})`);
  const version = buf.readUInt32LE(4);
  if (version !== DISK_SECTION_VERSION) throw new Error(`${who}: disk section version ${version} not supported (this driver reads version ${DISK_SECTION_VERSION})`);
  const len = buf.readUInt32LE(8);
  if (buf.length !== DISK_SECTION_HEADER_BYTES + len) throw new Error(`${who}: disk section is ${buf.length} bytes, its header says ${DISK_SECTION_HEADER_BYTES + len}`);
  const payload = buf.subarray(DISK_SECTION_HEADER_BYTES);
  if (fnv1a(payload) !== buf.readUInt32LE(12)) throw new Error(`${who}: disk section checksum mismatch (corrupted in transit?)`);
  let o: Partial<DiskSection>;
  try { o = JSON.parse(payload.toString('utf8')); } catch { throw new Error(`${who}: disk section payload is not JSON`); }
  if (typeof o.exportName !== 'string') throw new Error(`${who}: disk section has no export name`);
  let wal: WalState;
  try { wal = parseWalState(o.wal as WalState); } catch (e) { throw new Error(`${who}: disk section: ${(e as Error).message}`); }
  return { exportName: o.exportName, wal };
}

/** The guest's disk device (see the module header). */
export class SimDiskDevice {
  /** The export name. */
  readonly exportName: string;
  private writer: WalDiskWriter | undefined;
  private running = false;
  private timer: NodeJS.Timeout | undefined;
  private tokens = 0;
  private lastTick = 0;
  private readonly pending = new Set<Promise<unknown>>();
  private failure: DroverError | undefined;
  private closed = false;
  /** Duration of the last quiesce (drain + flush) in ms. */
  lastQuiesceMs = 0;
  /** Records submitted since open (on this node). */
  submitted = 0;
  /** Flushes completed by quiesce() (tests check that pause flushed). */
  flushes = 0;

  private constructor(readonly uri: string, private readonly client: NbdClient, private readonly o: Required<DiskDeviceOptions>) {
    this.exportName = client.exportName;
  }

  /** Connects to `uri`. FAILED_PRECONDITION naming the export when it cannot be reached or used. */
  static async open(uri: string, vm: string, o: DiskDeviceOptions = {}, role: 'boot' | 'incoming' = 'boot'): Promise<SimDiskDevice> {
    const full: Required<DiskDeviceOptions> = {
      recordsPerSec: o.recordsPerSec ?? DISK_DEFAULT_RECORDS_PER_SEC,
      depth: o.depth ?? DISK_DEFAULT_DEPTH,
      regionBytes: o.regionBytes ?? DISK_DEFAULT_REGION_BYTES,
      connectTimeoutMs: o.connectTimeoutMs ?? 5000,
    };
    let exportName = uri;
    let client: NbdClient;
    try {
      exportName = parseNbdUri(uri).exportName;
      client = await NbdClient.connectUri(uri, { connectTimeoutMs: full.connectTimeoutMs });
    } catch (err) {
      const e = DroverError.from(err, 'UNAVAILABLE');
      const who = role === 'incoming' ? 'the migration target cannot reach' : 'cannot reach';
      throw new DroverError('FAILED_PRECONDITION', `disk of VM ${vm}: ${who} NBD export "${exportName}" (${uri}): ${e.message}`, { cause: err });
    }
    if (client.info.readOnly) {
      await client.close().catch(() => undefined);
      throw new DroverError('FAILED_PRECONDITION', `disk of VM ${vm}: NBD export "${exportName}" (${uri}) is read-only`);
    }
    const rs = WAL_DEFAULT_RECORD_SIZE;
    const region = Math.floor(Math.min(full.regionBytes, client.size) / rs) * rs;
    if (region < rs) {
      await client.close().catch(() => undefined);
      throw new DroverError('FAILED_PRECONDITION', `disk of VM ${vm}: NBD export "${exportName}" (${client.size} bytes) is too small for a ${rs}-byte WAL record`);
    }
    full.regionBytes = region;
    return new SimDiskDevice(uri, client, full);
  }

  /** A fresh boot: zeroes the WAL region ("mkfs") and starts a new log seeded with `seed`. */
  async format(seed: number): Promise<void> {
    const chunk = Buffer.alloc(Math.min(this.o.regionBytes, 1024 * 1024));
    for (let off = 0; off < this.o.regionBytes; off += chunk.length) {
      const n = Math.min(chunk.length, this.o.regionBytes - off);
      await this.client.write(off, n === chunk.length ? chunk : chunk.subarray(0, n));
    }
    await this.client.flush();
    this.writer = WalDiskWriter.create(this.client, { regionOffset: 0, regionLength: this.o.regionBytes, seed: seed >>> 0 }, { depth: this.o.depth });
  }

  /** Continues a log from a migrated device-state section (incoming domain). */
  restore(s: DiskSection): void {
    if (s.exportName !== this.exportName) {
      throw new Error(`device state's disk is NBD export "${s.exportName}", this domain's is "${this.exportName}"`);
    }
    this.stopTimer();
    this.writer = WalDiskWriter.restore(this.client, s.wal, { depth: this.o.depth });
    this.failure = undefined;
  }

  /** The device-state section (exact only while quiesced). */
  section(): DiskSection {
    if (!this.writer) throw new Error(`disk "${this.exportName}" has no log yet`);
    if (this.running || this.pending.size) throw new Error(`disk "${this.exportName}" is not quiesced`);
    return { exportName: this.exportName, wal: this.writer.state };
  }

  /** Highest acknowledged WAL seq (0 without a log). */
  get ackedSeq(): number { return this.writer?.ackedSeq ?? 0; }

  /** True while the device submits I/O. */
  get active(): boolean { return this.running; }

  /** The first write failure, if any (the log stops there). */
  get error(): DroverError | undefined { return this.failure; }

  /** Starts (or restarts) the guest's block I/O. */
  start(): void {
    if (this.closed || !this.writer || this.running) return;
    this.running = true;
    this.tokens = 0;
    this.lastTick = performance.now();
    if (this.o.recordsPerSec > 0) {
      this.timer = setInterval(() => this.tick(), 5);
      this.timer.unref();
    }
  }

  private tick(): void {
    if (!this.running || !this.writer || this.failure) return;
    const now = performance.now();
    this.tokens = Math.min(Math.max(this.o.depth, DISK_BURST), this.tokens + ((now - this.lastTick) * this.o.recordsPerSec) / 1000);
    this.lastTick = now;
    while (this.tokens >= 1 && this.pending.size < this.o.depth) {
      this.tokens -= 1;
      this.submitted++;
      const p = this.writer.submit().catch((err) => {
        if (!this.failure) this.failure = DroverError.from(err, 'UNAVAILABLE');
      });
      this.pending.add(p);
      void p.finally(() => {
        this.pending.delete(p);
        if (this.running) this.tick(); // the next record may go out at once (tokens permitting)
      });
    }
  }

  private stopTimer(): void {
    this.running = false;
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /**
   * Stops submitting, waits for every in-flight write, then flushes the export. Resolves when
   * nothing is in flight and every acknowledged record is durable (each was FUA; the flush is
   * belt and braces). A failed flush does not make the VM unpausable: it is recorded like a
   * failed write (the log stops, the guest's disk check reports it, naming the export).
   */
  async quiesce(): Promise<void> {
    const t0 = performance.now();
    this.stopTimer();
    while (this.pending.size) await Promise.allSettled([...this.pending]);
    if (this.writer && !this.closed && !this.failure) {
      try {
        await this.client.flush();
        this.flushes++;
      } catch (err) {
        this.failure = DroverError.from(err, 'UNAVAILABLE');
      }
    }
    this.lastQuiesceMs = performance.now() - t0;
  }

  /** Checks the log on the export against the acknowledged state (quiesce first). */
  async check(): Promise<{ ok: boolean; ackedSeq: number; detail: string }> {
    if (!this.writer) return { ok: true, ackedSeq: 0, detail: 'no log yet' };
    const st = this.writer.state;
    const r = await checkWalRegion(this.client, st);
    const err = this.failure ? `; log stopped after a write failure: ${this.failure.message}` : '';
    return { ok: r.ok && !this.failure, ackedSeq: st.ackedSeq, detail: `NBD export "${this.exportName}": ${r.detail}${err}` };
  }

  /** Stops I/O (waiting for in-flight writes) and disconnects. Safe to call twice. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.stopTimer();
    while (this.pending.size) await Promise.allSettled([...this.pending]);
    this.closed = true;
    await this.client.close().catch(() => undefined);
  }
}
