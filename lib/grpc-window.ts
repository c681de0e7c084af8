/**
 * HTTP/2 flow-control windows for bulk streams. grpc-js servers keep Node's default 64 KiB
 * receive window and offer no option for it, which caps a page stream at one window per event
 * loop turn. The receiver widens its session's windows once, from inside its first bulk call.
 */
import type * as http2 from 'node:http2';

/** Receive window the page stream asks for, per stream and per connection. */
export const BULK_WINDOW_BYTES = 32 * 1024 * 1024;

const widened = new WeakSet<http2.Http2Session>();

/** Finds the http2 session behind a grpc-js server call (undefined if grpc-js changes shape). */
function sessionOf(call: unknown): http2.Http2Session | undefined {
  /** The private shape of grpc-js' call chain this reads (every link optional). */
  interface CallLink { stream?: { session?: http2.Http2Session }; nextCall?: CallLink }
  let c: CallLink | undefined = (call as { call?: CallLink } | null | undefined)?.call;
  for (let i = 0; c && i < 8; i++) {
    if (c.stream?.session) return c.stream.session;
    c = c.nextCall;
  }
  return undefined;
}

/** Widens the receive windows of the session carrying `call`; returns whether it could. */
export function widenReceiveWindow(call: unknown, bytes = BULK_WINDOW_BYTES): boolean {
  const s = sessionOf(call);
  if (!s) return false;
  if (widened.has(s)) return true;
  widened.add(s);
  try {
    s.setLocalWindowSize(bytes);
    s.settings({ initialWindowSize: Math.min(bytes, 2 ** 31 - 1) });
    return true;
  } catch {
    return false;
  }
}
