/**
 * The target's switchover journal: what this agent process did with each incoming migration,
 * kept in a file so that a restarted agent on the same host can still answer a source that asks
 * (MigrationReceiver.SwitchoverOutcome, protocol.ts "Switchover outcome") instead of `unknown`.
 *
 * Every process appends to its own file in the state directory, one JSON line per step:
 * - `started`: a page-stream migration's Start was accepted (a QEMU tunnel's is `started-tunnel`:
 *   the target QEMU may run the guest before the agent sees Complete, so it proves nothing);
 * - `resuming`: written right before the guest first resumes here;
 * - `owned`, `not_owned`, `lost`: the outcome (switchover-outcomes.ts).
 *
 * A later process reads the files of earlier processes of the same boot (the kernel's boot id:
 * a reboot may have dropped writes that never reached the disk, and a rebooted host's guests are
 * gone) and answers from the last step of a migration:
 * - `started` only: the earlier process never resumed the guest (the record comes first):
 *   `not_owned` (the source resumes);
 * - `resuming`, or `owned` recorded by a process that is gone: the guest may have run there and
 *   died with it: `lost` (the source discards its copy: resuming an older copy would split the
 *   guest from what it already wrote to shared storage);
 * - `not_owned`, `lost`: as recorded; `started-tunnel` or nothing: no answer (`unknown`).
 * The token is kept as its SHA-256, and the files are readable by their owner only.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as os from 'node:os';
import { createHash } from 'node:crypto';
import { OUTCOMES_KEPT, type FinishedOutcome } from './switchover-outcomes';

/** One step of an incoming migration, as the journal records it. */
export type JournalStep = 'started' | 'started-tunnel' | 'resuming' | FinishedOutcome;
const STEPS: readonly JournalStep[] = ['started', 'started-tunnel', 'resuming', 'owned', 'not_owned', 'lost'];

/**
 * Journal files of dead processes older than this are deleted at start-up: a source asks within
 * its DIRECT_OUTCOME_WAIT_MS (30 s) of the break, so an hour is far beyond any question.
 */
export const JOURNAL_KEEP_MS = 60 * 60_000;

/** The default state directory of agent `nodeId`: per user, under the temporary directory (a reboot may clear it; the boot id covers that anyway). */
export function defaultStateDir(nodeId: string): string {
  return path.join(os.tmpdir(), `drover-agent-${nodeId}`);
}

/** The kernel's id of this boot ('' where there is none). */
export function bootId(): string {
  try {
    return fs.readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  } catch {
    return '';
  }
}

/** Journals this process opened (part of each file's name: two in one millisecond get two files). */
let opened = 0;

/** The answer the journal gives for a migration of an earlier process (undefined: no answer). */
export type JournalAnswer = FinishedOutcome | 'mismatch' | undefined;

/** This process's journal, and what earlier processes of the same boot recorded. */
export class OutcomeJournal {
  private fd: number | undefined;
  /** Earlier processes: migration id -> token hash -> last step. */
  private readonly earlier = new Map<string, Map<string, JournalStep>>();
  /** This process's started migrations: id -> token hash (later steps name the id only). */
  private readonly tokens = new Map<string, string>();

  /**
   * Opens the journal in `dir` (created, mode 0700): reads the earlier processes' files of this
   * boot, deletes stale ones, and starts this process's own file. A directory that cannot be used
   * throws.
   */
  constructor(readonly dir: string, private readonly boot = bootId(), now = Date.now()) {
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    for (const name of fs.readdirSync(dir)) {
      if (!/^outcomes-\d+-\d+-\d+\.jsonl$/.test(name)) continue;
      const file = path.join(dir, name);
      this.readEarlier(file);
      try {
        if (now - fs.statSync(file).mtimeMs > JOURNAL_KEEP_MS) fs.unlinkSync(file);
      } catch { /* another agent removed it */ }
    }
    this.fd = fs.openSync(path.join(dir, `outcomes-${process.pid}-${now}-${++opened}.jsonl`), 'a', 0o600);
    this.write({ boot: this.boot, pid: process.pid, startedAt: now });
  }

  /** Migration `id` started with `token` (only its hash is kept); `tunnel`: a hypervisor stream, whose guest may run before Complete reaches the agent. */
  started(id: string, token: string, tunnel: boolean): void {
    const tokenSha256 = sha256(token);
    this.tokens.set(id, tokenSha256);
    while (this.tokens.size > OUTCOMES_KEPT) this.tokens.delete(this.tokens.keys().next().value as string);
    this.write({ id, tokenSha256, step: tunnel ? 'started-tunnel' : 'started' });
  }

  /** A later step of a started migration (ignored for one this process did not start). Never throws: the journal only adds answers. */
  step(id: string, step: Exclude<JournalStep, 'started' | 'started-tunnel'>): void {
    const tokenSha256 = this.tokens.get(id);
    if (tokenSha256) this.write({ id, tokenSha256, step });
  }

  /** The earlier processes' answer for migration `id` (`token` must be its own, else `mismatch`). */
  answer(id: string, token: string): JournalAnswer {
    const byToken = this.earlier.get(id);
    if (!byToken) return undefined;
    const step = byToken.get(sha256(token));
    if (!step) return 'mismatch';
    switch (step) {
      case 'started': return 'not_owned';
      case 'resuming': case 'owned': return 'lost';
      case 'not_owned': case 'lost': return step;
      case 'started-tunnel': return undefined;
    }
  }

  /** Closes this process's file. */
  close(): void {
    if (this.fd !== undefined) fs.closeSync(this.fd);
    this.fd = undefined;
  }

  private write(entry: object): void {
    if (this.fd === undefined) return;
    try {
      fs.writeSync(this.fd, JSON.stringify(entry) + '\n');
    } catch { /* a full disk loses answers, not migrations: the source then stays paused as before */ }
  }

  /** Adds a file's records if it was written in this boot (its first line says); unreadable lines are skipped. */
  private readEarlier(file: string): void {
    let text: string;
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch {
      return;
    }
    const lines = text.split('\n');
    const head = parseLine(lines[0]);
    if (!this.boot || !head || head.boot !== this.boot) return;
    for (const line of lines.slice(1)) {
      const e = parseLine(line);
      if (!e || typeof e.id !== 'string' || typeof e.tokenSha256 !== 'string' || !STEPS.includes(e.step as JournalStep)) continue;
      let byToken = this.earlier.get(e.id);
      if (!byToken) this.earlier.set(e.id, byToken = new Map());
      byToken.set(e.tokenSha256, e.step as JournalStep);
    }
  }
}

function parseLine(line: string | undefined): Record<string, unknown> | undefined {
  if (!line) return undefined;
  try {
    const v: unknown = JSON.parse(line);
    return v && typeof v === 'object' ? v as Record<string, unknown> : undefined;
  } catch {
    return undefined;
  }
}

function sha256(s: string): string {
  return createHash('sha256').update(s).digest('hex');
}
