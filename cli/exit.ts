/** CLI exit codes and the one place errors become them. */
import { DroverError, type ErrorCode } from '../lib/errors';

/** Success. */
export const EXIT_OK = 0;
/** The operation ran and failed (a migration rolled back, a check failed). */
export const EXIT_FAILED = 1;
/** Bad input, or the request could not be carried out as asked (unknown VM, unreachable agent). */
export const EXIT_USAGE = 2;

const USAGE_CODES: ReadonlySet<ErrorCode> = new Set([
  'INVALID_ARGUMENT', 'NOT_FOUND', 'ALREADY_EXISTS', 'PERMISSION_DENIED', 'FAILED_PRECONDITION', 'RESOURCE_EXHAUSTED', 'UNAVAILABLE', 'DEADLINE_EXCEEDED', 'UNIMPLEMENTED',
]);

/** The exit code for an error. */
export function exitCodeFor(err: unknown): number {
  if (err instanceof DroverError && USAGE_CODES.has(err.code)) return EXIT_USAGE;
  return EXIT_FAILED;
}
