/**
 * Wire codec of the page stream: domain frames (protocol.ts) <-> protobuf bytes
 * (proto/drover/v1/migration.proto). Control frames go through protobufjs; page batches are
 * written by `BatchBuilder` straight into the buffer grpc-js sends — pages are copied once,
 * from guest RAM into that buffer, with no per-page objects. Decoding returns views, not copies.
 *
 * A batch frame is laid out with the payload first (protobuf allows any field order) and its
 * length prefixes as 5-byte padded varints, so the builder can copy pages before it knows how
 * many of them turn out to be zero:
 *
 *   0x1a len5 | 0x0a len5 payload... | 0x10 seq | 0x1a len ranges... | 0x22 len zero ranges... | 0x2d checksum32
 */
import { Type, Writer } from 'protobufjs';
import { messageType, TO_OBJECT } from '../../proto/load';
import { invalidArgument } from '../../lib/errors';
import { MAX_FRAME_BYTES, PAYLOAD_LZ4, PAYLOAD_RAW, type Ack, type Frame } from './protocol';

/** PayloadEncoding names protobufjs may decode to, and their values (an unknown one is -1: rejected). */
const ENCODING_VALUES: Record<string, number> = { PAYLOAD_RAW, PAYLOAD_LZ4 };

const FrameType = messageType('MigrationFrame');
const AckType = messageType('MigrationAck');
const FRAME_KINDS = new Set(['start', 'round', 'batch', 'complete', 'activate', 'abort', 'stream']);
const ACK_KINDS = new Set(['accepted', 'batch', 'verified', 'activated', 'owned', 'pageRequest', 'postcopyDone', 'resumed', 'stream']);
/** Outer tags of StreamData: MigrationFrame.stream = 8, MigrationAck.stream = 6 (wire type 2). */
const STREAM_FRAME_TAG = 0x42;
const STREAM_ACK_TAG = 0x32;

/** Bytes before the payload in a batch frame: two tags and two padded lengths. */
export const BATCH_HEADER_BYTES = 12;
/** Upper bound of bytes after the payload for `maxRanges` range pairs. */
function trailerBound(maxRanges: number): number {
  return 6 /* seq */ + 2 * (6 + maxRanges * 2 * 5) + 5 /* checksum */ + 2 /* encoding */;
}

function putPaddedVarint(buf: Buffer, at: number, v: number): void {
  buf[at] = (v & 0x7f) | 0x80;
  buf[at + 1] = ((v >>> 7) & 0x7f) | 0x80;
  buf[at + 2] = ((v >>> 14) & 0x7f) | 0x80;
  buf[at + 3] = ((v >>> 21) & 0x7f) | 0x80;
  buf[at + 4] = (v >>> 28) & 0x0f;
}

function putVarint(buf: Buffer, at: number, v: number): number {
  while (v > 0x7f) { buf[at++] = (v & 0x7f) | 0x80; v >>>= 7; }
  buf[at++] = v;
  return at;
}

function varintLen(v: number): number {
  return v < 0x80 ? 1 : v < 0x4000 ? 2 : v < 0x200000 ? 3 : v < 0x10000000 ? 4 : 5;
}

function putPacked(buf: Buffer, at: number, tag: number, values: number[]): number {
  if (values.length === 0) return at;
  let len = 0;
  for (const v of values) len += varintLen(v);
  buf[at++] = tag;
  at = putVarint(buf, at, len);
  for (const v of values) at = putVarint(buf, at, v);
  return at;
}

/**
 * Copies `len` bytes of `src` from `srcStart` into `dst` at `dstStart` with one native memcpy,
 * also when either side is guest RAM (a SharedArrayBuffer). Buffer#copy goes through
 * TypedArray#set, which on shared memory is V8's relaxed memmove (word by word, byte by byte
 * when unaligned): from a gRPC payload (unaligned) into guest RAM it cost 0.72-0.79 CPU s/GB on
 * the 2-core test machine, Buffer#fill with a value exactly as long as the range 0.17-0.19
 * (node's Fill is a memcpy of the value); from guest RAM into a frame 0.13-0.22 vs 0.11-0.16.
 */
export function copyBytes(src: Buffer, srcStart: number, dst: Buffer, dstStart: number, len: number): void {
  if (len <= 0) return;
  if (srcStart < 0 || dstStart < 0 || srcStart + len > src.length || dstStart + len > dst.length) throw new RangeError(`copyBytes: ${len} bytes from ${srcStart} of ${src.length} to ${dstStart} of ${dst.length} out of bounds`);
  dst.fill(src.subarray(srcStart, srcStart + len), dstStart, dstStart + len);
}

/**
 * Builds one page-batch frame in place. Usage: `payloadView()` gives the region to copy pages
 * into (in range order); then `finish(seq, ranges, zeroRanges, checksum, payloadBytes)`
 * returns the frame bytes (a view of the builder's buffer, which the caller must not reuse
 * until the peer acknowledged the batch).
 */
export class BatchBuilder {
  readonly buffer: Buffer;

  constructor(readonly maxPayload: number, readonly maxRanges: number) {
    this.buffer = Buffer.allocUnsafe(BATCH_HEADER_BYTES + maxPayload + trailerBound(maxRanges));
  }

  /** Where the payload goes: `maxPayload` bytes. */
  payloadView(): Buffer {
    return this.buffer.subarray(BATCH_HEADER_BYTES, BATCH_HEADER_BYTES + this.maxPayload);
  }

  /**
   * Writes the header and trailer around `payloadBytes` bytes of payload; returns the frame.
   * A non-RAW `encoding` (protocol.ts PayloadEncoding, < 128) is written into the trailer.
   */
  finish(seq: number, ranges: number[], zeroRanges: number[], checksum: number, payloadBytes: number, encoding = 0): Buffer {
    if (ranges.length + zeroRanges.length > this.maxRanges * 2) throw new RangeError('too many ranges for this builder');
    const b = this.buffer;
    let at = BATCH_HEADER_BYTES + payloadBytes;
    b[at++] = 0x10;
    at = putVarint(b, at, seq);
    at = putPacked(b, at, 0x1a, ranges);
    at = putPacked(b, at, 0x22, zeroRanges);
    b[at++] = 0x2d;
    b.writeUInt32LE(checksum >>> 0, at);
    at += 4;
    if (encoding) { b[at++] = 0x30; b[at++] = encoding & 0x7f; }
    b[0] = 0x1a;
    putPaddedVarint(b, 1, at - 6);
    b[6] = 0x0a;
    putPaddedVarint(b, 7, payloadBytes);
    return b.subarray(0, at);
  }
}

/**
 * The sequence number of a batch frame BatchBuilder built (read from its trailer, no decode);
 * undefined for any other bytes. The multi-stream channel routes and acknowledges by it.
 */
export function batchSeqOf(frame: Buffer): number | undefined {
  if (frame.length < BATCH_HEADER_BYTES + 2 || frame[0] !== 0x1a || frame[6] !== 0x0a) return undefined;
  const len = getVarint(frame, 7);
  if (!len || len[1] !== BATCH_HEADER_BYTES) return undefined;
  const at = BATCH_HEADER_BYTES + len[0];
  if (frame[at] !== 0x10) return undefined;
  return getVarint(frame, at + 1)?.[0];
}

/**
 * Encodes a StreamData (QEMU tunnel bytes) as a frame (`ack` false) or an ack (`ack` true),
 * gathering `chunks` straight into the one buffer grpc-js sends: one copy, no protobufjs Writer.
 */
export function encodeStream(chunks: Buffer[], channel = 0, eof = false, ack = false): Buffer {
  let n = 0;
  for (const c of chunks) n += c.length;
  const inner = 1 + varintLen(n) + n + (channel ? 1 + varintLen(channel) : 0) + (eof ? 2 : 0);
  const out = Buffer.allocUnsafe(1 + varintLen(inner) + inner);
  out[0] = ack ? STREAM_ACK_TAG : STREAM_FRAME_TAG;
  let at = putVarint(out, 1, inner);
  out[at++] = 0x0a;
  at = putVarint(out, at, n);
  for (const c of chunks) at += c.copy(out, at);
  if (channel) { out[at++] = 0x10; at = putVarint(out, at, channel); }
  if (eof) { out[at++] = 0x18; out[at++] = 1; }
  return out;
}

/** Reads a varint at `at`; returns [value, next] or undefined when malformed/over 32 bits. */
function getVarint(b: Buffer, at: number): [number, number] | undefined {
  let v = 0;
  for (let shift = 0; shift < 35; shift += 7) {
    if (at >= b.length) return undefined;
    const byte = b[at++];
    v += (byte & 0x7f) * 2 ** shift;
    if (byte < 0x80) return [v, at];
  }
  return undefined;
}

/**
 * Fast path for StreamData (frame or ack): returns a view of the data, no copy. Returns
 * undefined when `bytes` is not a plain StreamData message (the caller then uses protobufjs).
 */
function decodeStream(bytes: Buffer, tag: number): { kind: 'stream'; data: Buffer; channel: number; eof: boolean } | undefined {
  if (bytes[0] !== tag) return undefined;
  const len = getVarint(bytes, 1);
  if (!len || len[1] + len[0] !== bytes.length) return undefined;
  let at = len[1];
  let data: Buffer = Buffer.alloc(0), channel = 0, eof = false;
  while (at < bytes.length) {
    const t = bytes[at++];
    const v = getVarint(bytes, at);
    if (!v) return undefined;
    at = v[1];
    if (t === 0x0a) {
      if (at + v[0] > bytes.length) return undefined;
      data = bytes.subarray(at, at + v[0]);
      at += v[0];
    } else if (t === 0x10) channel = v[0];
    else if (t === 0x18) eof = v[0] !== 0;
    else return undefined;
  }
  return { kind: 'stream', data, channel, eof };
}

/**
 * Walks the wire tags of a `type` message (and of every message inside it) and refuses a field
 * number the type does not define: protobufjs skips unknown fields silently, and protocol.ts
 * promises they are rejected. Bytes fields (page payloads) are skipped whole, so the cost is per
 * field, not per byte. Call it on bytes protobufjs decoded (well-formed).
 */
function refuseUnknownFields(bytes: Uint8Array, type: Type, what: string): void {
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let at = 0;
  while (at < b.length) {
    const tag = getVarint(b, at);
    if (!tag) throw invalidArgument(`malformed ${what}: bad tag at byte ${at}`);
    at = tag[1];
    const id = Math.floor(tag[0] / 8), wt = tag[0] % 8;
    const field = type.fieldsById[id];
    if (!field) throw invalidArgument(`${what} has unknown field ${id} in ${type.name} (protocol.ts: unknown fields are rejected)`);
    if (wt === 0) {
      const v = getVarint(b, at) ?? skipLongVarint(b, at);
      at = v[1];
    } else if (wt === 1) at += 8;
    else if (wt === 5) at += 4;
    else if (wt === 2) {
      const len = getVarint(b, at);
      if (!len || len[1] + len[0] > b.length) throw invalidArgument(`malformed ${what}: bad length of field ${id} in ${type.name}`);
      const sub = field.resolve().resolvedType;
      if (sub instanceof Type) refuseUnknownFields(b.subarray(len[1], len[1] + len[0]), sub, what);
      at = len[1] + len[0];
    } else throw invalidArgument(`${what} has field ${id} in ${type.name} with wire type ${wt} (groups are not used)`);
  }
}

/** Skips a varint of up to 10 bytes (64-bit values protobufjs accepts); returns [0, next]. */
function skipLongVarint(b: Buffer, at: number): [number, number] {
  for (let i = 0; i < 10 && at < b.length; i++) if (b[at++] < 0x80) return [0, at];
  throw invalidArgument('malformed varint');
}

/** Outer tags: MigrationFrame.batch = 3, MigrationAck.batch = 2 (wire type 2). */
const BATCH_FRAME_TAG = 0x1a;
const BATCH_ACK_TAG = 0x12;

/** Writes a varint of up to 2^53 (BatchAck.bytes is a uint64) at `at`; returns the next offset. */
function putVarint53(buf: Buffer, at: number, v: number): number {
  while (v > 0x7f) { buf[at++] = (v % 128) | 0x80; v = Math.floor(v / 128); }
  buf[at++] = v;
  return at;
}

/**
 * Fast path for a BatchAck (one per batch applied, the target's most frequent message): the
 * bytes protobufjs would write, without its Writer and object walk.
 */
function encodeBatchAck(seq: number, bytes: number): Buffer {
  const b = Buffer.allocUnsafe(24);
  b[0] = BATCH_ACK_TAG;
  b[2] = 0x08;
  let at = putVarint53(b, 3, seq);
  b[at++] = 0x10;
  at = putVarint53(b, at, bytes);
  b[1] = at - 2;
  return b.subarray(0, at);
}

/** Fast path for a BatchAck with exactly fields 1 and 2 (or fewer); undefined sends the caller to protobufjs. */
function decodeBatchAck(b: Buffer): Extract<Ack, { kind: 'batch' }> | undefined {
  if (b[0] !== BATCH_ACK_TAG || b.length < 2 || b[1] !== b.length - 2) return undefined;
  let at = 2, seq = 0, bytes = 0;
  while (at < b.length) {
    const t = b[at++];
    const v = getVarint(b, at);
    if (!v || (t !== 0x08 && t !== 0x10)) return undefined;
    if (t === 0x08) seq = v[0]; else bytes = v[0];
    at = v[1];
  }
  return seq <= 0xffffffff ? { kind: 'batch', seq, bytes } : undefined;
}

/** Reads a packed uint32 field's values from `b[at, end)`; undefined when malformed or over 32 bits. */
function getPacked(b: Buffer, at: number, end: number): number[] | undefined {
  const out: number[] = [];
  while (at < end) {
    const v = getVarint(b, at);
    if (!v || v[0] > 0xffffffff || v[1] > end) return undefined;
    out.push(v[0]);
    at = v[1];
  }
  return out;
}

/**
 * Fast path for a PageBatch frame (the target's per-MiB message): fields 1-6 once each, in any
 * order, ranges packed, read straight off the bytes with the payload as a view. Anything else
 * (a field twice, unpacked ranges, an unknown field) returns undefined and goes to protobufjs,
 * which decodes it or refuses it as before.
 */
function decodeBatchFrame(bytes: Buffer): Extract<Frame, { kind: 'batch' }> | undefined {
  if (bytes[0] !== BATCH_FRAME_TAG) return undefined;
  const len = getVarint(bytes, 1);
  if (!len || len[1] + len[0] !== bytes.length) return undefined;
  const f: Extract<Frame, { kind: 'batch' }> = { kind: 'batch', seq: 0, ranges: [], zeroRanges: [], checksum: 0, payload: Buffer.alloc(0), encoding: 0 };
  let at = len[1], seen = 0;
  while (at < bytes.length) {
    const t = bytes[at++];
    const id = t >> 3;
    if (id < 1 || id > 6 || seen & (1 << id)) return undefined;
    seen |= 1 << id;
    if (t === 0x2d) {
      if (at + 4 > bytes.length) return undefined;
      f.checksum = bytes.readUInt32LE(at);
      at += 4;
      continue;
    }
    const v = getVarint(bytes, at);
    if (!v) return undefined;
    at = v[1];
    if (t === 0x10) { if (v[0] > 0xffffffff) return undefined; f.seq = v[0]; continue; }
    if (t === 0x30) { f.encoding = v[0]; continue; }
    if (t !== 0x0a && t !== 0x1a && t !== 0x22) return undefined;
    const end = at + v[0];
    if (end > bytes.length) return undefined;
    if (t === 0x0a) f.payload = bytes.subarray(at, end);
    else {
      const values = getPacked(bytes, at, end);
      if (!values) return undefined;
      if (t === 0x1a) f.ranges = values; else f.zeroRanges = values;
    }
    at = end;
  }
  return f;
}

/** Encodes a frame. Batch frames built by BatchBuilder are passed through as Buffers. */
export function encodeFrame(frame: Frame | Buffer): Buffer {
  if (Buffer.isBuffer(frame)) return frame;
  if (frame.kind === 'stream') return encodeStream([frame.data], frame.channel, frame.eof, false);
  const { kind, ...body } = frame;
  const w = FrameType.encode(FrameType.fromObject({ [kind]: body }), Writer.create()).finish();
  return Buffer.from(w.buffer, w.byteOffset, w.byteLength);
}

/** Decodes and checks a frame; INVALID_ARGUMENT for oversized, malformed or kind-less frames. */
export function decodeFrame(bytes: Buffer): Frame {
  if (bytes.length > MAX_FRAME_BYTES) throw invalidArgument(`frame of ${bytes.length} bytes exceeds the limit of ${MAX_FRAME_BYTES} bytes`);
  const fast = decodeStream(bytes, STREAM_FRAME_TAG) ?? decodeBatchFrame(bytes);
  if (fast) return fast;
  let obj: Record<string, unknown>;
  try {
    obj = FrameType.toObject(FrameType.decode(bytes), TO_OBJECT);
  } catch (err) {
    throw invalidArgument(`malformed frame: ${(err as Error).message}`, err);
  }
  refuseUnknownFields(bytes, FrameType, 'frame');
  const kind = obj.kind as string | undefined;
  if (!kind || !FRAME_KINDS.has(kind)) throw invalidArgument('frame has no known kind (expected start, round, batch, complete, activate, abort or stream)');
  const body = obj[kind] as Record<string, unknown>;
  if (kind === 'start' && !body.tunnel) delete body.tunnel; // "" = page stream
  if (kind === 'start' && !body.qemuTransport) delete body.qemuTransport; // "" = QEMU tunnel
  if (kind === 'start' && !body.qemuMultifdChannels) delete body.qemuMultifdChannels; // QEMU native multifd only
  if (kind === 'start' && !body.bulk) delete body.bulk; // "" = no bulk channel
  if (kind === 'start' && !(body.fence as { vmRevision?: string } | undefined)?.vmRevision) delete body.fence; // direct migration
  if (kind === 'start' && !body.resume) delete body.resume; // a new migration (not a post-copy recovery)
  if (kind === 'complete' && !body.postcopy) { delete body.postcopy; delete body.missing; } // pre-copy's Complete
  if (kind === 'batch') body.encoding = typeof body.encoding === 'string' ? (ENCODING_VALUES[body.encoding] ?? -1) : body.encoding;
  return { kind, ...body } as Frame;
}

/** Encodes an ack. */
export function encodeAck(ack: Ack): Buffer {
  if (ack.kind === 'stream') return encodeStream([ack.data], ack.channel, ack.eof, true);
  if (ack.kind === 'batch' && Number.isSafeInteger(ack.seq) && ack.seq >= 0 && ack.seq <= 0xffffffff && Number.isSafeInteger(ack.bytes) && ack.bytes >= 0) return encodeBatchAck(ack.seq, ack.bytes);
  const { kind, ...body } = ack;
  const w = AckType.encode(AckType.fromObject({ [kind]: body })).finish();
  return Buffer.from(w.buffer, w.byteOffset, w.byteLength);
}

/** Decodes an ack; an ack of no known kind is an error. */
export function decodeAck(bytes: Buffer): Ack {
  const fast = decodeStream(bytes, STREAM_ACK_TAG) ?? decodeBatchAck(bytes);
  if (fast) return fast;
  let obj: Record<string, unknown>;
  try {
    obj = AckType.toObject(AckType.decode(bytes), TO_OBJECT);
  } catch (err) {
    throw invalidArgument(`malformed ack: ${(err as Error).message}`, err);
  }
  refuseUnknownFields(bytes, AckType, 'ack');
  const kind = obj.kind as string | undefined;
  if (!kind || !ACK_KINDS.has(kind)) throw invalidArgument('ack has no known kind');
  const body = obj[kind] as Record<string, unknown>;
  if (kind === 'accepted' && !body.postcopy) delete body.postcopy; // QEMU tunnel only
  if (kind === 'accepted' && !body.joinToken) delete body.joinToken; // multi-stream stream 0 only
  if (kind === 'accepted' && !body.qemuListen) { delete body.qemuListen; delete body.qemuTransport; } // QEMU native only
  if (kind === 'accepted' && !body.qemuMultifdChannels) delete body.qemuMultifdChannels; // QEMU native multifd only
  if (kind === 'accepted' && !body.bulkPort) delete body.bulkPort; // bulk channel offered only
  return { kind, ...body } as Ack;
}
