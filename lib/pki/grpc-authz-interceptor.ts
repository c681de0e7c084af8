/**
 * A grpc-js server interceptor enforcing lib/pki/authz.ts on every call before any handler runs:
 * `new grpc.Server({ interceptors: [authzInterceptor({ onRefusal })] })`. A refused call ends
 * with UNAUTHENTICATED or PERMISSION_DENIED and a message naming the role and the method;
 * `onRefusal` gets every refusal (log it, count it in a metric). Handlers read the caller with
 * `peerIdentity(call)` (lib/pki/grpc-credentials.ts).
 */
import * as grpc from '@grpc/grpc-js';
import { authorize, methodName, type RefusalCode } from './authz';
import { peerIdentity } from './grpc-credentials';
import type { Identity } from './identity';

/** One refused call. */
export interface RefusalEvent {
  method: string;
  code: RefusalCode;
  message: string;
  identity: Identity | undefined;
  /** The peer's address as grpc-js reports it. */
  peer: string;
}

/** Options of authzInterceptor. */
export interface AuthzInterceptorOptions {
  /** Called once per refused call (logging, `drover_authz_refusals_total{role,method,code}`). */
  onRefusal?: (event: RefusalEvent) => void;
  /** The decision, replaceable for tests; defaults to authorize(). */
  decide?: typeof authorize;
}

const STATUS: Record<RefusalCode, grpc.status> = {
  UNAUTHENTICATED: grpc.status.UNAUTHENTICATED,
  PERMISSION_DENIED: grpc.status.PERMISSION_DENIED,
};

/** The interceptor; put it first so refused calls reach no other interceptor's handler side. */
export function authzInterceptor(opts: AuthzInterceptorOptions = {}): grpc.ServerInterceptor {
  const decide = opts.decide ?? authorize;
  return (desc, call) => new grpc.ServerInterceptingCall(call, {
    start: (next) => next({
      onReceiveMetadata: (metadata, mdNext) => {
        const identity = peerIdentity(call);
        const verdict = decide(desc.path, identity);
        if (verdict.ok) {
          mdNext(metadata);
          return;
        }
        const event: RefusalEvent = { method: methodName(desc.path), code: verdict.code, message: verdict.message, identity, peer: call.getPeer() };
        try {
          opts.onRefusal?.(event);
        } finally {
          call.sendStatus({ code: STATUS[verdict.code], details: verdict.message, metadata: new grpc.Metadata() });
        }
      },
    }),
  });
}
