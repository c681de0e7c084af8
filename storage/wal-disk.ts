/**
 * A write-ahead-log disk workload over an NBD export, for the sim `db` profile's disk I/O, and
 * its checker.
 *
 * The writer appends fixed-size records to a region of an export, as a ring: record `seq`
 * (1, 2, 3, ...) lives in slot `(seq - 1) % capacity`. Each record is
 *
 *     0  magic "DWL1" (u32 BE)      4  reserved (u32, 0)     8  seq (u64 BE)
 *     16 payload length (u32 BE)    20 writer seed (u32 BE)  24 payload ... zero fill
 *     recordSize-4  CRC-32 (IEEE) of bytes [0, recordSize-4)
 *
 * with the payload length and bytes drawn from a PRNG seeded by (seed, seq), so a checker can
 * regenerate every record exactly. A record is acknowledged only when its NBD WRITE with FUA
 * completed (the client emulates FUA by WRITE+FLUSH when the server lacks it); the writer keeps
 * `ackedSeq`, the highest seq such that every seq ≤ it is acknowledged. `state` is a small JSON
 * object that can travel as device state in a migration; `WalDiskWriter.restore()` continues on
 * another node with a new client (rewriting any unacknowledged record, which is idempotent since
 * records are deterministic).
 *
 * `checkWalRegion()` reads the region and verifies that every record with seq ≤ ackedSeq still
 * held by the ring is present, intact (CRC and regenerated payload) and in its slot (order), and
 * that no slot holds a torn or foreign record; it names the first failing seq.
 */
import { DroverError, invalidArgument } from '../lib/errors';
import type { NbdClient } from './nbd/nbd-client';

/** Record magic, "DWL1". */
export const WAL_MAGIC = 0x44574c31;
/** Bytes of header before the payload. */
export const WAL_HEADER_SIZE = 24;
/** Default record size (4 KiB). */
export const WAL_DEFAULT_RECORD_SIZE = 4096;

/** Where the log lives and how records are made. */
export interface WalLayout {
  /** Byte offset of the region in the export. */
  regionOffset: number;
  /** Byte length of the region; capacity = floor(regionLength / recordSize) records. */
  regionLength: number;
  /** Record size in bytes (default 4096; at least 64). */
  recordSize: number;
  /** PRNG seed (u32) identifying this log's contents. */
  seed: number;
}

/** The serialisable writer state (travels as device state in a migration). */
export interface WalState extends WalLayout {
  /** Format tag. */
  kind: 'drover.wal-disk';
  /** Format version. */
  version: 1;
  /** Highest seq such that every seq ≤ it was acknowledged (durable). 0 = none. */
  ackedSeq: number;
}

/** Result of `checkWalRegion`. */
export interface WalCheckResult {
  /** True when every acknowledged record held by the ring is present, intact and in order. */
  ok: boolean;
  /** Intact records found in the region (acknowledged or not). */
  records: number;
  /** Highest intact seq found (0 if none). */
  lastSeq: number;
  /** Human-readable verdict; on failure names the seq, slot and offset. */
  detail: string;
}

const CRC_TABLE = (() => {
  const t = new Int32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c;
  }
  return t;
})();

/** CRC-32 (IEEE 802.3, as zlib) of `buf[start, end)`. */
export function crc32(buf: Uint8Array, start = 0, end = buf.length): number {
  let c = -1;
  for (let i = start; i < end; i++) c = CRC_TABLE[(c ^ buf[i]) & 0xff] ^ (c >>> 8);
  return (c ^ -1) >>> 0;
}

/** A 32-bit hash of (seed, seq) (murmur3 finaliser), seeding each record's PRNG. */
function mix(seed: number, seq: number): number {
  let h = (seed ^ Math.imul(seq >>> 0, 0x9e3779b1) ^ Math.imul(Math.floor(seq / 0x1_0000_0000), 0x85ebca77)) >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

/** Fills `out` with the record for `seq` under `layout` (out.length must be recordSize). */
export function encodeWalRecord(layout: WalLayout, seq: number, out: Buffer = Buffer.allocUnsafe(layout.recordSize)): Buffer {
  const rs = layout.recordSize;
  out.fill(0);
  out.writeUInt32BE(WAL_MAGIC, 0);
  out.writeUInt32BE(Math.floor(seq / 0x1_0000_0000), 8);
  out.writeUInt32BE(seq >>> 0, 12);
  let s = mix(layout.seed, seq);
  const maxPayload = rs - WAL_HEADER_SIZE - 4;
  const len = 1 + (s % maxPayload);
  out.writeUInt32BE(len, 16);
  out.writeUInt32BE(layout.seed >>> 0, 20);
  let i = 0;
  for (; i + 4 <= len; i += 4) {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = Math.imul(s ^ (s >>> 15), s | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    out.writeUInt32LE((t ^ (t >>> 14)) >>> 0, WAL_HEADER_SIZE + i);
  }
  for (; i < len; i++) { s = (s + 0x6d2b79f5) >>> 0; out[WAL_HEADER_SIZE + i] = mix(s, i) & 0xff; }
  out.writeUInt32BE(crc32(out, 0, rs - 4), rs - 4);
  return out;
}

function validateLayout(l: Partial<WalLayout>, what: string, exportSize?: number): WalLayout {
  const rs = l.recordSize ?? WAL_DEFAULT_RECORD_SIZE;
  if (!Number.isSafeInteger(l.regionOffset) || l.regionOffset! < 0) throw invalidArgument(`${what}: regionOffset ${l.regionOffset} is not a non-negative integer`);
  if (!Number.isSafeInteger(l.regionLength) || l.regionLength! <= 0) throw invalidArgument(`${what}: regionLength ${l.regionLength} is not a positive integer`);
  if (!Number.isSafeInteger(rs) || rs < 64 || rs > 16 * 1024 * 1024) throw invalidArgument(`${what}: recordSize ${rs} is not an integer in 64..16MiB`);
  if (!Number.isInteger(l.seed) || l.seed! < 0 || l.seed! > 0xffffffff) throw invalidArgument(`${what}: seed ${l.seed} is not a u32`);
  if (l.regionLength! < rs) throw invalidArgument(`${what}: regionLength ${l.regionLength} holds no ${rs}-byte record`);
  if (exportSize !== undefined && l.regionOffset! + l.regionLength! > exportSize) {
    throw invalidArgument(`${what}: region ${l.regionOffset}+${l.regionLength} extends beyond the export size ${exportSize}`);
  }
  return { regionOffset: l.regionOffset!, regionLength: l.regionLength!, recordSize: rs, seed: l.seed! >>> 0 };
}

/** Options of a writer. */
export interface WalWriterOptions {
  /** Records in flight at most (default 8; capped at the ring capacity). */
  depth?: number;
}

/** Appends WAL records to an NBD export; see the module header. */
export class WalDiskWriter {
  /** The layout in use. */
  readonly layout: WalLayout;
  /** Ring capacity in records. */
  readonly capacity: number;
  private nextSeq: number;
  private acked: number;
  private readonly done = new Set<number>();
  private readonly depth: number;
  private inflight = 0;
  private slotWaiters: Array<() => void> = [];
  private idleWaiters: Array<() => void> = [];
  private failure: DroverError | null = null;
  private readonly pool: Buffer[] = [];

  private constructor(private readonly client: NbdClient, layout: WalLayout, ackedSeq: number, o: WalWriterOptions) {
    this.layout = layout;
    this.capacity = Math.floor(layout.regionLength / layout.recordSize);
    this.acked = ackedSeq;
    this.nextSeq = ackedSeq + 1;
    const depth = o.depth ?? 8;
    if (!Number.isInteger(depth) || depth < 1) throw invalidArgument(`WAL writer: depth ${depth} is not a positive integer`);
    this.depth = Math.min(depth, this.capacity);
    if (client.info.readOnly) throw new DroverError('FAILED_PRECONDITION', `WAL writer: NBD export "${client.exportName}" is read-only`);
  }

  /** Starts a new log (ackedSeq 0) in `layout` on `client`'s export. */
  static create(client: NbdClient, layout: Omit<WalLayout, 'recordSize'> & { recordSize?: number }, o: WalWriterOptions = {}): WalDiskWriter {
    return new WalDiskWriter(client, validateLayout(layout, 'WAL writer', client.size), 0, o);
  }

  /** Continues a log from serialised state (object or JSON text) with a (new) client. */
  static restore(client: NbdClient, state: WalState | string, o: WalWriterOptions = {}): WalDiskWriter {
    const st = parseWalState(state);
    return new WalDiskWriter(client, validateLayout(st, 'WAL state', client.size), st.ackedSeq, o);
  }

  /** Highest acknowledged (durable) seq; every seq ≤ it is acknowledged. */
  get ackedSeq(): number { return this.acked; }

  /** Records submitted and not yet acknowledged. */
  get inFlight(): number { return this.inflight; }

  /** A snapshot of the serialisable state. Take it after `drain()` for an exact picture. */
  get state(): WalState {
    return { kind: 'drover.wal-disk', version: 1, ...this.layout, ackedSeq: this.acked };
  }

  /** The state as JSON text. */
  serialize(): string { return JSON.stringify(this.state); }

  /**
   * Starts writing the next record (waiting for a free slot if `depth` records are in flight) and
   * resolves with its seq once it is acknowledged. Rejects with the write's error; the writer then
   * refuses further records (restore a new writer from `state` to continue).
   */
  async submit(): Promise<number> {
    while (this.inflight >= this.depth) await new Promise<void>((r) => this.slotWaiters.push(r));
    if (this.failure) throw new DroverError('FAILED_PRECONDITION', `WAL writer stopped after an earlier failure: ${this.failure.message}`, { cause: this.failure });
    const seq = this.nextSeq++;
    const l = this.layout;
    const slot = (seq - 1) % this.capacity;
    const buf = encodeWalRecord(l, seq, this.pool.pop() ?? Buffer.allocUnsafe(l.recordSize));
    this.inflight++;
    try {
      await this.client.write(l.regionOffset + slot * l.recordSize, buf, { fua: true });
    } catch (err) {
      const e = DroverError.from(err, 'UNAVAILABLE');
      if (!this.failure) this.failure = e;
      throw e;
    } finally {
      this.pool.push(buf);
      this.inflight--;
      const w = this.slotWaiters.shift();
      if (w) w();
      if (this.inflight === 0) { const ws = this.idleWaiters; this.idleWaiters = []; for (const f of ws) f(); }
    }
    this.done.add(seq);
    while (this.done.delete(this.acked + 1)) this.acked++;
    return seq;
  }

  /** Appends `count` records (up to `depth` in flight) and resolves with the acknowledged seq. */
  async append(count = 1): Promise<number> {
    if (!Number.isSafeInteger(count) || count < 0) throw invalidArgument(`WAL writer: count ${count} is not a non-negative integer`);
    const ps: Promise<number>[] = [];
    for (let i = 0; i < count; i++) {
      if (this.inflight >= this.depth) await new Promise<void>((r) => this.slotWaiters.push(r));
      if (this.failure) break;
      const p = this.submit();
      p.catch(() => undefined);
      ps.push(p);
    }
    await Promise.all(ps);
    if (this.failure) throw this.failure;
    return this.acked;
  }

  /** Resolves when no record is in flight. */
  drain(): Promise<void> {
    if (this.inflight === 0) return Promise.resolve();
    return new Promise((r) => this.idleWaiters.push(r));
  }

  /** Drains, then flushes the export (belt and braces; FUA writes are already durable). */
  async flush(): Promise<void> {
    await this.drain();
    await this.client.flush();
  }
}

/** Parses and validates serialised WAL state (object or JSON); INVALID_ARGUMENT names the bad field. */
export function parseWalState(state: WalState | string): WalState {
  let o: unknown = state;
  if (typeof state === 'string') {
    try { o = JSON.parse(state); } catch (err) { throw invalidArgument('WAL state is not valid JSON', err); }
  }
  if (!o || typeof o !== 'object') throw invalidArgument('WAL state is not an object');
  const s = o as Partial<WalState>;
  if (s.kind !== 'drover.wal-disk') throw invalidArgument(`WAL state has kind "${String(s.kind)}", expected "drover.wal-disk"`);
  if (s.version !== 1) throw invalidArgument(`WAL state has version ${String(s.version)}; this build reads version 1`);
  if (!Number.isSafeInteger(s.ackedSeq) || s.ackedSeq! < 0) throw invalidArgument(`WAL state ackedSeq ${String(s.ackedSeq)} is not a non-negative integer`);
  const l = validateLayout(s, 'WAL state');
  return { kind: 'drover.wal-disk', version: 1, ...l, ackedSeq: s.ackedSeq! };
}

/**
 * Reads the WAL region through `client` and verifies it against `state` (see the module header).
 * Never throws for bad contents (that is `ok: false`); I/O errors propagate.
 */
export async function checkWalRegion(client: NbdClient, state: WalState | string): Promise<WalCheckResult> {
  const st = parseWalState(state);
  const l = validateLayout(st, 'WAL check', client.size);
  const rs = l.recordSize;
  const cap = Math.floor(l.regionLength / rs);
  const acked = st.ackedSeq;
  const lo = Math.max(1, acked - cap + 1);
  const expected = new Float64Array(cap); // expected seq per slot (0 = none expected)
  for (let s = lo; s <= acked; s++) expected[(s - 1) % cap] = s;

  const problems: string[] = [];
  let records = 0;
  let lastSeq = 0;
  const chunkRecords = Math.max(1, Math.floor((1 << 20) / rs));
  const buf = Buffer.allocUnsafe(chunkRecords * rs);
  const want = Buffer.allocUnsafe(rs);
  for (let first = 0; first < cap; first += chunkRecords) {
    const n = Math.min(chunkRecords, cap - first);
    const view = buf.subarray(0, n * rs);
    await client.readInto(l.regionOffset + first * rs, view);
    for (let k = 0; k < n; k++) {
      const slot = first + k;
      const off = l.regionOffset + slot * rs;
      const r = view.subarray(k * rs, (k + 1) * rs);
      const exp = expected[slot];
      const name = exp ? `record seq ${exp} (slot ${slot}, export offset ${off})` : `slot ${slot} (export offset ${off})`;
      const magic = r.readUInt32BE(0);
      if (magic === 0 && isZero(r)) {
        if (exp) problems.push(`${name} is missing: the slot is empty`);
        continue;
      }
      if (magic !== WAL_MAGIC) { problems.push(`${name} is torn or corrupt: bad magic 0x${magic.toString(16)}`); continue; }
      const crc = r.readUInt32BE(rs - 4);
      if (crc32(r, 0, rs - 4) !== crc) { problems.push(`${name} is torn or corrupt: CRC-32 mismatch`); continue; }
      const seq = r.readUInt32BE(8) * 0x1_0000_0000 + r.readUInt32BE(12);
      if (r.readUInt32BE(20) !== l.seed) { problems.push(`${name} belongs to another log (seed ${r.readUInt32BE(20)}, expected ${l.seed})`); continue; }
      if (seq < 1 || (seq - 1) % cap !== slot) { problems.push(`${name} holds seq ${seq}, which belongs in slot ${(seq - 1) % cap} (out of order)`); continue; }
      if (!encodeWalRecord(l, seq, want).equals(r)) { problems.push(`${name} holds seq ${seq} with the wrong payload`); continue; }
      records++;
      if (seq > lastSeq) lastSeq = seq;
      if (exp && seq !== exp && !(seq > acked)) {
        problems.push(`${name} holds seq ${seq} instead (stale or out of order)`);
      }
    }
  }
  if (problems.length === 0) {
    const span = acked === 0 ? 'no acknowledged records expected' : `acknowledged records seq ${lo}..${acked} present, intact and in order`;
    return { ok: true, records, lastSeq, detail: `ok: ${span}; ${records} intact records in ${cap} slots` };
  }
  const more = problems.length > 1 ? ` (and ${problems.length - 1} more problem${problems.length > 2 ? 's' : ''})` : '';
  return { ok: false, records, lastSeq, detail: `${problems[0]}${more}` };
}

function isZero(b: Buffer): boolean {
  for (let i = 0; i < b.length; i++) if (b[i] !== 0) return false;
  return true;
}
