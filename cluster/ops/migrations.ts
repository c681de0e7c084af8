/**
 * Migration operations: request one (a job, fenced on the VM record), cancel one and wait for
 * the cancel to take effect, list them, follow one or all of them.
 */
import type { Etcd3 } from 'etcd3';
import { DroverError, notFound } from '../../lib/errors';
import { getJson, readHistory, readSnapshot } from '../etcd';
import { cancelJob, createJob } from '../jobs';
import { keys, TERMINAL_PHASES, type JobRecord } from '../keyspace';
import { sleep } from '../log';
import { jobLine } from './job-line';

/** Poll period while following one job, ms. */
const WATCH_JOB_POLL_MS = 250;
/** Poll period while following every job, ms. */
const WATCH_ALL_POLL_MS = 300;
/** How long a cancel may take to reach a running job's engine, ms. */
const CANCEL_WAIT_MS = 120_000;
/** Default limit of following one job, ms. */
const WATCH_JOB_TIMEOUT_MS = 600_000;

/** Requests a migration: creates its job (fails clearly when the VM, node or state is wrong). */
export const requestMigration = createJob;

/** How a cancel ended: before the job started, rolled back mid-flight, or too late (the job finished). */
export type CancelResult =
  | { kind: 'cancelled-before-start' }
  | { kind: 'rolled-back'; job: JobRecord }
  | { kind: 'too-late'; job: JobRecord };

/** Cancels a migration and waits until it took effect (or the job finished anyway). */
export async function cancelMigration(etcd: Etcd3, id: string): Promise<CancelResult> {
  if ((await cancelJob(etcd, id)) === 'cancelled') return { kind: 'cancelled-before-start' };
  const j = await watchJob(etcd, id, () => {}, CANCEL_WAIT_MS);
  if (j.result === 'cancelled' || (j.result === 'failed' && /cancel/.test(j.error))) return { kind: 'rolled-back', job: j };
  return { kind: 'too-late', job: j };
}

/** Jobs under way and (unless `activeOnly`) finished ones, oldest first. */
export async function listMigrations(etcd: Etcd3, activeOnly: boolean): Promise<JobRecord[]> {
  const snap = await readSnapshot(etcd);
  const active = [...snap.jobs.values()].map((j) => j.value);
  const all = activeOnly ? active : [...(await readHistory(etcd)), ...active];
  return all.sort((a, b) => a.createdAt - b.createdAt || a.id.localeCompare(b.id));
}

/** Follows a job until it finishes, calling `show` on each change; returns the final record. */
export async function watchJob(etcd: Etcd3, id: string, show: (j: JobRecord) => void, timeoutMs = WATCH_JOB_TIMEOUT_MS): Promise<JobRecord> {
  let last = '';
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const j = (await getJson<JobRecord>(etcd, keys.job(id))) ?? (await getJson<JobRecord>(etcd, keys.history(id)));
    if (!j) throw notFound(`no migration with id "${id}"`);
    const line = jobLine(j.value);
    if (line !== last) { show(j.value); last = line; }
    if (TERMINAL_PHASES.has(j.value.phase)) return j.value;
    if (Date.now() > deadline) throw new DroverError('DEADLINE_EXCEEDED', `migration ${id} not finished after ${timeoutMs / 1000} s`);
    await sleep(WATCH_JOB_POLL_MS);
  }
}

/** Prints job changes (new, phase, progress, finished) until `until` resolves. */
export async function watchAll(etcd: Etcd3, out: (line: string) => void, until: Promise<void>): Promise<void> {
  let done = false;
  void until.then(() => { done = true; });
  const seen = new Map<string, string>();
  const finished = new Set<string>((await readHistory(etcd)).map((j) => j.id));
  while (!done) {
    const snap = await readSnapshot(etcd);
    for (const { value: j } of snap.jobs.values()) {
      const line = jobLine(j);
      if (seen.get(j.id) !== line) { out(line); seen.set(j.id, line); }
    }
    for (const id of seen.keys()) {
      if (!snap.jobs.has(id) && !finished.has(id)) {
        finished.add(id);
        const h = await getJson<JobRecord>(etcd, keys.history(id));
        if (h) out(jobLine(h.value));
      }
    }
    await sleep(WATCH_ALL_POLL_MS);
  }
}
