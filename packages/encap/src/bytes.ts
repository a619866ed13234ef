/** Big-endian field access on plain byte arrays: shared by every format, no allocation. */
export function read16(buf: Uint8Array, off: number): number {
  return (buf[off] << 8) | buf[off + 1];
}

/** Writes a big-endian 16-bit integer. */
export function write16(buf: Uint8Array, off: number, value: number): void {
  buf[off] = value >>> 8;
  buf[off + 1] = value;
}

/** Reads a big-endian (network order) 32-bit unsigned integer. */
export function read32(buf: Uint8Array, off: number): number {
  return ((buf[off] << 24) | (buf[off + 1] << 16) | (buf[off + 2] << 8) | buf[off + 3]) >>> 0;
}

/** Writes a big-endian 32-bit integer. */
export function write32(buf: Uint8Array, off: number, value: number): void {
  buf[off] = value >>> 24;
  buf[off + 1] = value >>> 16;
  buf[off + 2] = value >>> 8;
  buf[off + 3] = value;
}

/** A MAC address as a 48-bit number (exact in a double). */
export function readMac(buf: Uint8Array, off: number): number {
  return read16(buf, off) * 0x100000000 + read32(buf, off + 2);
}

/** Writes a MAC (a 48-bit number) as six bytes. */
export function writeMac(buf: Uint8Array, off: number, mac: number): void {
  write16(buf, off, Math.floor(mac / 0x100000000));
  write32(buf, off + 2, mac >>> 0);
}

/** True when the first octet's I/G bit marks a group (multicast or broadcast) address. */
export function macAtIsGroup(buf: Uint8Array, off: number): boolean {
  return (buf[off] & 1) === 1;
}

/** A copy of a byte range as a plain Uint8Array (never a Buffer view), for plain-value reprs. */
export function copyOut(buf: Uint8Array, start: number, end: number): Uint8Array {
  const out = new Uint8Array(end - start);
  out.set(buf.subarray(start, end));
  return out;
}
