/**
 * What this target did with each incoming migration it finished, for a source whose stream broke
 * after Complete and which asks (MigrationReceiver.SwitchoverOutcome, protocol.ts "Switchover
 * outcome"). Direct migrations have no etcd to arbitrate, so the target's own word is the only
 * truth: it answers from here, or from the migration still in progress.
 *
 * Outcomes are kept for the last OUTCOMES_KEPT migrations (a source asks within seconds of the
 * break; the book is in memory, so a restarted agent answers `unknown`: it cannot tell what its
 * earlier process did).
 */

/** What the target did: runs the VM (`owned`), gave its copy up (`not_owned`), lost it in post-copy (`lost`). */
export type FinishedOutcome = 'owned' | 'not_owned' | 'lost';
/** The answer to a source: a finished outcome, `pending` (Complete arrived, activation runs) or `unknown` (no record). */
export type OutcomeAnswer = FinishedOutcome | 'pending' | 'unknown';
/** The answers, as the wire carries them (SwitchoverOutcomeResponse.outcome). */
export const OUTCOME_ANSWERS: readonly OutcomeAnswer[] = ['owned', 'not_owned', 'lost', 'pending', 'unknown'];

/** Finished migrations remembered: far more than a node finishes in the seconds a source may take to ask. */
export const OUTCOMES_KEPT = 1024;

/** One finished migration: a check of its token (only its source knows it; compared in constant time) and the outcome. */
interface Entry { tokenMatches: (token: string) => boolean; outcome: FinishedOutcome }

/** The book of finished incoming migrations (oldest forgotten first). */
export class SwitchoverOutcomes {
  private readonly entries = new Map<string, Entry>();

  /** Records migration `id`'s outcome; a later record of the same migration replaces it (e.g. owned, then fenced). */
  record(id: string, tokenMatches: (token: string) => boolean, outcome: FinishedOutcome): void {
    this.entries.delete(id);
    this.entries.set(id, { tokenMatches, outcome });
    while (this.entries.size > OUTCOMES_KEPT) this.entries.delete(this.entries.keys().next().value as string);
  }

  /** The outcome of `id`, if recorded: `token` must be the migration's (else `mismatch`). */
  lookup(id: string, token: string): FinishedOutcome | 'mismatch' | undefined {
    const e = this.entries.get(id);
    if (!e) return undefined;
    return e.tokenMatches(token) ? e.outcome : 'mismatch';
  }
}
