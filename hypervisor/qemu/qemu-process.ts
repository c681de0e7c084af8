/**
 * One QEMU process hosting the Drover test guest: started paused (-S) with a QMP socket and the
 * guest's COM1 on a unix socket this module reads (the heartbeat), so no guest output is lost.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { DroverError } from '../../lib/errors';
import { QmpClient } from './qmp-client';
import { withoutAgentTuning } from '../../lib/malloc-tuning';

/** How to start QEMU. */
export interface QemuProcessOptions {
  /** QEMU binary; default `qemu-system-x86_64` (on PATH). */
  binary?: string;
  /** Accelerator. */
  accel: 'kvm' | 'tcg';
  /** Guest RAM in MiB. */
  memMiB: number;
  /** vCPUs. */
  vcpus: number;
  /** Multiboot kernel (the Drover guest ELF). */
  kernel: string;
  /** Kernel command line (guest parameters). */
  append: string;
  /** Start as a migration target (`-incoming defer`). */
  incoming?: boolean;
  /** Name shown in errors and as the QEMU process name. */
  name?: string;
  /** Extra QEMU arguments. */
  extraArgs?: string[];
  /** Milliseconds to wait for QMP to come up; default 15000. */
  startTimeoutMs?: number;
}

/** What the guest has said on its serial port. */
export class GuestConsole {
  beats = 0;
  lastBeatMs = 0;
  /** Host ms of the first heartbeat (0 before it). */
  firstBeatMs = 0;
  maxGapMs = 0;
  /** Pages written as of the last status line, and when it arrived (host ms). */
  pagesWritten = 0;
  /** Dirty rate in pages per guest second, from the last two status lines. */
  pagesPerSec = 0;
  /** Fill/WSS/rate the guest reported in its #ready line (KiB, KiB, KiB/s). */
  ready: { fillKiB: number; wssKiB: number; rateKiBps: number } | undefined;
  /** Non-heartbeat lines, last 50. */
  readonly lines: string[] = [];
  private partial = '';
  private lastStatus: { beats: number; pages: number } | undefined;
  private readonly readyWaiters: Array<() => void> = [];

  /** Feeds bytes read from the serial socket at host time `nowMs`. */
  feed(chunk: string, nowMs: number): void {
    let dots = 0;
    for (let i = 0; i < chunk.length; i++) {
      const ch = chunk[i];
      if (ch === '\n') {
        const line = this.partial.trim();
        this.partial = '';
        if (line) this.onLine(line);
      } else if (ch === '.' && this.partial === '') {
        dots++; // a heartbeat: dots outside of '#' lines
      } else {
        this.partial += ch;
      }
    }
    if (dots > 0) {
      if (this.beats === 0) this.firstBeatMs = nowMs;
      if (this.beats > 0) this.maxGapMs = Math.max(this.maxGapMs, nowMs - this.lastBeatMs);
      this.beats += dots;
      this.lastBeatMs = nowMs;
    }
  }

  private onLine(line: string): void {
    this.lines.push(line);
    if (this.lines.length > 50) this.lines.shift();
    const f = line.split(/\s+/);
    if (f[0] === '#s') {
      const beats = Number(f[1]);
      const pages = Number(f[2]);
      if (this.lastStatus && beats > this.lastStatus.beats) {
        this.pagesPerSec = (((pages - this.lastStatus.pages) >>> 0) * 1000) / (beats - this.lastStatus.beats);
      }
      this.lastStatus = { beats, pages };
      this.pagesWritten = pages;
    } else if (f[0] === '#ready') {
      this.ready = { fillKiB: Number(f[1]), wssKiB: Number(f[2]), rateKiBps: Number(f[3]) };
      for (const w of this.readyWaiters.splice(0)) w();
    }
  }

  /** The guest's last output besides heartbeats (a lone '!' is a CPU exception: the guest stopped). */
  tail(): string {
    return [...this.lines.slice(-3), this.partial].filter(Boolean).join(' | ');
  }

  /** Resolves once the guest has reported #ready. */
  whenReady(): Promise<void> {
    if (this.ready) return Promise.resolve();
    return new Promise((r) => this.readyWaiters.push(r));
  }

  /** Starts a new max-gap measurement window. */
  resetGap(): void {
    this.maxGapMs = 0;
  }
}

/** A running QEMU process with its QMP session and guest console. */
export class QemuProcess {
  readonly qmp: QmpClient;
  readonly console = new GuestConsole();
  /** Resolves with the exit code/signal when the process ends. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private exitInfo: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  private serial: net.Socket | undefined;

  private constructor(
    readonly child: ChildProcess,
    readonly dir: string,
    readonly commandLine: string,
    qmp: QmpClient,
    exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>,
    private readonly stderr: () => string,
  ) {
    this.qmp = qmp;
    this.exited = exited;
    exited.then((e) => { this.exitInfo = e; });
  }

  /** True while the process runs. */
  get alive(): boolean {
    return this.exitInfo === undefined;
  }

  /** QEMU's stderr so far. */
  stderrText(): string {
    return this.stderr();
  }

  /** Builds QEMU's argument list (exported for tests and error messages). */
  static buildArgs(o: QemuProcessOptions, dir: string): string[] {
    const args = [
      '-name', o.name ?? 'drover',
      '-machine', 'pc',
      '-accel', o.accel,
      '-m', String(o.memMiB),
      '-smp', String(o.vcpus),
      '-nodefaults', '-display', 'none', '-no-user-config',
      '-kernel', o.kernel,
      '-append', o.append,
      '-chardev', `socket,id=ser0,path=${path.join(dir, 'serial.sock')},server=on,wait=off`,
      '-serial', 'chardev:ser0',
      '-qmp', `unix:${path.join(dir, 'qmp.sock')},server=on,wait=off`,
    ];
    // A new guest starts paused (the serial reader connects first); a migration target autostarts
    // when the migration completes (no -S), which keeps the switchover free of a QMP round trip.
    if (o.incoming) args.push('-incoming', 'defer');
    else args.push('-S');
    return args.concat(o.extraArgs ?? []);
  }

  /** Starts QEMU paused, connects QMP and the serial console. Errors name the command line and carry QEMU's stderr. */
  static async start(o: QemuProcessOptions): Promise<QemuProcess> {
    const bin = o.binary ?? 'qemu-system-x86_64';
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'drover-qemu-'));
    const args = QemuProcess.buildArgs(o, dir);
    const commandLine = [bin, ...args].map(shellQuote).join(' ');
    let stderr = '';
    const child = spawn(bin, args, { stdio: ['ignore', 'ignore', 'pipe'], env: withoutAgentTuning() });
    track(child);
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (d: string) => { stderr = (stderr + d).slice(-8192); });
    let spawnErr: Error | undefined;
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
      child.once('error', (err) => { spawnErr = err; resolve({ code: null, signal: null }); });
      child.once('exit', (code, signal) => resolve({ code, signal }));
    });
    const startFailure = (why: string, cause?: unknown) => {
      try { child.kill('SIGKILL'); } catch { /* already gone */ }
      fs.rmSync(dir, { recursive: true, force: true });
      const se = stderr.trim();
      return new DroverError('FAILED_PRECONDITION',
        `QEMU failed to start (${why}): ${commandLine}${se ? `\nQEMU stderr: ${se}` : ''}`, { cause });
    };
    const timeoutMs = o.startTimeoutMs ?? 15_000;
    const qmpPath = path.join(dir, 'qmp.sock');
    // Wait for the QMP socket to appear, or for QEMU to exit.
    const deadline = Date.now() + timeoutMs;
    let exitInfo: { code: number | null; signal: NodeJS.Signals | null } | undefined;
    exited.then((e) => { exitInfo = e; });
    while (!fs.existsSync(qmpPath)) {
      await new Promise((r) => setTimeout(r, 10));
      if (exitInfo) {
        await new Promise((r) => setTimeout(r, 20)); // let stderr drain
        if (spawnErr) {
          const code = (spawnErr as NodeJS.ErrnoException).code;
          throw startFailure(code === 'ENOENT' ? `binary not found: ${bin}` : spawnErr.message, spawnErr);
        }
        throw startFailure(`exited with ${exitInfo.signal ?? `status ${exitInfo.code}`}`);
      }
      if (Date.now() > deadline) throw startFailure(`no QMP socket within ${timeoutMs} ms`);
    }
    let qmp: QmpClient;
    const exitText = () => exitInfo && `exited with ${exitInfo.signal ?? `status ${exitInfo.code}`}`;
    try {
      qmp = await QmpClient.connect(qmpPath, { timeoutMs: Math.max(1000, deadline - Date.now()), label: o.name ?? 'qemu', giveUp: exitText });
    } catch (err) {
      if (exitInfo) {
        await new Promise((r) => setTimeout(r, 20)); // let stderr drain
        throw startFailure(exitText()!, err);
      }
      throw startFailure(`QMP: ${(err as Error).message}`, err);
    }
    const p = new QemuProcess(child, dir, commandLine, qmp, exited, () => stderr);
    try {
      await p.connectSerial(path.join(dir, 'serial.sock'));
    } catch (err) {
      await p.kill();
      throw startFailure(`serial console: ${(err as Error).message}`, err);
    }
    return p;
  }

  private async connectSerial(sockPath: string): Promise<void> {
    const s = await new Promise<net.Socket>((resolve, reject) => {
      const c = net.createConnection(sockPath);
      c.once('connect', () => resolve(c));
      c.once('error', reject);
    });
    s.setEncoding('latin1');
    s.on('data', (d: string) => this.console.feed(d, performance.timeOrigin + performance.now()));
    s.on('error', () => { /* QEMU exited; exit is reported through `exited` */ });
    this.serial = s;
  }

  /** Kills QEMU (SIGKILL unless `graceful`, which asks QMP `quit` first) and removes its socket directory. */
  async kill(graceful = false): Promise<void> {
    if (this.alive) {
      if (graceful && !this.qmp.closed) {
        await Promise.race([this.qmp.execute('quit').catch(() => undefined), new Promise((r) => setTimeout(r, 1000))]);
        await Promise.race([this.exited, new Promise((r) => setTimeout(r, 2000))]);
      }
      if (this.alive) this.child.kill('SIGKILL');
      await this.exited;
    }
    this.qmp.close();
    this.serial?.destroy();
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

/** QEMU children still running; killed if this Node process exits without destroying them. */
const live = new Set<ChildProcess>();
let exitHookInstalled = false;
function track(child: ChildProcess): void {
  live.add(child);
  child.once('exit', () => live.delete(child));
  child.once('error', () => live.delete(child));
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.on('exit', () => {
      for (const c of live) {
        try { c.kill('SIGKILL'); } catch { /* gone */ }
      }
    });
  }
}

function shellQuote(s: string): string {
  return /^[A-Za-z0-9_./:=,@+-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

