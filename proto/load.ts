/**
 * Loads Drover's .proto contract with protobufjs and turns its services into grpc-js service
 * definitions. Protobuf objects stay at this edge: servers and clients convert to domain types
 * right where they call or are called.
 */
import * as path from 'node:path';
import * as protobuf from 'protobufjs';
import * as grpc from '@grpc/grpc-js';
import type { Wire } from './generated/drover-v1';

/** Folder that holds the .proto files (works from a checkout and from dist/). */
export const PROTO_DIR = path.resolve(__dirname, '..', '..', 'proto');

/** The .proto files of the contract, relative to PROTO_DIR. */
export const PROTO_FILES = ['drover/v1/common.proto', 'drover/v1/agent.proto', 'drover/v1/migration.proto'] as const;

let root: protobuf.Root | undefined;

/** The parsed contract (loaded once per process). */
export function protoRoot(): protobuf.Root {
  if (root) return root;
  const r = new protobuf.Root();
  r.resolvePath = (_origin, target) => path.join(PROTO_DIR, target);
  r.loadSync([...PROTO_FILES], { keepCase: false });
  r.resolveAll();
  root = r;
  return r;
}

/** A message type of package drover.v1 by its short name. */
export function messageType(name: string): protobuf.Type {
  return protoRoot().lookupType(`drover.v1.${name}`);
}

/** Options for turning decoded messages into plain objects: numbers, not Longs; defaults filled. */
export const TO_OBJECT: protobuf.IConversionOptions = { longs: Number, enums: String, bytes: Buffer, defaults: true, arrays: true, oneofs: true };

/**
 * The input form of message `T` for `encodeMessage`: every field optional (proto3 defaults fill
 * the rest), unset message fields as `null` or absent, bytes as any Uint8Array.
 */
export type Input<T> = T extends Buffer ? Uint8Array
  : T extends readonly (infer E)[] ? Input<E>[]
  : T extends object ? { [K in keyof T]?: Input<T[K]> | null }
  : T;

/** Encodes a plain object as message `type`, rejecting fields of the wrong type. */
export function encodeMessage(type: protobuf.Type, value: object): Buffer {
  const err = type.verify(value as Record<string, unknown>);
  if (err) throw new TypeError(`${type.name}: ${err}`);
  const bytes = type.encode(type.fromObject(value as Record<string, unknown>)).finish();
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** Decodes bytes of message `type` into a plain object (see TO_OBJECT); `T` names its generated interface. */
export function decodeMessage<T>(type: protobuf.Type, bytes: Buffer): T {
  return type.toObject(type.decode(bytes), TO_OBJECT) as T;
}

/**
 * Custom (de)serialisers for one method, used to override the hot page stream. Method syntax on
 * purpose: a codec of specific types fits the `Record<string, MethodCodec>` of serviceDefinition.
 */
export interface MethodCodec<Req = unknown, Res = unknown> {
  /** Request → bytes (client side). */
  serializeRequest?(value: Req): Buffer;
  /** Bytes → request (server side). */
  deserializeRequest?(bytes: Buffer): Req;
  /** Response → bytes (server side). */
  serializeResponse?(value: Res): Buffer;
  /** Bytes → response (client side). */
  deserializeResponse?(bytes: Buffer): Res;
}

/** A grpc-js ServiceDefinition for `drover.v1.<service>`, with optional per-method codecs. */
export function serviceDefinition(service: string, codecs: Record<string, MethodCodec> = {}): grpc.ServiceDefinition {
  const svc = protoRoot().lookupService(`drover.v1.${service}`);
  const def: Record<string, grpc.MethodDefinition<unknown, unknown>> = {};
  for (const method of svc.methodsArray) {
    method.resolve();
    const req = method.resolvedRequestType!;
    const res = method.resolvedResponseType!;
    const c = codecs[method.name] ?? {};
    def[method.name] = {
      path: `/drover.v1.${service}/${method.name}`,
      requestStream: !!method.requestStream,
      responseStream: !!method.responseStream,
      requestSerialize: c.serializeRequest ?? ((v: unknown) => encodeMessage(req, v as object)),
      requestDeserialize: c.deserializeRequest ?? ((b: Buffer) => decodeMessage(req, b)),
      responseSerialize: c.serializeResponse ?? ((v: unknown) => encodeMessage(res, v as object)),
      responseDeserialize: c.deserializeResponse ?? ((b: Buffer) => decodeMessage(res, b)),
      originalName: method.name,
    };
  }
  return def as grpc.ServiceDefinition;
}

/** A service of drover.v1 (`NodeAgent`, `MigrationReceiver`). */
export type ServiceName = keyof Wire;

/** One method of the Wire map. */
interface WireMethod { request: object; response: object; requestStream: boolean; responseStream: boolean }

/** The grpc-js client call of method `M`, by its streaming kind (requests in their Input form). */
export type ClientMethod<M extends WireMethod> =
  M['requestStream'] extends true
    ? M['responseStream'] extends true
      ? (options?: grpc.CallOptions) => grpc.ClientDuplexStream<Input<M['request']>, M['response']>
      : (options: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res: M['response']) => void) => grpc.ClientWritableStream<Input<M['request']>>
    : M['responseStream'] extends true
      ? (req: Input<M['request']>, options?: grpc.CallOptions) => grpc.ClientReadableStream<M['response']>
      : (req: Input<M['request']>, options: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res: M['response']) => void) => grpc.ClientUnaryCall;

/** A generic grpc-js client of service `S`, its methods typed from the Wire map. */
export type ServiceClient<S extends ServiceName> = grpc.Client & { [M in keyof Wire[S]]: Wire[S][M] extends WireMethod ? ClientMethod<Wire[S][M]> : never };

/** The constructor of a typed client (`C`: ServiceClient<S>, or a variant for custom codecs). */
export type ClientConstructor<C> = new (address: string, credentials: grpc.ChannelCredentials, options?: grpc.ClientOptions) => C;

/**
 * grpc-js' generic client constructor for `service`, typed as `C` (default: its ServiceClient).
 * The one place the dynamic client meets the static types: the methods grpc-js attaches are the
 * service's, by construction.
 */
export function clientConstructor<S extends ServiceName, C = ServiceClient<S>>(service: S, codecs: Record<string, MethodCodec> = {}): ClientConstructor<C> {
  return grpc.makeGenericClientConstructor(serviceDefinition(service, codecs), service) as unknown as ClientConstructor<C>;
}

/** The grpc-js server handler of method `M`, by its streaming kind (responses in their Input form). */
export type ServerMethod<M extends WireMethod> =
  M['requestStream'] extends true
    ? M['responseStream'] extends true
      ? (call: grpc.ServerDuplexStream<M['request'], Input<M['response']>>) => void | Promise<void>
      : (call: grpc.ServerReadableStream<M['request'], Input<M['response']>>, cb: grpc.sendUnaryData<Input<M['response']>>) => void | Promise<void>
    : M['responseStream'] extends true
      ? (call: grpc.ServerWritableStream<M['request'], Input<M['response']>>) => void | Promise<void>
      : (call: grpc.ServerUnaryCall<M['request'], Input<M['response']>>, cb: grpc.sendUnaryData<Input<M['response']>>) => void | Promise<void>;

/** Handlers for every method of service `S`, typed from the Wire map (for `addService`). */
export type ServiceHandlers<S extends ServiceName> = { [M in keyof Wire[S]]: Wire[S][M] extends WireMethod ? ServerMethod<Wire[S][M]> : never };

/**
 * Adds service `S` to `server` with typed handlers (`codecs` override methods' serialisers, and
 * then the handlers of those methods see the codecs' types: pass them as `H`).
 */
export function addService<S extends ServiceName, H extends object = ServiceHandlers<S>>(server: grpc.Server, service: S, handlers: H, codecs: Record<string, MethodCodec> = {}): void {
  server.addService(serviceDefinition(service, codecs), handlers as grpc.UntypedServiceImplementation);
}
