/**
 * IPv6 addresses as table keys without strings or bigints: a 32-bit hash of the 16 bytes picks a
 * bucket, and the bucket's entries are compared byte for byte. Hashing and comparing read the
 * address straight from a packet buffer, so a lookup allocates nothing.
 */
export function hashIpv6(buf: Uint8Array, off: number, prefixLength = 128): number {
  let h = 0x811c9dc5 ^ prefixLength;
  for (let i = 0; i < 16; i++) {
    const bits = prefixLength - i * 8;
    const byte =
      bits >= 8 ? buf[off + i] : bits <= 0 ? 0 : buf[off + i] & ((0xff00 >> bits) & 0xff);
    h = Math.imul(h ^ byte, 0x01000193);
  }
  return h >>> 0;
}

/** Compares `prefixLength` leading bits of the address at buf[off] with `key` (16 bytes). */
export function ipv6PrefixEquals(
  buf: Uint8Array,
  off: number,
  key: Uint8Array,
  prefixLength = 128,
): boolean {
  const whole = prefixLength >>> 3;
  for (let i = 0; i < whole; i++) if (buf[off + i] !== key[i]) return false;
  const rest = prefixLength & 7;
  if (rest === 0) return true;
  const mask = (0xff00 >> rest) & 0xff;
  return (buf[off + whole] & mask) === (key[whole] & mask);
}

/** The bucket key: the hash as a signed 32-bit number, which a Map holds unboxed (a small integer). */
function bucketOf(buf: Uint8Array, off: number, prefixLength: number): number {
  return hashIpv6(buf, off, prefixLength) | 0;
}

/** A map from IPv6 address (or prefix of one fixed length) to a value. */
export class Ipv6Map<V> {
  private readonly buckets = new Map<number, { key: Uint8Array; value: V }[]>();
  private count = 0;

  constructor(readonly prefixLength = 128) {}

  get size(): number {
    return this.count;
  }

  /** Hot path: reads the address at buf[off]; no allocation. */
  get(buf: Uint8Array, off = 0): V | undefined {
    const bucket = this.buckets.get(bucketOf(buf, off, this.prefixLength));
    if (bucket === undefined) return undefined;
    for (let i = 0; i < bucket.length; i++) {
      if (ipv6PrefixEquals(buf, off, bucket[i].key, this.prefixLength)) return bucket[i].value;
    }
    return undefined;
  }

  /** Sets the value for the prefix of `key` (the key's bytes are copied). */
  set(key: Uint8Array, value: V): void {
    const h = bucketOf(key, 0, this.prefixLength);
    let bucket = this.buckets.get(h);
    if (bucket === undefined) {
      bucket = [];
      this.buckets.set(h, bucket);
    }
    for (const item of bucket) {
      if (ipv6PrefixEquals(key, 0, item.key, this.prefixLength)) {
        item.value = value;
        return;
      }
    }
    bucket.push({ key: Uint8Array.from(key), value });
    this.count++;
  }

  /** Removes the value for the prefix of `key`; false when there was none. */
  delete(key: Uint8Array): boolean {
    const h = bucketOf(key, 0, this.prefixLength);
    const bucket = this.buckets.get(h);
    if (bucket === undefined) return false;
    const i = bucket.findIndex((item) => ipv6PrefixEquals(key, 0, item.key, this.prefixLength));
    if (i < 0) return false;
    bucket.splice(i, 1);
    if (bucket.length === 0) this.buckets.delete(h);
    this.count--;
    return true;
  }

  /** Every key (a copy of the bytes it was set with) and its value. */
  *entries(): IterableIterator<[Uint8Array, V]> {
    for (const bucket of this.buckets.values())
      for (const item of bucket) yield [item.key, item.value];
  }
}
