/**
 * A direct migration's source (no etcd) whose stream broke after Complete asks the target what
 * it did (protocol.ts "Switchover outcome"): `owned` ends the migration (the source discards its
 * copy), `not_owned` resumes the source, `pending` (activation still runs) and no answer (the
 * target restarting, a partition) are asked again with backoff within DIRECT_OUTCOME_WAIT_MS.
 * `unknown` (the target has no record: it cannot tell whether an earlier process resumed the
 * guest) and `lost` (the target resumed it and lost it, e.g. its agent died: outcome-journal.ts)
 * leave the VM paused: resuming a copy the guest may have run past would split it.
 */
import { DroverError } from '../../lib/errors';
import type { SwitchoverOutcome } from '../../migration/precopy/precopy-source';

/**
 * How long the source keeps asking a target that does not answer or is still activating: long
 * enough for a supervisor to restart the target agent (systemd's RestartSec is 1-5 s) or a short
 * partition to heal. After it the VM stays paused on the source, said in the error.
 */
export const DIRECT_OUTCOME_WAIT_MS = 30_000;
/** The first pause between two questions, doubled each time up to MAX_ASK_PAUSE_MS. */
const FIRST_ASK_PAUSE_MS = 100;
const MAX_ASK_PAUSE_MS = 2000;
/** Deadline of one question (a target that answers at all answers in milliseconds). */
export const ASK_DEADLINE_MS = 2000;

/** Asks until the target tells or the budget ends; `ask` is one SwitchoverOutcome call (the answer, or a rejection). */
export async function askTargetOutcome(ask: () => Promise<string>, log: (e: Record<string, unknown>) => void,
  waitMs = DIRECT_OUTCOME_WAIT_MS, sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms))): Promise<SwitchoverOutcome> {
  const until = Date.now() + waitMs;
  let pause = FIRST_ASK_PAUSE_MS;
  for (let attempt = 1; ; attempt++) {
    let answer: string;
    try {
      answer = await ask();
    } catch (err) {
      const e = DroverError.from(err);
      if (e.code === 'PERMISSION_DENIED' || e.code === 'UNIMPLEMENTED') {
        log({ msg: 'switchover outcome: the target refuses to tell; the VM stays paused', attempt, code: e.code, error: e.message });
        return 'unknown';
      }
      answer = `no answer (${e.code}: ${e.message})`;
    }
    if (answer === 'owned') return 'owned';
    if (answer === 'not_owned') return 'refused';
    if (answer === 'unknown' || answer === 'lost') {
      log({ msg: `switchover outcome: the target says ${answer}; the VM stays paused (its guest may have run there)`, attempt });
      return answer;
    }
    if (Date.now() + pause > until) {
      log({ msg: 'switchover outcome: no answer within the wait; the VM stays paused', attempt, last: answer, waitMs });
      return 'unknown';
    }
    if (attempt === 1 || attempt % 10 === 0) log({ msg: 'switchover outcome: asking the target again', attempt, last: answer });
    await sleep(pause);
    pause = Math.min(MAX_ASK_PAUSE_MS, pause * 2);
  }
}
