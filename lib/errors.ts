/**
 * One error base class for all of Drover (after Connect-ES's ConnectError and Temporal's
 * failure types): every error carries a stable `code` that says what kind of failure it is,
 * a message naming what was wrong, and an optional `cause`.
 *
 * The mapping from codes to gRPC statuses and CLI exit codes lives in `grpc-status.ts`
 * and `cli/exit.ts`; nothing else converts errors.
 */

/** Stable error codes. They mirror the gRPC canonical codes Drover uses. */
export type ErrorCode =
  | 'INVALID_ARGUMENT'
  | 'NOT_FOUND'
  | 'ALREADY_EXISTS'
  | 'PERMISSION_DENIED'
  | 'FAILED_PRECONDITION'
  | 'RESOURCE_EXHAUSTED'
  | 'ABORTED'
  | 'CANCELLED'
  | 'DEADLINE_EXCEEDED'
  | 'UNAVAILABLE'
  | 'DATA_LOSS'
  | 'UNIMPLEMENTED'
  | 'INTERNAL';

/** The base of every error Drover raises on purpose. */
export class DroverError extends Error {
  /** What kind of failure this is; decides the gRPC status and the CLI exit code. */
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = 'DroverError';
  }

  /** Wraps any thrown value, keeping a DroverError as it is. */
  static from(err: unknown, fallback: ErrorCode = 'INTERNAL'): DroverError {
    if (err instanceof DroverError) return err;
    if (err instanceof Error) return new DroverError(fallback, err.message, { cause: err });
    return new DroverError(fallback, String(err));
  }
}

/** Bad input from a user or a peer: the message names the field and the value. */
export function invalidArgument(message: string, cause?: unknown): DroverError {
  return new DroverError('INVALID_ARGUMENT', message, { cause });
}

/** A named object (VM, migration, node, export) does not exist. */
export function notFound(message: string): DroverError {
  return new DroverError('NOT_FOUND', message);
}

/** The system is not in a state where the request can run (wrong version, wrong phase). */
export function failedPrecondition(message: string, cause?: unknown): DroverError {
  return new DroverError('FAILED_PRECONDITION', message, { cause });
}

/** A peer or server could not be reached. */
export function unavailable(message: string, cause?: unknown): DroverError {
  return new DroverError('UNAVAILABLE', message, { cause });
}
