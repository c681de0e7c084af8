/**
 * Loads Drover's .proto contract with protobufjs and turns its services into grpc-js service
 * definitions. Protobuf objects stay at this edge: servers and clients convert to domain types
 * right where they call or are called.
 */
import * as path from 'node:path';
import * as protobuf from 'protobufjs';
import type * as grpc from '@grpc/grpc-js';

/** Folder that holds the .proto files (works from a checkout and from dist/). */
export const PROTO_DIR = path.resolve(__dirname, '..', '..', 'proto');

let root: protobuf.Root | undefined;

/** The parsed contract (loaded once per process). */
export function protoRoot(): protobuf.Root {
  if (root) return root;
  const r = new protobuf.Root();
  r.resolvePath = (_origin, target) => path.join(PROTO_DIR, target);
  r.loadSync(['drover/v1/common.proto', 'drover/v1/agent.proto', 'drover/v1/migration.proto'], { keepCase: false });
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

/** Encodes a plain object as message `type`, rejecting fields of the wrong type. */
export function encodeMessage(type: protobuf.Type, value: object): Buffer {
  const err = type.verify(value);
  if (err) throw new TypeError(`${type.name}: ${err}`);
  const bytes = type.encode(type.fromObject(value)).finish();
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** Decodes bytes of message `type` into a plain object (see TO_OBJECT). */
export function decodeMessage<T>(type: protobuf.Type, bytes: Buffer): T {
  return type.toObject(type.decode(bytes), TO_OBJECT) as T;
}

/** Custom (de)serialisers for one method, used to override the hot page stream. */
export interface MethodCodec {
  serializeRequest?: (value: any) => Buffer;
  deserializeRequest?: (bytes: Buffer) => any;
  serializeResponse?: (value: any) => Buffer;
  deserializeResponse?: (bytes: Buffer) => any;
}

/** A grpc-js ServiceDefinition for `drover.v1.<service>`, with optional per-method codecs. */
export function serviceDefinition(service: string, codecs: Record<string, MethodCodec> = {}): grpc.ServiceDefinition {
  const svc = protoRoot().lookupService(`drover.v1.${service}`);
  const def: Record<string, grpc.MethodDefinition<any, any>> = {};
  for (const method of svc.methodsArray) {
    method.resolve();
    const req = method.resolvedRequestType!;
    const res = method.resolvedResponseType!;
    const c = codecs[method.name] ?? {};
    def[method.name] = {
      path: `/drover.v1.${service}/${method.name}`,
      requestStream: !!method.requestStream,
      responseStream: !!method.responseStream,
      requestSerialize: c.serializeRequest ?? ((v: object) => encodeMessage(req, v)),
      requestDeserialize: c.deserializeRequest ?? ((b: Buffer) => decodeMessage(req, b)),
      responseSerialize: c.serializeResponse ?? ((v: object) => encodeMessage(res, v)),
      responseDeserialize: c.deserializeResponse ?? ((b: Buffer) => decodeMessage(res, b)),
      originalName: method.name,
    };
  }
  return def as grpc.ServiceDefinition;
}
