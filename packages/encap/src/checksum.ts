import { dataViewOf } from './bytes.js';

/**
 * The Internet checksum (RFC 1071): the ones' complement of the ones' complement sum of 16-bit
 * words. `sum16` returns the unfolded running sum so pseudo-headers and payloads can be added in
 * pieces; `finish` folds and complements it.
 */
export function sum16(buf: Uint8Array, offset: number, length: number, initial = 0): number {
  let sum = initial;
  let i = offset;
  const end = offset + length;
  // Long runs at an even address: 32 bits at a time (see sumWords), after at most one 16-bit word.
  if (length >= 64 && ((buf.byteOffset + i) & 1) === 0) {
    if (((buf.byteOffset + i) & 3) === 2) {
      sum += (buf[i] << 8) | buf[i + 1];
      i += 2;
    }
    const words = (end - i) >>> 2;
    sum += sumWords(buf, i, words);
    i += words << 2;
  }
  const last = end - 1;
  for (; i < last; i += 2) sum += (buf[i] << 8) | buf[i + 1];
  // An odd trailing byte is padded with zero on the right (RFC 1071 4.1).
  if (i === last) sum += buf[i] << 8;
  return sum;
}

const views = new WeakMap<ArrayBufferLike, Uint32Array>();

/**
 * The big-endian 16-bit ones' complement sum of `count` 32-bit words from a 4-byte-aligned
 * offset, read as host (little-endian) 32-bit words: a word w is its two little-endian halves,
 * w = lo + hi * 2^16, which is lo + hi modulo 2^16 - 1; and a sum of byte-swapped words is the
 * byte-swapped sum (RFC 1071 2(B)).
 */
function sumWords(buf: Uint8Array, offset: number, count: number): number {
  let view = views.get(buf.buffer);
  if (view === undefined) {
    view = new Uint32Array(buf.buffer, 0, buf.buffer.byteLength >>> 2);
    views.set(buf.buffer, view);
  }
  const first = (buf.byteOffset + offset) >>> 2;
  // Each word's halves summed apart: small integers, never boxed (see copySum16).
  let low = 0;
  let high = 0;
  for (let k = first, stop = first + count; k < stop; k++) {
    const w = view[k];
    low += w & 0xffff;
    high += w >>> 16;
  }
  const folded = fold(fold(low) + fold(high));
  return ((folded & 0xff) << 8) | (folded >>> 8);
}

/**
 * Hot path: copies `n` bytes from src[srcOff] to dst[dstOff] (ranges must not overlap) and returns
 * `initial` plus their unfolded 16-bit sum, as sum16 over the copied bytes would: one pass over
 * the bytes instead of a copy and a sum, and no view allocated (see copyBytes).
 */
export function copySum16(
  src: Uint8Array,
  srcOff: number,
  dst: Uint8Array,
  dstOff: number,
  n: number,
  initial = 0,
): number {
  let i = 0;
  let sum = initial;
  if (n >= 16) {
    const s = dataViewOf(src);
    const d = dataViewOf(dst);
    const so = src.byteOffset + srcOff;
    const dO = dst.byteOffset + dstOff;
    // Little-endian words, summed: their folded sum is the byte-swapped big-endian sum (RFC 1071
    // 2(B)). Each word's halves are summed apart, so both sums stay small integers (a double would
    // be boxed where it meets fold).
    let low = 0;
    let high = 0;
    for (; i + 4 <= n; i += 4) {
      const w = s.getInt32(so + i, true);
      d.setInt32(dO + i, w, true);
      low += w & 0xffff;
      high += w >>> 16;
    }
    const folded = fold(fold(low) + fold(high));
    sum += ((folded & 0xff) << 8) | (folded >>> 8);
  }
  for (; i + 1 < n; i += 2) {
    const hi = src[srcOff + i];
    const lo = src[srcOff + i + 1];
    dst[dstOff + i] = hi;
    dst[dstOff + i + 1] = lo;
    sum += (hi << 8) | lo;
  }
  // An odd trailing byte is padded with zero on the right (RFC 1071 4.1).
  if (i < n) {
    dst[dstOff + i] = src[srcOff + i];
    sum += src[srcOff + i] << 8;
  }
  return sum;
}

/** Folds a running sum to 16 bits. */
export function fold(sum: number): number {
  while (sum > 0xffff) sum = (sum & 0xffff) + Math.floor(sum / 0x10000);
  return sum;
}

/** Folds and complements: the value to write into a checksum field. */
export function finish(sum: number): number {
  return ~fold(sum) & 0xffff;
}

/** The checksum of a byte range, as it belongs in the header. */
export function internetChecksum(buf: Uint8Array, offset: number, length: number): number {
  return finish(sum16(buf, offset, length));
}

/**
 * RFC 1624 equation 3: the new checksum after one 16-bit word of the covered data changes from
 * `oldWord` to `newWord`, without summing the rest again: HC' = ~(~HC + ~m + m').
 */
export function checksumAdjust(checksum: number, oldWord: number, newWord: number): number {
  return ~fold((~checksum & 0xffff) + (~oldWord & 0xffff) + newWord) & 0xffff;
}
