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
  let little = 0;
  for (let k = first, stop = first + count; k < stop; k++) little += view[k];
  const folded = fold(little);
  return ((folded & 0xff) << 8) | (folded >>> 8);
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
