/**
 * The Internet checksum (RFC 1071): the ones' complement of the ones' complement sum of 16-bit
 * words. `sum16` returns the unfolded running sum so pseudo-headers and payloads can be added in
 * pieces; `finish` folds and complements it.
 */
export function sum16(buf: Uint8Array, offset: number, length: number, initial = 0): number {
  let sum = initial;
  const end = offset + length - 1;
  let i = offset;
  for (; i < end; i += 2) sum += (buf[i] << 8) | buf[i + 1];
  // An odd trailing byte is padded with zero on the right (RFC 1071 4.1).
  if (i === end) sum += buf[i] << 8;
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
