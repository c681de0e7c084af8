/**
 * The NBD fixed-newstyle handshake, run on a freshly connected TCP socket.
 *
 * `negotiate()` reads the server greeting, answers with NBD_FLAG_C_FIXED_NEWSTYLE (and
 * NBD_FLAG_C_NO_ZEROES when offered), then asks for the export with NBD_OPT_GO (requesting
 * NBD_INFO_BLOCK_SIZE so the server may state its block sizes) and falls back to
 * NBD_OPT_EXPORT_NAME when the server answers NBD_REP_ERR_UNSUP. `listExports()` runs
 * NBD_OPT_LIST then NBD_OPT_ABORT. Errors are DroverErrors: NOT_FOUND for an unknown export,
 * PERMISSION_DENIED for policy refusals, FAILED_PRECONDITION for TLS-only or oldstyle servers,
 * UNAVAILABLE for transport failures.
 */
import * as net from 'node:net';
import { DroverError, notFound, unavailable } from '../../lib/errors';
import * as P from './nbd-protocol';

/** What the server told us about the export during negotiation. */
export interface NbdExportInfo {
  /** Export name as requested. */
  name: string;
  /** Export size in bytes. */
  size: number;
  /** Raw 16-bit transmission flags. */
  flags: number;
  /** The server refuses writes and trims. */
  readOnly: boolean;
  /** The server accepts NBD_CMD_FLUSH. */
  canFlush: boolean;
  /** The server accepts the FUA flag on writes. */
  canFua: boolean;
  /** The server accepts NBD_CMD_TRIM. */
  canTrim: boolean;
  /** Several connections to this export see consistent data (NBD_FLAG_CAN_MULTI_CONN). */
  canMultiConn: boolean;
  /** Minimum block size (1 if the server stated none). */
  minBlockSize: number;
  /** Preferred block size (4096 if the server stated none). */
  preferredBlockSize: number;
  /** Largest payload per request (32 MiB if the server stated none). */
  maxPayload: number;
  /** How transmission was entered: 'go' or the 'export-name' fallback. */
  negotiatedWith: 'go' | 'export-name';
}

/** One entry of an NBD_OPT_LIST answer. */
export interface NbdExportListEntry {
  /** Export name. */
  name: string;
  /** Optional description the server sent after the name (may be empty). */
  description: string;
}

/** How to run the handshake. */
export interface NegotiateOptions {
  /** Export to open. */
  exportName: string;
  /** Force one method (tests use 'export-name' to exercise the fallback path); default 'go'. */
  method?: 'go' | 'export-name';
  /** Used in error messages, e.g. "127.0.0.1:10809". */
  where: string;
}

/**
 * Reads exact byte counts from a socket during negotiation. Collects chunks and hands out
 * exactly the requested bytes; rejects pending and later reads once the socket ends.
 */
export class SocketReader {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private waiter: { n: number; resolve: (b: Buffer) => void; reject: (e: Error) => void } | null = null;
  private ended: Error | null = null;
  private readonly onData = (c: Buffer) => { this.chunks.push(c); this.buffered += c.length; this.pump(); };
  private readonly onEnd = (err?: Error) => {
    this.ended = err instanceof Error ? err : new Error('connection closed by the server');
    this.pump();
  };

  /** Starts collecting data from the socket. */
  constructor(private readonly socket: net.Socket) {
    socket.on('data', this.onData);
    socket.on('error', this.onEnd);
    socket.on('close', () => this.onEnd());
  }

  /** Resolves with exactly n bytes, or rejects if the connection ends first. */
  readExact(n: number): Promise<Buffer> {
    if (this.waiter) return Promise.reject(new Error('SocketReader: concurrent reads'));
    return new Promise((resolve, reject) => { this.waiter = { n, resolve, reject }; this.pump(); });
  }

  /** Stops listening for data and returns whatever bytes were received beyond the last read. */
  detach(): Buffer {
    this.socket.pause();
    this.socket.off('data', this.onData);
    this.socket.off('error', this.onEnd);
    const rest = this.chunks.length === 0 ? Buffer.alloc(0) : Buffer.concat(this.chunks);
    this.chunks = []; this.buffered = 0;
    return rest;
  }

  private pump(): void {
    const w = this.waiter;
    if (!w) return;
    if (this.buffered >= w.n) {
      this.waiter = null;
      const all = this.chunks.length === 1 ? this.chunks[0] : Buffer.concat(this.chunks);
      const out = all.subarray(0, w.n);
      const rest = all.subarray(w.n);
      this.chunks = rest.length ? [rest] : [];
      this.buffered = rest.length;
      w.resolve(out);
    } else if (this.ended) {
      this.waiter = null;
      w.reject(this.ended);
    }
  }
}

function optionHeader(option: number, length: number): Buffer {
  const b = Buffer.alloc(16);
  b.writeBigUInt64BE(P.NBD_IHAVEOPT, 0);
  b.writeUInt32BE(option, 8);
  b.writeUInt32BE(length, 12);
  return b;
}

interface OptReply { option: number; type: number; data: Buffer }

async function readOptReply(r: SocketReader, where: string): Promise<OptReply> {
  const h = await r.readExact(20);
  const magic = h.readBigUInt64BE(0);
  if (magic !== P.NBD_OPT_REPLY_MAGIC) {
    throw new DroverError('UNAVAILABLE', `NBD server ${where} sent a bad option reply magic 0x${magic.toString(16)}`);
  }
  const len = h.readUInt32BE(16);
  if (len > 16 * 1024 * 1024) throw new DroverError('UNAVAILABLE', `NBD server ${where} sent an option reply of ${len} bytes`);
  const data = len ? await r.readExact(len) : Buffer.alloc(0);
  return { option: h.readUInt32BE(8), type: h.readUInt32BE(12), data };
}

function optError(rep: OptReply, what: string, where: string, exportName: string): DroverError {
  const name = P.NBD_REP_ERR_NAMES[rep.type] ?? `error 0x${rep.type.toString(16)}`;
  const text = rep.data.length ? `: ${rep.data.toString('utf8')}` : '';
  const msg = `NBD server ${where} refused ${what} for export "${exportName}" with ${name}${text}`;
  switch (rep.type) {
    case P.NBD_REP_ERR_UNKNOWN: return notFound(`NBD export "${exportName}" not found on ${where} (${name}${text})`);
    case P.NBD_REP_ERR_POLICY: return new DroverError('PERMISSION_DENIED', msg);
    case P.NBD_REP_ERR_TLS_REQD: return new DroverError('FAILED_PRECONDITION', `${msg} (the server requires TLS, which this client does not speak)`);
    case P.NBD_REP_ERR_SHUTDOWN: return unavailable(msg);
    case P.NBD_REP_ERR_UNSUP: return new DroverError('UNIMPLEMENTED', msg);
    default: return new DroverError('FAILED_PRECONDITION', msg);
  }
}

/** Reads the greeting and sends the client flags; returns the server's handshake flags. */
async function greet(socket: net.Socket, r: SocketReader, where: string): Promise<number> {
  const g = await r.readExact(16);
  if (g.readBigUInt64BE(0) !== P.NBD_MAGIC) throw new DroverError('UNAVAILABLE', `${where} is not an NBD server (no NBDMAGIC greeting)`);
  const second = g.readBigUInt64BE(8);
  if (second === P.NBD_OLDSTYLE_MAGIC) {
    throw new DroverError('FAILED_PRECONDITION', `NBD server ${where} speaks only the oldstyle handshake, which this client does not support`);
  }
  if (second !== P.NBD_IHAVEOPT) throw new DroverError('UNAVAILABLE', `NBD server ${where} sent an unknown handshake magic 0x${second.toString(16)}`);
  const hflags = (await r.readExact(2)).readUInt16BE(0);
  let cflags = 0;
  if (hflags & P.NBD_FLAG_FIXED_NEWSTYLE) cflags |= P.NBD_FLAG_C_FIXED_NEWSTYLE;
  if (hflags & P.NBD_FLAG_NO_ZEROES) cflags |= P.NBD_FLAG_C_NO_ZEROES;
  const cf = Buffer.alloc(4);
  cf.writeUInt32BE(cflags, 0);
  socket.write(cf);
  return hflags;
}

function toSafeSize(size: bigint, where: string, exportName: string): number {
  if (size > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new DroverError('FAILED_PRECONDITION', `NBD export "${exportName}" on ${where} is ${size} bytes, larger than this client can address`);
  }
  return Number(size);
}

function makeInfo(name: string, size: number, flags: number, negotiatedWith: 'go' | 'export-name'): NbdExportInfo {
  return {
    name, size, flags,
    readOnly: (flags & P.NBD_FLAG_READ_ONLY) !== 0,
    canFlush: (flags & P.NBD_FLAG_SEND_FLUSH) !== 0,
    canFua: (flags & P.NBD_FLAG_SEND_FUA) !== 0,
    canTrim: (flags & P.NBD_FLAG_SEND_TRIM) !== 0,
    canMultiConn: (flags & P.NBD_FLAG_CAN_MULTI_CONN) !== 0,
    minBlockSize: 1, preferredBlockSize: 4096, maxPayload: P.NBD_DEFAULT_MAX_PAYLOAD,
    negotiatedWith,
  };
}

async function exportNameOption(socket: net.Socket, r: SocketReader, hflags: number, o: NegotiateOptions): Promise<NbdExportInfo> {
  const name = Buffer.from(o.exportName, 'utf8');
  socket.write(Buffer.concat([optionHeader(P.NBD_OPT_EXPORT_NAME, name.length), name]));
  let b: Buffer;
  try {
    b = await r.readExact((hflags & P.NBD_FLAG_NO_ZEROES) ? 10 : 134);
  } catch (err) {
    // NBD_OPT_EXPORT_NAME cannot report errors: the server drops the connection instead.
    throw new DroverError('NOT_FOUND', `NBD export "${o.exportName}" not found on ${o.where} (server closed the connection after NBD_OPT_EXPORT_NAME)`, { cause: err });
  }
  const size = toSafeSize(b.readBigUInt64BE(0), o.where, o.exportName);
  return makeInfo(o.exportName, size, b.readUInt16BE(8), 'export-name');
}

/**
 * Runs the handshake on a connected socket and enters transmission for `o.exportName`.
 * On success the socket is positioned at the first transmission byte; the reader is detached.
 */
export async function negotiate(socket: net.Socket, o: NegotiateOptions): Promise<NbdExportInfo> {
  const r = new SocketReader(socket);
  try {
    const hflags = await greet(socket, r, o.where);
    if (!(hflags & P.NBD_FLAG_FIXED_NEWSTYLE) || o.method === 'export-name') {
      return await exportNameOption(socket, r, hflags, o);
    }
    const name = Buffer.from(o.exportName, 'utf8');
    const body = Buffer.alloc(4 + name.length + 2 + 2);
    body.writeUInt32BE(name.length, 0);
    name.copy(body, 4);
    body.writeUInt16BE(1, 4 + name.length);
    body.writeUInt16BE(P.NBD_INFO_BLOCK_SIZE, 6 + name.length);
    socket.write(Buffer.concat([optionHeader(P.NBD_OPT_GO, body.length), body]));
    let info: NbdExportInfo | null = null;
    let block: [number, number, number] | null = null;
    for (;;) {
      const rep = await readOptReply(r, o.where);
      if (rep.option !== P.NBD_OPT_GO) throw new DroverError('UNAVAILABLE', `NBD server ${o.where} answered option ${rep.option} to NBD_OPT_GO`);
      if (rep.type === P.NBD_REP_INFO) {
        if (rep.data.length < 2) continue;
        const t = rep.data.readUInt16BE(0);
        if (t === P.NBD_INFO_EXPORT && rep.data.length >= 12) {
          info = makeInfo(o.exportName, toSafeSize(rep.data.readBigUInt64BE(2), o.where, o.exportName), rep.data.readUInt16BE(10), 'go');
        } else if (t === P.NBD_INFO_BLOCK_SIZE && rep.data.length >= 14) {
          block = [rep.data.readUInt32BE(2), rep.data.readUInt32BE(6), rep.data.readUInt32BE(10)];
        }
      } else if (rep.type === P.NBD_REP_ACK) {
        if (!info) throw new DroverError('UNAVAILABLE', `NBD server ${o.where} acknowledged NBD_OPT_GO without sending NBD_INFO_EXPORT`);
        if (block) {
          info.minBlockSize = Math.max(1, block[0]);
          info.preferredBlockSize = Math.max(info.minBlockSize, block[1]);
          info.maxPayload = Math.max(info.minBlockSize, Math.min(block[2], 0x7fffffff));
        }
        return info;
      } else if (rep.type === P.NBD_REP_ERR_UNSUP) {
        return await exportNameOption(socket, r, hflags, o);
      } else if (rep.type & P.NBD_REP_FLAG_ERROR) {
        throw optError(rep, 'NBD_OPT_GO', o.where, o.exportName);
      }
      // Unknown non-error reply types are ignored, as the spec asks.
    }
  } finally {
    const rest = r.detach();
    if (rest.length) socket.unshift(rest);
  }
}

/** Runs NBD_OPT_LIST on a connected socket, then NBD_OPT_ABORT; the caller closes the socket. */
export async function listExportsOn(socket: net.Socket, where: string): Promise<NbdExportListEntry[]> {
  const r = new SocketReader(socket);
  try {
    const hflags = await greet(socket, r, where);
    if (!(hflags & P.NBD_FLAG_FIXED_NEWSTYLE)) {
      throw new DroverError('FAILED_PRECONDITION', `NBD server ${where} does not speak fixed newstyle; it cannot list exports`);
    }
    socket.write(optionHeader(P.NBD_OPT_LIST, 0));
    const out: NbdExportListEntry[] = [];
    for (;;) {
      const rep = await readOptReply(r, where);
      if (rep.type === P.NBD_REP_SERVER) {
        const len = rep.data.readUInt32BE(0);
        if (4 + len > rep.data.length) throw new DroverError('UNAVAILABLE', `NBD server ${where} sent a malformed NBD_REP_SERVER`);
        out.push({ name: rep.data.toString('utf8', 4, 4 + len), description: rep.data.toString('utf8', 4 + len) });
      } else if (rep.type === P.NBD_REP_ACK) {
        break;
      } else if (rep.type & P.NBD_REP_FLAG_ERROR) {
        throw optError(rep, 'NBD_OPT_LIST', where, '*');
      }
    }
    socket.write(optionHeader(P.NBD_OPT_ABORT, 0));
    // The server may ACK the abort or simply close; either is fine.
    await Promise.race([readOptReply(r, where).catch(() => undefined), new Promise((res) => setTimeout(res, 200))]);
    return out;
  } finally {
    r.detach();
  }
}
