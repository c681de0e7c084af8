/**
 * All mapping between Drover errors and gRPC statuses, in one place (servers call
 * `toServiceError`, clients call `fromServiceError`). Also: which codes a client may retry.
 */
import * as grpc from '@grpc/grpc-js';
import { DroverError, type ErrorCode } from './errors';

const TO_GRPC: Record<ErrorCode, grpc.status> = {
  INVALID_ARGUMENT: grpc.status.INVALID_ARGUMENT,
  NOT_FOUND: grpc.status.NOT_FOUND,
  ALREADY_EXISTS: grpc.status.ALREADY_EXISTS,
  PERMISSION_DENIED: grpc.status.PERMISSION_DENIED,
  FAILED_PRECONDITION: grpc.status.FAILED_PRECONDITION,
  RESOURCE_EXHAUSTED: grpc.status.RESOURCE_EXHAUSTED,
  ABORTED: grpc.status.ABORTED,
  CANCELLED: grpc.status.CANCELLED,
  DEADLINE_EXCEEDED: grpc.status.DEADLINE_EXCEEDED,
  UNAVAILABLE: grpc.status.UNAVAILABLE,
  DATA_LOSS: grpc.status.DATA_LOSS,
  UNIMPLEMENTED: grpc.status.UNIMPLEMENTED,
  INTERNAL: grpc.status.INTERNAL,
};

const FROM_GRPC = new Map<number, ErrorCode>(
  (Object.entries(TO_GRPC) as [ErrorCode, grpc.status][]).map(([k, v]) => [v, k]),
);

/**
 * Longest status message (UTF-8 bytes) a server sends: a status travels in an HTTP/2 trailer,
 * and a message that echoes a peer's text (an Abort reason, a name) must not grow it without
 * bound (a 100 KB trailer hangs grpc-js clients).
 */
export const MAX_STATUS_MESSAGE_BYTES = 512;

/** `text` cut to at most `maxBytes` UTF-8 bytes, ending in "…" when it was cut (never splits a character). */
export function capText(text: string, maxBytes: number = MAX_STATUS_MESSAGE_BYTES): string {
  if (Buffer.byteLength(text) <= maxBytes) return text;
  const ellipsis = '…';
  let out = '';
  let bytes = Buffer.byteLength(ellipsis);
  for (const ch of text) {
    const n = Buffer.byteLength(ch);
    if (bytes + n > maxBytes) break;
    out += ch;
    bytes += n;
  }
  return out + ellipsis;
}

/** Converts any error into the status object grpc-js sends to the peer (message capped at MAX_STATUS_MESSAGE_BYTES). */
export function toServiceError(err: unknown): Partial<grpc.StatusObject> & { code: grpc.status; details: string } {
  const e = DroverError.from(err);
  return { code: TO_GRPC[e.code], details: capText(e.message), metadata: new grpc.Metadata() };
}

/** Converts a grpc-js client error into a DroverError naming the call and the peer. */
export function fromServiceError(err: unknown, what: string): DroverError {
  const se = err as Partial<grpc.ServiceError> | undefined;
  if (se && typeof se.code === 'number') {
    const code = FROM_GRPC.get(se.code) ?? 'INTERNAL';
    const details = se.details || se.message || 'no details';
    return new DroverError(code, code === 'UNAVAILABLE' || code === 'DEADLINE_EXCEEDED' ? `${what}: ${details}` : details, { cause: err });
  }
  return DroverError.from(err);
}

/** Codes a client may retry with backoff: the request did not take effect, or is idempotent. */
export const RETRYABLE_CODES: ReadonlySet<ErrorCode> = new Set<ErrorCode>(['UNAVAILABLE', 'DEADLINE_EXCEEDED', 'ABORTED', 'RESOURCE_EXHAUSTED']);

/** True when a failed call may be retried. */
export function isRetryable(err: unknown): boolean {
  return err instanceof DroverError && RETRYABLE_CODES.has(err.code);
}

/** Default deadline for unary control calls (ms): generous for a loaded 2-core machine. */
export const DEFAULT_CALL_DEADLINE_MS = 15_000;

/** A deadline `ms` from now, as grpc-js takes it. */
export function deadlineIn(ms: number = DEFAULT_CALL_DEADLINE_MS): Date {
  return new Date(Date.now() + ms);
}
