/**
 * A QMP (QEMU Machine Protocol) client over a unix socket.
 *
 * Protocol: QEMU sends a greeting `{"QMP": {...}}`; the client sends `qmp_capabilities` to leave
 * negotiation mode; then each command `{"execute", "arguments", "id"}` gets exactly one reply
 * `{"return"|"error", "id"}`, and asynchronous `{"event", "data", "timestamp"}` messages arrive
 * in between. One JSON object per line.
 */
import * as net from 'node:net';
import { EventEmitter } from 'node:events';
import { DroverError, unavailable } from '../../lib/errors';

/** One asynchronous QMP event. */
export interface QmpEvent {
  event: string;
  data?: Record<string, unknown>;
  /** Wall-clock ms from QEMU's timestamp. */
  timestampMs: number;
}

interface Pending {
  command: string;
  resolve: (v: unknown) => void;
  reject: (e: DroverError) => void;
}

/** Connected QMP session. Emits 'event' (QmpEvent) and 'close' (Error | undefined). */
export class QmpClient extends EventEmitter {
  private buf = '';
  private nextId = 1;
  private readonly pending = new Map<string, Pending>();
  private closedErr: DroverError | undefined;
  /** QEMU version from the greeting, e.g. "7.2.22". */
  version = '';

  private constructor(private readonly sock: net.Socket, private readonly label: string) {
    super();
  }

  /**
   * Connects to a QMP unix socket, reads the greeting and negotiates capabilities.
   * Retries the connection until `timeoutMs` (QEMU creates the socket shortly after it starts).
   */
  static async connect(path: string, opts: { timeoutMs?: number; label?: string; giveUp?: () => string | undefined } = {}): Promise<QmpClient> {
    const deadline = Date.now() + (opts.timeoutMs ?? 10_000);
    let lastErr: unknown;
    for (;;) {
      try {
        const sock = await new Promise<net.Socket>((resolve, reject) => {
          const s = net.createConnection(path);
          s.once('connect', () => { s.removeListener('error', reject); resolve(s); });
          s.once('error', reject);
        });
        const c = new QmpClient(sock, opts.label ?? path);
        await c.handshake(Math.max(1000, deadline - Date.now()));
        return c;
      } catch (err) {
        lastErr = err;
        if (err instanceof DroverError && err.code !== 'UNAVAILABLE') throw err;
        const why = opts.giveUp?.();
        if (why) throw unavailable(`QMP: cannot connect to ${path}: ${why}`, err);
        if (Date.now() > deadline) break;
        await new Promise((r) => setTimeout(r, 20));
      }
    }
    throw unavailable(`QMP: cannot connect to ${path}: ${(lastErr as Error)?.message ?? lastErr}`, lastErr);
  }

  private handshake(timeoutMs: number): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.sock.destroy();
        reject(unavailable(`QMP ${this.label}: no greeting within ${timeoutMs} ms`));
      }, timeoutMs);
      let greeted = false;
      this.sock.setEncoding('utf8');
      this.sock.on('data', (chunk: string) => {
        this.buf += chunk;
        let nl: number;
        while ((nl = this.buf.indexOf('\n')) >= 0) {
          const line = this.buf.slice(0, nl).trim();
          this.buf = this.buf.slice(nl + 1);
          if (!line) continue;
          let msg: Record<string, unknown>;
          try {
            msg = JSON.parse(line) as Record<string, unknown>;
          } catch {
            continue;
          }
          if (!greeted && 'QMP' in msg) {
            greeted = true;
            const v = (msg.QMP as { version?: { qemu?: { major: number; minor: number; micro: number } } }).version?.qemu;
            if (v) this.version = `${v.major}.${v.minor}.${v.micro}`;
            this.execute('qmp_capabilities').then(() => { clearTimeout(timer); resolve(); }, (e) => { clearTimeout(timer); reject(e); });
            continue;
          }
          this.dispatch(msg);
        }
      });
      this.sock.on('error', (err) => this.fail(unavailable(`QMP ${this.label}: ${err.message}`, err)));
      this.sock.on('close', () => {
        clearTimeout(timer);
        const err = this.closedErr ?? unavailable(`QMP ${this.label}: connection closed (QEMU exited?)`);
        this.fail(err);
        if (!greeted) reject(err);
        this.emit('close', err);
      });
    });
  }

  private dispatch(msg: Record<string, unknown>): void {
    if (typeof msg.event === 'string') {
      const ts = msg.timestamp as { seconds: number; microseconds: number } | undefined;
      const ev: QmpEvent = {
        event: msg.event,
        data: msg.data as Record<string, unknown> | undefined,
        timestampMs: ts ? ts.seconds * 1000 + ts.microseconds / 1000 : Date.now(),
      };
      this.emit('event', ev);
      return;
    }
    const id = msg.id as string | undefined;
    if (id === undefined) return;
    const p = this.pending.get(id);
    if (!p) return;
    this.pending.delete(id);
    if ('error' in msg) {
      const e = msg.error as { class?: string; desc?: string };
      p.reject(new DroverError(mapClass(e.class), `QMP ${p.command} failed: ${e.desc ?? 'unknown error'} (${e.class ?? '?'})`));
    } else {
      p.resolve(msg.return);
    }
  }

  private fail(err: DroverError): void {
    if (!this.closedErr) this.closedErr = err;
    for (const [id, p] of this.pending) {
      this.pending.delete(id);
      p.reject(new DroverError(err.code, `QMP ${p.command}: ${err.message}`, { cause: err }));
    }
  }

  /** Runs one QMP command and resolves with its `return` value; QMP errors become DroverErrors naming the command. */
  execute<T = unknown>(command: string, args?: Record<string, unknown>): Promise<T> {
    if (this.closedErr) return Promise.reject(new DroverError(this.closedErr.code, `QMP ${command}: ${this.closedErr.message}`));
    const id = String(this.nextId++);
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { command, resolve: resolve as (v: unknown) => void, reject });
      const msg: Record<string, unknown> = { execute: command, id };
      if (args) msg.arguments = args;
      this.sock.write(JSON.stringify(msg) + '\n');
    });
  }

  /** Resolves with the first event named `name` for which `pred` holds, or rejects on timeout/close. */
  waitEvent(name: string, timeoutMs: number, pred: (e: QmpEvent) => boolean = () => true): Promise<QmpEvent> {
    return new Promise((resolve, reject) => {
      const onEv = (e: QmpEvent) => {
        if (e.event === name && pred(e)) { cleanup(); resolve(e); }
      };
      const onClose = (err: Error) => { cleanup(); reject(err); };
      const timer = setTimeout(() => { cleanup(); reject(new DroverError('DEADLINE_EXCEEDED', `QMP ${this.label}: no ${name} event within ${timeoutMs} ms`)); }, timeoutMs);
      const cleanup = () => { clearTimeout(timer); this.off('event', onEv); this.off('close', onClose); };
      this.on('event', onEv);
      this.on('close', onClose);
    });
  }

  /** True once the connection has closed. */
  get closed(): boolean {
    return this.closedErr !== undefined;
  }

  /** Closes the connection (QEMU keeps running). */
  close(): void {
    this.sock.destroy();
  }
}

/** QMP error classes → Drover codes. */
function mapClass(cls: string | undefined): DroverError['code'] {
  switch (cls) {
    case 'CommandNotFound': return 'UNIMPLEMENTED';
    case 'DeviceNotFound': return 'NOT_FOUND';
    case 'DeviceNotActive': return 'FAILED_PRECONDITION';
    case 'KVMMissingCap': return 'FAILED_PRECONDITION';
    case 'GenericError':
    default: return 'FAILED_PRECONDITION';
  }
}
