/**
 * An LZ4 block decoder that writes straight into a caller's buffer (guest RAM on the target):
 * lz4-napi only decodes into a fresh buffer of its own, which the receiver then had to copy
 * into the guest's pages. The format is LZ4's block format (the one lz4_flex writes after the
 * u32 length prefix payload-codec.ts checks): sequences of a token, literals, a 2-byte offset
 * and a match length. Every read and write is bounds-checked; a malformed block throws before
 * it can write outside [dstStart, dstStart + dstLen).
 *
 * Long literal runs and matches are copied with Buffer#fill, which is one memcpy also into a
 * SharedArrayBuffer (frame-codec.ts copyBytes); a match that overlaps its own output (offset <
 * length: LZ4's run-length case) repeats the `offset` bytes before it, which is exactly what
 * fill with those bytes as the value writes.
 */

/** Runs shorter than this are copied byte by byte (a fill's view costs more than the loop). */
const SHORT_COPY_BYTES = 32;
/** A match is at least this long (LZ4's MINMATCH). */
const MIN_MATCH = 4;
/** Token nibble that says an extra length follows. */
const LENGTH_MORE = 15;

/** A malformed block: names what was wrong and where. */
export class Lz4FormatError extends Error {}

/** Reads an LZ4 extra length at `s` (bytes of 255 continue it); returns [extra, next]. */
function extraLength(src: Buffer, s: number, end: number): [number, number] {
  let n = 0, b = 255;
  while (b === 255) {
    if (s >= end) throw new Lz4FormatError(`length runs past the end of the block at byte ${s}`);
    b = src[s++];
    n += b;
  }
  return [n, s];
}

/**
 * Decodes the LZ4 block src[srcStart, srcEnd) into dst at dstStart; it must decode to exactly
 * `dstLen` bytes. Throws Lz4FormatError otherwise (dst may then hold part of the output).
 */
export function lz4DecodeInto(src: Buffer, srcStart: number, srcEnd: number, dst: Buffer, dstStart: number, dstLen: number): void {
  if (srcStart < 0 || srcEnd > src.length || dstStart < 0 || dstStart + dstLen > dst.length) throw new RangeError('lz4DecodeInto: bounds outside the buffers');
  const dEnd = dstStart + dstLen;
  let s = srcStart, d = dstStart;
  while (s < srcEnd) {
    const token = src[s++];
    let lit = token >>> 4;
    if (lit === LENGTH_MORE) { const [n, next] = extraLength(src, s, srcEnd); lit += n; s = next; }
    if (s + lit > srcEnd || d + lit > dEnd) throw new Lz4FormatError(`literals of ${lit} bytes at byte ${s} run past the block or the output`);
    if (lit < SHORT_COPY_BYTES) for (let i = 0; i < lit; i++) dst[d + i] = src[s + i];
    else dst.fill(src.subarray(s, s + lit), d, d + lit);
    s += lit;
    d += lit;
    if (s === srcEnd) break; // the last sequence has literals only
    if (s + 2 > srcEnd) throw new Lz4FormatError(`match offset cut off at byte ${s}`);
    const offset = src[s] | (src[s + 1] << 8);
    s += 2;
    if (offset === 0 || offset > d - dstStart) throw new Lz4FormatError(`match offset ${offset} at output byte ${d - dstStart} points outside the output`);
    let len = (token & 15) + MIN_MATCH;
    if ((token & 15) === LENGTH_MORE) { const [n, next] = extraLength(src, s, srcEnd); len += n; s = next; }
    if (d + len > dEnd) throw new Lz4FormatError(`match of ${len} bytes at output byte ${d - dstStart} runs past the output`);
    const from = d - offset;
    if (len < SHORT_COPY_BYTES) for (let i = 0; i < len; i++) dst[d + i] = dst[from + i];
    else dst.fill(dst.subarray(from, Math.min(d, from + len)), d, d + len);
    d += len;
  }
  if (d !== dEnd) throw new Lz4FormatError(`block decodes to ${d - dstStart} bytes, expected ${dstLen}`);
}
