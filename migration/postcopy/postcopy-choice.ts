/**
 * When pre-copy hands over to post-copy (the sim driver's page streams). Only when the policy
 * allows it (`postcopy` 'auto' or 'always'; absent = never, so cluster migrations that do not ask
 * keep pre-copy) and the target offered it (Accepted.postcopy) for a domain with post-copy pages.
 */
import type { MigrationPolicy, StopReason } from '../types';

/** True when pre-copy should stop now and switch to post-copy, given the latest round's stop `reason`. */
export function choosePostcopy(policy: MigrationPolicy, reason: StopReason | null, available: boolean): boolean {
  if (!available) return false;
  switch (policy.postcopy ?? 'never') {
    case 'always':
      return true; // after the first pass
    case 'auto':
      return reason === 'stalled';
    default:
      return false;
  }
}
