/**
 * Page-batch payload encodings (protocol.ts PayloadEncoding): LZ4 blocks from lz4-napi (lz4_flex,
 * the block format with its uncompressed length prefixed as u32 LE). The sender encodes the
 * batch's page bytes; the receiver checks the length prefix against what the batch's range table
 * names before it decodes a byte, so no frame makes it allocate more than its pages (no
 * decompression bomb), then checks the decoded length again.
 */
import { compressSync, uncompressSync } from 'lz4-napi';
import { invalidArgument } from '../../lib/errors';
import { lz4DecodeInto } from './lz4-block';
import { PAYLOAD_LZ4, PAYLOAD_RAW } from './protocol';

/** Bytes of the length prefix an LZ4 payload starts with. */
const LZ4_PREFIX_BYTES = 4;

/** LZ4-encodes `raw` (the page bytes of one batch): length prefix + one LZ4 block. */
export function lz4Encode(raw: Buffer): Buffer {
  return compressSync(raw);
}

/**
 * The page bytes of a batch payload in `encoding`, which must decode to exactly `pageBytes`
 * bytes (4 KiB x the pages its range table names). RAW is returned as is; INVALID_ARGUMENT names
 * batch `seq` and what was wrong (an unknown encoding, a prefix that disagrees with the range
 * table, a block that does not decode to it).
 */
export function decodePayload(seq: number, encoding: number, payload: Buffer, pageBytes: number): Buffer {
  if (encoding === PAYLOAD_RAW) return payload;
  checkLz4Prefix(seq, encoding, payload, pageBytes);
  let raw: Buffer;
  try {
    raw = uncompressSync(payload);
  } catch (err) {
    throw invalidArgument(`batch ${seq}: LZ4 payload does not decode: ${(err as Error).message}`, err);
  }
  if (raw.length !== pageBytes) throw invalidArgument(`batch ${seq}: LZ4 payload decoded to ${raw.length} bytes, its ranges name ${pageBytes}`);
  return raw;
}

/** Refuses an encoding other than LZ4, and an LZ4 payload whose length prefix is not `pageBytes`. */
function checkLz4Prefix(seq: number, encoding: number, payload: Buffer, pageBytes: number): void {
  if (encoding !== PAYLOAD_LZ4) throw invalidArgument(`batch ${seq}: unknown payload encoding ${encoding}`);
  if (payload.length < LZ4_PREFIX_BYTES) throw invalidArgument(`batch ${seq}: LZ4 payload of ${payload.length} bytes is shorter than its length prefix`);
  const declared = payload.readUInt32LE(0);
  if (declared !== pageBytes) throw invalidArgument(`batch ${seq}: LZ4 payload declares ${declared} bytes but its ranges name ${pageBytes}`);
}

/**
 * Decodes an encoded (non-RAW) batch payload straight into `dst` (exactly `pageBytes` long: the
 * guest pages of a batch with one range), with no buffer of its own. Same checks and errors as
 * decodePayload; on an error `dst` may hold part of the pages (the receiver then discards).
 */
export function decodePayloadInto(seq: number, encoding: number, payload: Buffer, pageBytes: number, dst: Buffer): void {
  checkLz4Prefix(seq, encoding, payload, pageBytes);
  if (dst.length !== pageBytes) throw new RangeError(`decodePayloadInto: ${dst.length} bytes of room for ${pageBytes}`);
  try {
    lz4DecodeInto(payload, LZ4_PREFIX_BYTES, payload.length, dst, 0, pageBytes);
  } catch (err) {
    throw invalidArgument(`batch ${seq}: LZ4 payload does not decode: ${(err as Error).message}`, err);
  }
}
