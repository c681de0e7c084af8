/**
 * A pipelined NBD client over TCP (protocol: doc/proto.md of the NetworkBlockDevice project).
 *
 * - Handshake: fixed newstyle with NO_ZEROES, NBD_OPT_GO (+ NBD_INFO_BLOCK_SIZE), fallback to
 *   NBD_OPT_EXPORT_NAME on NBD_REP_ERR_UNSUP (see `nbd-handshake.ts`); `NbdClient.list()` runs
 *   NBD_OPT_LIST.
 * - Transmission: READ, WRITE (optional FUA), FLUSH, TRIM, DISC with simple replies. Any number of
 *   requests may be in flight; replies are matched by their 64-bit handle. Read payloads are
 *   copied straight from socket chunks into the caller's buffer (no per-request concat); write
 *   payloads are handed to the socket without copying, so callers must not modify a buffer until
 *   its write settles. Requests larger than the server's maximum payload are split.
 * - Errors: every failure is a DroverError naming the export, the server, the command, offset and
 *   length. Range errors are INVALID_ARGUMENT before anything is sent; writes to a read-only
 *   export are FAILED_PRECONDITION before anything is sent; server errno values are mapped
 *   (EPERM→PERMISSION_DENIED, EIO→DATA_LOSS, EINVAL/EOVERFLOW→INVALID_ARGUMENT,
 *   ENOSPC/ENOMEM→RESOURCE_EXHAUSTED, ENOTSUP→UNIMPLEMENTED, ESHUTDOWN→UNAVAILABLE).
 * - Reconnect: when the transport fails, the client reconnects with backoff, re-runs the
 *   handshake (checking the export size did not change) and replays every unanswered request.
 *   Replay is idempotent: READ/WRITE/TRIM/FLUSH of the same range with the same data give the
 *   same result when repeated. After `reconnect.attempts` failed attempts the outstanding
 *   requests fail with UNAVAILABLE; a later request starts a fresh reconnect cycle. A reply of
 *   ESHUTDOWN (server going down) is treated like a transport failure: the request is replayed.
 */
import * as net from 'node:net';
import { DroverError, ErrorCode, invalidArgument, unavailable } from '../../lib/errors';
import * as P from './nbd-protocol';
import { NbdExportInfo, NbdExportListEntry, listExportsOn, negotiate } from './nbd-handshake';
import { parseNbdUri } from './nbd-uri';
import { setTimeout as sleep } from 'node:timers/promises';

/** Export metadata and list entries, re-exported from the handshake module. */
export { NbdExportInfo, NbdExportListEntry } from './nbd-handshake';

/** Reconnect policy: bounded attempts with exponential backoff. */
export interface NbdReconnectOptions {
  /** Attempts per reconnect cycle before outstanding requests fail (default 5; 0 disables). */
  attempts?: number;
  /** Delay before the second attempt; doubles each attempt (default 50 ms; the first is immediate). */
  baseDelayMs?: number;
  /** Cap on the delay between attempts (default 1000 ms). */
  maxDelayMs?: number;
}

/** How to reach an export. */
export interface NbdClientOptions {
  /** Server host (ignored when `socketPath` is set). */
  host: string;
  /** Connect to a Unix-domain socket instead of TCP (e.g. `qemu-nbd -k path`). */
  socketPath?: string;
  /** Server port (default 10809). */
  port?: number;
  /** Export name. */
  exportName: string;
  /** TCP connect + handshake timeout (default 5000 ms). */
  connectTimeoutMs?: number;
  /** Reconnect policy on transport failures. */
  reconnect?: NbdReconnectOptions;
  /** Handshake method; default 'go' (falls back to export-name automatically). */
  method?: 'go' | 'export-name';
}

/** Options of a write. */
export interface NbdWriteOptions {
  /** Force unit access: the data is durable when the promise resolves (emulated by WRITE+FLUSH if the server lacks FUA). */
  fua?: boolean;
}

/** A failed NBD request, carrying the server's errno and what was asked. */
export class NbdRequestError extends DroverError {
  /** The NBD errno the server replied with (0 for client-side failures). */
  readonly errno: number;
  /** The command name (READ, WRITE, FLUSH, TRIM). */
  readonly command: string;
  /** Byte offset of the request. */
  readonly offset: number;
  /** Byte length of the request. */
  readonly length: number;

  /** Builds the error; `message` already names export, command and range. */
  constructor(code: ErrorCode, message: string, errno: number, command: string, offset: number, length: number, cause?: unknown) {
    super(code, message, { cause });
    this.name = 'NbdRequestError';
    this.errno = errno;
    this.command = command;
    this.offset = offset;
    this.length = length;
  }
}

function errnoCode(errno: number): ErrorCode {
  switch (errno) {
    case 1: return 'PERMISSION_DENIED';
    case 5: return 'DATA_LOSS';
    case 12: case 28: return 'RESOURCE_EXHAUSTED';
    case 22: case 75: return 'INVALID_ARGUMENT';
    case 95: return 'UNIMPLEMENTED';
    case 108: return 'UNAVAILABLE';
    default: return 'INTERNAL';
  }
}

interface Req {
  handle: number;
  cmd: number;
  flags: number;
  offset: number;
  length: number;
  /** WRITE payload (kept for replay). */
  data: Uint8Array | null;
  /** READ destination. */
  target: Uint8Array | null;
  resolve: () => void;
  reject: (e: Error) => void;
}

const TWO32 = 0x1_0000_0000;

/** One TCP connection in transmission phase: sends requests and parses simple replies. */
class Conn {
  private readonly hdr = Buffer.alloc(P.NBD_SIMPLE_REPLY_SIZE);
  private hdrFill = 0;
  private payloadReq: Req | null = null;
  private payloadDone = 0;
  private corked = false;
  dead = false;

  constructor(
    readonly socket: net.Socket,
    private readonly inflight: Map<number, Req>,
    private readonly onReply: (req: Req, errno: number) => void,
    private readonly onDead: (conn: Conn, err: Error) => void,
  ) {
    socket.on('data', (c: Buffer) => this.onData(c));
    socket.on('error', (e) => this.die(e));
    socket.on('close', () => this.die(new Error('connection closed')));
    socket.on('end', () => this.die(new Error('server closed the connection')));
    socket.resume();
  }

  private readonly uncork = () => { this.corked = false; if (!this.dead) this.socket.uncork(); };

  send(req: Req): void {
    if (this.dead) return;
    const h = Buffer.allocUnsafe(P.NBD_REQUEST_SIZE);
    h.writeUInt32BE(P.NBD_REQUEST_MAGIC, 0);
    h.writeUInt16BE(req.flags, 4);
    h.writeUInt16BE(req.cmd, 6);
    h.writeUInt32BE(Math.floor(req.handle / TWO32), 8);
    h.writeUInt32BE(req.handle >>> 0, 12);
    h.writeUInt32BE(Math.floor(req.offset / TWO32), 16);
    h.writeUInt32BE(req.offset >>> 0, 20);
    h.writeUInt32BE(req.length, 24);
    if (!this.corked) { this.corked = true; this.socket.cork(); process.nextTick(this.uncork); }
    this.socket.write(h);
    if (req.data) this.socket.write(req.data);
  }

  sendDisc(): void {
    const h = Buffer.alloc(P.NBD_REQUEST_SIZE);
    h.writeUInt32BE(P.NBD_REQUEST_MAGIC, 0);
    h.writeUInt16BE(P.NBD_CMD_DISC, 6);
    this.socket.write(h);
  }

  die(err: Error): void {
    if (this.dead) return;
    this.dead = true;
    this.socket.destroy();
    this.onDead(this, err);
  }

  private onData(c: Buffer): void {
    let pos = 0;
    const n = c.length;
    while (pos < n && !this.dead) {
      const pr = this.payloadReq;
      if (pr) {
        const want = pr.length - this.payloadDone;
        const take = Math.min(want, n - pos);
        const t = pr.target!;
        t.set(c.subarray(pos, pos + take), this.payloadDone);
        pos += take;
        this.payloadDone += take;
        if (this.payloadDone === pr.length) {
          this.payloadReq = null;
          this.onReply(pr, 0);
        }
        continue;
      }
      let h: Buffer;
      let at: number;
      if (this.hdrFill === 0 && n - pos >= P.NBD_SIMPLE_REPLY_SIZE) {
        h = c; at = pos; pos += P.NBD_SIMPLE_REPLY_SIZE;
      } else {
        const take = Math.min(P.NBD_SIMPLE_REPLY_SIZE - this.hdrFill, n - pos);
        c.copy(this.hdr, this.hdrFill, pos, pos + take);
        this.hdrFill += take;
        pos += take;
        if (this.hdrFill < P.NBD_SIMPLE_REPLY_SIZE) return;
        this.hdrFill = 0;
        h = this.hdr; at = 0;
      }
      const magic = h.readUInt32BE(at);
      if (magic !== P.NBD_SIMPLE_REPLY_MAGIC) {
        this.die(new Error(`protocol error: bad reply magic 0x${magic.toString(16)}`));
        return;
      }
      const errno = h.readUInt32BE(at + 4);
      const handle = h.readUInt32BE(at + 8) * TWO32 + h.readUInt32BE(at + 12);
      const req = this.inflight.get(handle);
      if (!req) {
        this.die(new Error(`protocol error: reply for unknown handle ${handle}`));
        return;
      }
      if (errno === 0 && req.cmd === P.NBD_CMD_READ && req.length > 0) {
        this.payloadReq = req;
        this.payloadDone = 0;
      } else {
        this.onReply(req, errno);
      }
    }
  }
}

type State = 'ready' | 'reconnecting' | 'failed' | 'closed';


/** Opens a TCP (or Unix-socket) connection with a timeout; errors are UNAVAILABLE naming the address. */
function dial(host: string, port: number, timeoutMs: number, socketPath = ''): Promise<net.Socket> {
  const where = socketPath ? `unix:${socketPath}` : `${host}:${port}`;
  return new Promise((resolve, reject) => {
    const s = socketPath ? net.connect({ path: socketPath }) : net.connect({ host, port });
    const t = setTimeout(() => { s.destroy(); reject(unavailable(`NBD server ${where}: connect timed out after ${timeoutMs} ms`)); }, timeoutMs);
    s.once('connect', () => {
      clearTimeout(t); s.off('error', onErr);
      if (!socketPath) { s.setNoDelay(true); s.setKeepAlive(true, 10_000); }
      resolve(s);
    });
    const onErr = (e: Error) => { clearTimeout(t); reject(unavailable(`NBD server ${where} unreachable: ${e.message}`, e)); };
    s.once('error', onErr);
  });
}

/** A connected NBD export. Create with `NbdClient.connect()` or `NbdClient.connectUri()`. */
export class NbdClient {
  private conn: Conn | null = null;
  private state: State = 'ready';
  private nextHandle = 1;
  private readonly inflight = new Map<number, Req>();
  private idleWaiters: Array<() => void> = [];
  private reconnecting: Promise<void> | null = null;
  private _info: NbdExportInfo;
  /** Number of successful reconnects so far. */
  reconnects = 0;

  private constructor(private readonly opts: Required<Omit<NbdClientOptions, 'reconnect'>> & { reconnect: Required<NbdReconnectOptions> }, info: NbdExportInfo, socket: net.Socket) {
    this._info = info;
    this.install(socket);
  }

  /** Connects, negotiates and returns a client ready for I/O (NOT_FOUND for an unknown export). */
  static async connect(o: NbdClientOptions): Promise<NbdClient> {
    if (!o || ((typeof o.host !== 'string' || o.host === '') && !o.socketPath)) throw invalidArgument('NBD client: host (or socketPath) is required');
    if (typeof o.exportName !== 'string') throw invalidArgument('NBD client: exportName is required');
    const port = o.port ?? 10809;
    if (!Number.isInteger(port) || port < 1 || port > 65535) throw invalidArgument(`NBD client: port ${port} is not in 1..65535`);
    const full = {
      host: o.host, port, exportName: o.exportName, socketPath: o.socketPath ?? '',
      connectTimeoutMs: o.connectTimeoutMs ?? 5000,
      method: o.method ?? 'go',
      reconnect: { attempts: o.reconnect?.attempts ?? 5, baseDelayMs: o.reconnect?.baseDelayMs ?? 50, maxDelayMs: o.reconnect?.maxDelayMs ?? 1000 },
    } as const;
    const { socket, info } = await NbdClient.open(full);
    return new NbdClient(full, info, socket);
  }

  /** Connects to an `nbd://host:port/export` URI. */
  static connectUri(uri: string, o: Omit<NbdClientOptions, 'host' | 'port' | 'exportName'> = {}): Promise<NbdClient> {
    const a = parseNbdUri(uri);
    return NbdClient.connect({ ...o, host: a.host, port: a.port, exportName: a.exportName });
  }

  /** Lists the server's exports with NBD_OPT_LIST (`host` may be `unix:/path`). */
  static async list(host: string, port = 10809, timeoutMs = 5000): Promise<NbdExportListEntry[]> {
    const socketPath = host.startsWith('unix:') ? host.slice(5) : '';
    const where = socketPath ? host : `${host}:${port}`;
    const s = await dial(host, port, timeoutMs, socketPath);
    const t = setTimeout(() => s.destroy(new Error(`NBD_OPT_LIST timed out after ${timeoutMs} ms`)), timeoutMs);
    try {
      return await listExportsOn(s, where);
    } catch (err) {
      throw err instanceof DroverError ? err : unavailable(`NBD server ${where}: listing exports failed: ${(err as Error).message}`, err);
    } finally {
      clearTimeout(t);
      s.destroy();
    }
  }

  private static async open(o: NbdClient['opts']): Promise<{ socket: net.Socket; info: NbdExportInfo }> {
    const where = o.socketPath ? `unix:${o.socketPath}` : `${o.host}:${o.port}`;
    const s = await dial(o.host, o.port, o.connectTimeoutMs, o.socketPath);
    const t = setTimeout(() => s.destroy(new Error(`handshake timed out after ${o.connectTimeoutMs} ms`)), o.connectTimeoutMs);
    try {
      const info = await negotiate(s, { exportName: o.exportName, method: o.method, where });
      return { socket: s, info };
    } catch (err) {
      s.destroy();
      if (err instanceof DroverError) throw err;
      throw unavailable(`NBD server ${where}: handshake for export "${o.exportName}" failed: ${(err as Error).message}`, err);
    } finally {
      clearTimeout(t);
    }
  }

  /** What the server said about the export (size, flags, block sizes). */
  get info(): NbdExportInfo { return this._info; }

  /** Export size in bytes. */
  get size(): number { return this._info.size; }

  /** Export name. */
  get exportName(): string { return this.opts.exportName; }

  /** Number of requests sent and not yet answered. */
  get inFlight(): number { return this.inflight.size; }

  /** "export "name" on host:port", for messages. */
  private get label(): string {
    return `NBD export "${this.opts.exportName}" on ${this.opts.socketPath ? `unix:${this.opts.socketPath}` : `${this.opts.host}:${this.opts.port}`}`;
  }

  /** Reads `length` bytes at `offset` into a new buffer. */
  async read(offset: number, length: number): Promise<Buffer> {
    const b = Buffer.allocUnsafe(length >= 0 && Number.isSafeInteger(length) ? length : 0);
    this.checkRange('READ', offset, length);
    await this.readInto(offset, b);
    return b;
  }

  /** Reads `target.length` bytes at `offset` straight into `target`. */
  async readInto(offset: number, target: Uint8Array): Promise<void> {
    this.checkRange('READ', offset, target.length);
    if (target.length === 0) return;
    const max = this.maxChunk();
    if (target.length <= max) return this.submit(P.NBD_CMD_READ, 0, offset, target.length, null, target);
    const parts: Promise<void>[] = [];
    for (let o = 0; o < target.length; o += max) {
      const len = Math.min(max, target.length - o);
      parts.push(this.submit(P.NBD_CMD_READ, 0, offset + o, len, null, target.subarray(o, o + len)));
    }
    await Promise.all(parts);
  }

  /** Writes `data` at `offset`; with `{fua: true}` the data is durable when this resolves. */
  async write(offset: number, data: Uint8Array, o: NbdWriteOptions = {}): Promise<void> {
    this.checkRange('WRITE', offset, data.length);
    this.checkWritable('WRITE', offset, data.length);
    if (data.length === 0) return;
    const fuaNative = !!o.fua && this._info.canFua;
    const flags = fuaNative ? P.NBD_CMD_FLAG_FUA : 0;
    const max = this.maxChunk();
    if (data.length <= max) {
      await this.submit(P.NBD_CMD_WRITE, flags, offset, data.length, data, null);
    } else {
      const parts: Promise<void>[] = [];
      for (let i = 0; i < data.length; i += max) {
        const len = Math.min(max, data.length - i);
        parts.push(this.submit(P.NBD_CMD_WRITE, flags, offset + i, len, data.subarray(i, i + len), null));
      }
      await Promise.all(parts);
    }
    if (o.fua && !fuaNative) await this.flush();
  }

  /** Asks the server to make all completed writes durable (no-op if the server has no FLUSH). */
  flush(): Promise<void> {
    if (!this._info.canFlush) return Promise.resolve();
    return this.submit(P.NBD_CMD_FLUSH, 0, 0, 0, null, null);
  }

  /** Hints that a range is no longer needed; its contents are undefined until rewritten (no-op if unsupported). */
  async trim(offset: number, length: number): Promise<void> {
    this.checkRange('TRIM', offset, length);
    this.checkWritable('TRIM', offset, length);
    if (!this._info.canTrim || length === 0) return;
    const max = 0xffffffff - (0xffffffff % this._info.minBlockSize);
    const parts: Promise<void>[] = [];
    for (let o = 0; o < length; o += max) parts.push(this.submit(P.NBD_CMD_TRIM, 0, offset + o, Math.min(max, length - o), null, null));
    await Promise.all(parts);
  }

  /** Resolves when no request is in flight. */
  drain(): Promise<void> {
    if (this.inflight.size === 0) return Promise.resolve();
    return new Promise((r) => this.idleWaiters.push(r));
  }

  /** Waits for in-flight requests, sends NBD_CMD_DISC and closes the connection. */
  async close(): Promise<void> {
    if (this.state === 'closed') return;
    await this.drain().catch(() => undefined);
    this.state = 'closed';
    const c = this.conn;
    this.conn = null;
    if (c && !c.dead) {
      c.dead = true;
      await new Promise<void>((res) => {
        c.socket.once('close', () => res());
        try { c.sendDisc(); c.socket.end(); } catch { c.socket.destroy(); }
        setTimeout(() => { c.socket.destroy(); }, 1000).unref();
      });
    }
    this.failAll((r) => unavailable(`${this.label}: client closed before ${P.NBD_CMD_NAMES[r.cmd]} completed`));
  }

  /** Drops the connection at once; outstanding requests fail with UNAVAILABLE. */
  destroy(): void {
    this.state = 'closed';
    const c = this.conn;
    this.conn = null;
    if (c) { c.dead = true; c.socket.destroy(); }
    this.failAll((r) => unavailable(`${this.label}: client destroyed before ${P.NBD_CMD_NAMES[r.cmd]} offset ${r.offset} length ${r.length} completed`));
  }

  private maxChunk(): number {
    const m = this._info.maxPayload;
    return m - (m % this._info.minBlockSize);
  }

  private checkRange(cmd: string, offset: number, length: number): void {
    if (!Number.isSafeInteger(offset) || offset < 0) throw new NbdRequestError('INVALID_ARGUMENT', `${this.label}: ${cmd} offset ${offset} is not a non-negative integer`, 0, cmd, offset, length);
    if (!Number.isSafeInteger(length) || length < 0) throw new NbdRequestError('INVALID_ARGUMENT', `${this.label}: ${cmd} length ${length} is not a non-negative integer`, 0, cmd, offset, length);
    if (offset + length > this._info.size) {
      throw new NbdRequestError('INVALID_ARGUMENT', `${this.label}: ${cmd} offset ${offset} length ${length} ends at ${offset + length}, beyond the export size ${this._info.size}`, 0, cmd, offset, length);
    }
    const mb = this._info.minBlockSize;
    if (mb > 1 && (offset % mb !== 0 || length % mb !== 0)) {
      throw new NbdRequestError('INVALID_ARGUMENT', `${this.label}: ${cmd} offset ${offset} length ${length} is not aligned to the server's minimum block size ${mb}`, 0, cmd, offset, length);
    }
    if (this.state === 'closed') throw new NbdRequestError('FAILED_PRECONDITION', `${this.label}: client is closed`, 0, cmd, offset, length);
  }

  private checkWritable(cmd: string, offset: number, length: number): void {
    if (this._info.readOnly) {
      throw new NbdRequestError('FAILED_PRECONDITION', `${this.label} is read-only: ${cmd} offset ${offset} length ${length} refused`, 0, cmd, offset, length);
    }
  }

  private submit(cmd: number, flags: number, offset: number, length: number, data: Uint8Array | null, target: Uint8Array | null): Promise<void> {
    if (this.state === 'closed') return Promise.reject(unavailable(`${this.label}: client is closed`));
    return new Promise<void>((resolve, reject) => {
      const req: Req = { handle: this.nextHandle++, cmd, flags, offset, length, data, target, resolve, reject };
      this.inflight.set(req.handle, req);
      if (this.state === 'ready' && this.conn) this.conn.send(req);
      else if (this.state === 'failed') this.startReconnect();
      // 'reconnecting': replayed once the new connection is up.
    });
  }

  private install(socket: net.Socket): void {
    this.conn = new Conn(socket, this.inflight, (req, errno) => this.complete(req, errno), (c, err) => this.onConnDead(c, err));
  }

  private complete(req: Req, errno: number): void {
    if (errno === 108 && this.opts.reconnect.attempts > 0 && this.conn) {
      // ESHUTDOWN: the server is going away; keep the request and replay it after reconnecting.
      this.conn.die(new Error('server is shutting down (ESHUTDOWN)'));
      return;
    }
    this.inflight.delete(req.handle);
    if (errno === 0) {
      req.resolve();
    } else {
      const cmd = P.NBD_CMD_NAMES[req.cmd] ?? String(req.cmd);
      const [name, meaning] = P.NBD_ERRNO[errno] ?? [`errno ${errno}`, 'unknown error'];
      const range = req.cmd === P.NBD_CMD_FLUSH ? '' : ` offset ${req.offset} length ${req.length}`;
      const ro = errno === 1 && req.cmd !== P.NBD_CMD_READ ? ' (is the export read-only?)' : '';
      req.reject(new NbdRequestError(errnoCode(errno), `${this.label}: ${cmd}${range} failed: ${name} (${meaning})${ro}`, errno, cmd, req.offset, req.length));
    }
    if (this.inflight.size === 0 && this.idleWaiters.length) {
      const w = this.idleWaiters;
      this.idleWaiters = [];
      for (const f of w) f();
    }
  }

  private failAll(mk: (r: Req) => Error): void {
    const reqs = [...this.inflight.values()];
    this.inflight.clear();
    for (const r of reqs) r.reject(mk(r));
    const w = this.idleWaiters;
    this.idleWaiters = [];
    for (const f of w) f();
  }

  private onConnDead(c: Conn, err: Error): void {
    if (c !== this.conn) return;
    this.conn = null;
    if (this.state === 'closed') return;
    this.state = 'failed';
    this.lastError = err;
    if (this.inflight.size > 0) this.startReconnect();
  }

  private lastError: Error | null = null;

  private startReconnect(): void {
    if (this.reconnecting) return;
    this.state = 'reconnecting';
    this.reconnecting = this.reconnectLoop().finally(() => { this.reconnecting = null; });
  }

  private async reconnectLoop(): Promise<void> {
    const rc = this.opts.reconnect;
    let lastErr: unknown = this.lastError;
    for (let attempt = 1; attempt <= rc.attempts; attempt++) {
      if (attempt > 1) await sleep(Math.min(rc.maxDelayMs, rc.baseDelayMs * 2 ** (attempt - 2)));
      if (this.state === 'closed') return;
      try {
        const { socket, info } = await NbdClient.open(this.opts);
        if ((this.state as State) === 'closed') { socket.destroy(); return; }
        if (info.size !== this._info.size) {
          socket.destroy();
          const e = new DroverError('DATA_LOSS', `${this.label}: export size changed from ${this._info.size} to ${info.size} across a reconnect`);
          this.state = 'failed';
          this.failAll(() => e);
          return;
        }
        this._info = { ...info, negotiatedWith: info.negotiatedWith };
        this.install(socket);
        this.state = 'ready';
        this.reconnects++;
        for (const r of this.inflight.values()) this.conn!.send(r);
        return;
      } catch (err) {
        lastErr = err;
      }
    }
    this.state = 'failed';
    const why = lastErr instanceof Error ? lastErr.message : String(lastErr);
    const cause = this.lastError ? `after the connection failed (${this.lastError.message})` : '';
    this.failAll((r) => {
      const range = r.cmd === P.NBD_CMD_FLUSH ? '' : ` offset ${r.offset} length ${r.length}`;
      return new NbdRequestError('UNAVAILABLE', `${this.label}: ${P.NBD_CMD_NAMES[r.cmd]}${range} failed: server unreachable ${cause}; ${rc.attempts} reconnect attempts failed, last: ${why}`, 0, P.NBD_CMD_NAMES[r.cmd], r.offset, r.length, lastErr);
    });
  }
}
