/**
 * Local NBD servers (used by `drover bench --disk auto`, the benchmarks and the tests): Debian's `nbd-server` (reference implementation)
 * and QEMU's `qemu-nbd`, each started in the foreground on a free loopback port with named
 * exports backed by files in a temporary directory.
 *
 * - `startNbdServer({exports})` writes a config file (`[generic]` + one section per export) and
 *   runs `nbd-server -C conf -p pidfile`. (Its `-d` no-fork mode serves one client in-process
 *   and exits when any negotiation fails, so the server runs as its own daemon, forking a child
 *   per client, and is tracked by PID file and process group.)
 * - `startQemuNbd({export})` runs `qemu-nbd -f raw|qcow2 -x name -b host -p port --persistent
 *   --shared=N file` (one export per process).
 * Both resolve once the server answers with its NBD greeting. The returned handle can stop,
 * kill (SIGKILL), pause (SIGSTOP) / resume and restart the server on the same port with the same
 * files, which is what the failure tests need. Every started process is killed when the calling
 * process exits.
 */
import { ChildProcess, spawn, execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import { freePort } from '../../lib/free-port';
import * as os from 'node:os';
import * as path from 'node:path';
import { withoutAgentTuning } from '../../lib/malloc-tuning';

/** One export to serve. */
export interface LocalExportSpec {
  /** Export name clients ask for. */
  name: string;
  /** Size in bytes for a newly created backing file (default 16 MiB). */
  size?: number;
  /** Serve read-only. */
  readOnly?: boolean;
  /** Use this existing file instead of creating one. */
  file?: string;
  /** Image format (qemu-nbd only; nbd-server serves raw). Default 'raw'. */
  format?: 'raw' | 'qcow2';
}

/** A served export as started. */
export interface ServedExport {
  /** Export name. */
  name: string;
  /** Backing file path. */
  file: string;
  /** Virtual size in bytes. */
  size: number;
  /** Served read-only. */
  readOnly: boolean;
  /** Image format. */
  format: 'raw' | 'qcow2';
}

/** A running (or stopped, restartable) test NBD server. */
export interface LocalNbdServer {
  /** Which implementation. */
  readonly kind: 'nbd-server' | 'qemu-nbd';
  /** Listening address. */
  readonly host: string;
  /** Listening port (kept across restarts; 0 when serving on a Unix socket). */
  readonly port: number;
  /** Unix socket path when serving on one (qemu-nbd `unixSocket: true`), else undefined. */
  readonly socketPath?: string;
  /** Temporary directory holding the backing files and config. */
  readonly dir: string;
  /** The exports served. */
  readonly exports: readonly ServedExport[];
  /** PID of the current server process, if running. */
  readonly pid: number | undefined;
  /** `nbd://host:port/name` for an export (default: the first); `nbd+unix:///name?socket=path` on a Unix socket. */
  uri(name?: string): string;
  /** Backing file of an export (default: the first). */
  file(name?: string): string;
  /** SIGTERM and wait for exit; files are kept. */
  stop(): Promise<void>;
  /** SIGKILL and wait for exit; files are kept. */
  kill(): Promise<void>;
  /** SIGSTOP: the server keeps its sockets but stops answering. */
  pause(): void;
  /** SIGCONT after `pause()`. */
  resume(): void;
  /** Starts the server again on the same port with the same files (after stop/kill). */
  restart(): Promise<void>;
  /** Stops the server and removes the temporary directory. */
  dispose(): Promise<void>;
}

/** Common start options. */
export interface StartOptions {
  /** Port to listen on (default: a free one). */
  port?: number;
  /** Address to listen on (default 127.0.0.1). */
  host?: string;
  /** Directory for files (default: a fresh temp dir, removed by dispose()). */
  dir?: string;
  /** How long to wait for the greeting (default 10 s). */
  readyTimeoutMs?: number;
}

const live = new Set<number>();
process.once('exit', () => { for (const pid of live) { try { process.kill(-pid, 'SIGKILL'); } catch { /* gone */ } } });

function procAlive(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}

function killGroup(pid: number, sig: NodeJS.Signals): void {
  try { process.kill(-pid, sig); } catch { try { process.kill(pid, sig); } catch { /* gone */ } }
}

/** Finds a free TCP port on `host` by binding port 0. */
export { freePort };

/** Resolves once a server at host:port (or Unix socket `socketPath`) sends the NBD greeting ("NBDMAGIC"); rejects after the timeout. */
export async function waitForNbd(host: string, port: number, timeoutMs = 10_000, isDead?: () => string | null, socketPath?: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < deadline) {
    const dead = isDead?.();
    if (dead) throw new Error(dead);
    const ok = await new Promise<boolean>((resolve) => {
      const s = socketPath ? net.connect({ path: socketPath }) : net.connect({ host, port });
      let got = Buffer.alloc(0);
      const t = setTimeout(() => { s.destroy(); resolve(false); }, 1000);
      s.on('data', (c: Buffer) => {
        got = Buffer.concat([got, c]);
        if (got.length >= 8) { clearTimeout(t); s.destroy(); resolve(got.subarray(0, 8).toString('latin1') === 'NBDMAGIC'); }
      });
      s.on('error', (e) => { last = e.message; clearTimeout(t); resolve(false); });
      s.on('close', () => { clearTimeout(t); resolve(false); });
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`NBD server on ${socketPath ? `unix:${socketPath}` : `${host}:${port}`} did not answer within ${timeoutMs} ms (${last})`);
}

function makeFile(dir: string, e: LocalExportSpec): ServedExport {
  const size = e.size ?? 16 * 1024 * 1024;
  const format = e.format ?? 'raw';
  let file = e.file;
  if (!file) {
    file = path.join(dir, `${e.name.replace(/[^A-Za-z0-9_.-]/g, '_')}.${format === 'qcow2' ? 'qcow2' : 'img'}`);
    if (format === 'qcow2') execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', file, String(size)]);
    else { fs.writeFileSync(file, ''); fs.truncateSync(file, size); }
  }
  return { name: e.name, file, size, readOnly: !!e.readOnly, format };
}

class Server implements LocalNbdServer {
  private procPid: number | undefined;
  private child: ChildProcess | null = null;
  private output = '';

  constructor(
    readonly kind: 'nbd-server' | 'qemu-nbd',
    readonly host: string,
    readonly port: number,
    readonly dir: string,
    readonly exports: readonly ServedExport[],
    private readonly cmd: string,
    private readonly args: string[],
    private readonly ownsDir: boolean,
    private readonly readyTimeoutMs: number,
    /** When set, the command daemonizes and writes its PID here (nbd-server without -d). */
    private readonly pidFile?: string,
    readonly socketPath?: string,
  ) {}

  get pid(): number | undefined { return this.procPid !== undefined && this.alive() ? this.procPid : undefined; }

  uri(name?: string): string {
    if (this.socketPath) return `nbd+unix:///${encodeURIComponent(this.pick(name).name)}?socket=${this.socketPath}`;
    return `nbd://${this.host}:${this.port}/${encodeURIComponent(this.pick(name).name)}`;
  }

  file(name?: string): string { return this.pick(name).file; }

  private pick(name?: string): ServedExport {
    const e = name === undefined ? this.exports[0] : this.exports.find((x) => x.name === name);
    if (!e) throw new Error(`test server has no export "${name}"`);
    return e;
  }

  private alive(): boolean {
    if (this.procPid === undefined) return false;
    if (this.child && this.child.pid === this.procPid) return this.child.exitCode === null && this.child.signalCode === null;
    return procAlive(this.procPid);
  }

  async start(): Promise<void> {
    if (this.alive()) return;
    this.output = '';
    if (this.pidFile) fs.rmSync(this.pidFile, { force: true });
    const c = spawn(this.cmd, this.args, { stdio: ['ignore', 'pipe', 'pipe'], detached: true, env: withoutAgentTuning() });
    this.child = c;
    const collect = (d: Buffer) => { this.output = (this.output + d.toString()).slice(-4000); };
    c.stdout!.on('data', collect);
    c.stderr!.on('data', collect);
    const exited = new Promise<string>((resolve) => {
      c.once('exit', (code, sig) => resolve(`${this.kind} exited (code ${code}, signal ${sig})`));
      c.once('error', (e) => resolve(`${this.kind} failed to start: ${e.message}`));
    });
    try {
      if (this.pidFile) {
        const how = await exited;
        if (c.exitCode !== 0) throw new Error(how);
        const deadline = Date.now() + this.readyTimeoutMs;
        while (!fs.existsSync(this.pidFile) || fs.readFileSync(this.pidFile, 'utf8').trim() === '') {
          if (Date.now() > deadline) throw new Error(`no PID file ${this.pidFile}`);
          await new Promise((r) => setTimeout(r, 10));
        }
        this.procPid = Number(fs.readFileSync(this.pidFile, 'utf8').trim());
      } else {
        if (c.pid === undefined) throw new Error(await exited);
        this.procPid = c.pid;
      }
      live.add(this.procPid);
      await waitForNbd(this.host, this.port, this.readyTimeoutMs, () => (this.alive() ? null : `${this.kind} is not running`), this.socketPath);
    } catch (err) {
      await this.kill();
      throw new Error(`${this.kind} ${this.args.join(' ')} did not start: ${(err as Error).message}; output: ${this.output.trim()}`);
    }
  }

  private async waitGone(ms: number): Promise<boolean> {
    const deadline = Date.now() + ms;
    while (this.alive()) {
      if (Date.now() > deadline) return false;
      await new Promise((r) => setTimeout(r, 10));
    }
    return true;
  }

  async stop(): Promise<void> {
    const pid = this.procPid;
    if (pid === undefined) return;
    killGroup(pid, 'SIGCONT');
    try { process.kill(pid, 'SIGTERM'); } catch { /* gone */ }
    if (!(await this.waitGone(3000))) killGroup(pid, 'SIGKILL');
    killGroup(pid, 'SIGKILL'); // per-client children of nbd-server
    await this.waitGone(3000);
    live.delete(pid);
    this.procPid = undefined;
  }

  async kill(): Promise<void> {
    const pid = this.procPid;
    if (pid === undefined) return;
    killGroup(pid, 'SIGKILL');
    await this.waitGone(3000);
    live.delete(pid);
    this.procPid = undefined;
  }

  pause(): void { if (this.procPid !== undefined) killGroup(this.procPid, 'SIGSTOP'); }

  resume(): void { if (this.procPid !== undefined) killGroup(this.procPid, 'SIGCONT'); }

  async restart(): Promise<void> {
    await this.stop();
    await this.start();
  }

  async dispose(): Promise<void> {
    await this.kill();
    if (this.ownsDir) fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Options of `startNbdServer`. */
export interface NbdServerOptions extends StartOptions {
  /** Exports to serve (each becomes a config section named after it). */
  exports: LocalExportSpec[];
  /** Allow NBD_OPT_LIST (default true). */
  allowList?: boolean;
  /** Run as this user (config `user=`); the backing files are chowned to it. */
  user?: string;
  /** Worker threads (config `max_threads`, default nbd-server's own). */
  maxThreads?: number;
}

/** Starts Debian's nbd-server in the foreground with a generated config file. */
export async function startNbdServer(o: NbdServerOptions): Promise<LocalNbdServer> {
  const host = o.host ?? '127.0.0.1';
  const port = o.port ?? await freePort(host);
  const ownsDir = !o.dir;
  const dir = o.dir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'drover-nbd-server-'));
  if (o.exports.length === 0) throw new Error('startNbdServer: at least one export is needed');
  const exports = o.exports.map((e) => {
    if (e.format && e.format !== 'raw') throw new Error('startNbdServer: nbd-server serves raw files only');
    return makeFile(dir, e);
  });
  const lines = ['[generic]', `port = ${port}`, `listenaddr = ${host}`, `allowlist = ${o.allowList === false ? 'false' : 'true'}`];
  if (o.user) lines.push(`user = ${o.user}`);
  if (o.maxThreads) lines.push(`max_threads = ${o.maxThreads}`);
  for (const e of exports) {
    if (!/^[A-Za-z0-9_.-]+$/.test(e.name) || e.name === 'generic') throw new Error(`startNbdServer: export name "${e.name}" cannot be a config section`);
    lines.push(`[${e.name}]`, `exportname = ${e.file}`, 'flush = true', 'fua = true', 'trim = true');
    if (e.readOnly) lines.push('readonly = true');
    if (o.user) execFileSync('chown', [o.user, e.file]);
  }
  const conf = path.join(dir, 'nbd-server.conf');
  fs.writeFileSync(conf, lines.join('\n') + '\n');
  // nbd-server's -d (no fork) serves a single client in-process and exits when a negotiation
  // fails, so it runs as a daemon (one child per client) and is tracked through its PID file;
  // it is a session leader, so signals go to its whole process group.
  const pidFile = path.join(dir, 'nbd-server.pid');
  const s = new Server('nbd-server', host, port, dir, exports, 'nbd-server', ['-C', conf, '-p', pidFile], ownsDir, o.readyTimeoutMs ?? 10_000, pidFile);
  await s.start();
  return s;
}

/** Options of `startQemuNbd`. */
export interface QemuNbdOptions extends StartOptions {
  /** The one export to serve. */
  export: LocalExportSpec;
  /** Concurrent clients allowed (`--shared`, default 8). */
  shared?: number;
  /** Cache mode (`--cache`, default qemu-nbd's own: writeback). */
  cache?: 'none' | 'writeback' | 'writethrough' | 'directsync' | 'unsafe';
  /** AIO mode (`--aio`). */
  aio?: 'threads' | 'native' | 'io_uring';
  /** Listen on a Unix socket in the temp dir (`-k`) instead of TCP. */
  unixSocket?: boolean;
}

/** Starts qemu-nbd in the foreground (persistent, shared) serving one export. */
export async function startQemuNbd(o: QemuNbdOptions): Promise<LocalNbdServer> {
  const host = o.host ?? '127.0.0.1';
  const port = o.unixSocket ? 0 : o.port ?? await freePort(host);
  const ownsDir = !o.dir;
  const dir = o.dir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'drover-qemu-nbd-'));
  const e = makeFile(dir, o.export);
  const sock = o.unixSocket ? path.join(dir, `qemu-nbd-${process.pid}-${Date.now()}.sock`) : undefined;
  const where = sock ? ['-k', sock] : ['-b', host, '-p', String(port)];
  const args = ['-f', e.format, '-x', e.name, ...where, '--persistent', `--shared=${o.shared ?? 8}`];
  if (e.readOnly) args.push('-r');
  if (o.cache) args.push(`--cache=${o.cache}`);
  if (o.aio) args.push(`--aio=${o.aio}`);
  args.push(e.file);
  const s = new Server('qemu-nbd', host, port, dir, [e], 'qemu-nbd', args, ownsDir, o.readyTimeoutMs ?? 10_000, undefined, sock);
  await s.start();
  return s;
}
