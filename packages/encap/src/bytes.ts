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

/**
 * Hot path: a big-endian 32-bit word as a signed number. A small integer to V8, never boxed where
 * it crosses a call, where read32's unsigned value >= 2^31 is a heap number. Compare addresses
 * as `read32(...) | 0` or with this.
 */
export function readInt32(buf: Uint8Array, off: number): number {
  return (buf[off] << 24) | (buf[off + 1] << 16) | (buf[off + 2] << 8) | buf[off + 3];
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

/**
 * Hot path: writes a MAC given as its words: `high` its first two octets, `low` the last four (a
 * signed or unsigned 32-bit number). Small integers, which no call boxes, where a 48-bit number
 * would be.
 */
export function writeMacWords(buf: Uint8Array, off: number, high: number, low: number): void {
  buf[off] = high >>> 8;
  buf[off + 1] = high;
  buf[off + 2] = low >>> 24;
  buf[off + 3] = low >>> 16;
  buf[off + 4] = low >>> 8;
  buf[off + 5] = low;
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

const dataViews = new WeakMap<ArrayBufferLike, DataView>();

/** A DataView over the whole ArrayBuffer behind `buf`, made once per buffer. */
export function dataViewOf(buf: Uint8Array): DataView {
  const ab = buf.buffer;
  let view = dataViews.get(ab);
  if (view === undefined) {
    view = new DataView(ab);
    dataViews.set(ab, view);
  }
  return view;
}

/**
 * Hot path: copies `n` bytes from src[srcOff] to dst[dstOff] (ranges must not overlap) without
 * allocating: on Node 20, `Buffer.prototype.copy` with a source start other than 0 makes a view
 * (about 96 bytes) for every call. 32-bit words through DataViews made once per buffer.
 */
export function copyBytes(
  src: Uint8Array,
  srcOff: number,
  dst: Uint8Array,
  dstOff: number,
  n: number,
): void {
  let i = 0;
  if (n >= 16) {
    const s = dataViewOf(src);
    const d = dataViewOf(dst);
    const so = src.byteOffset + srcOff;
    const dO = dst.byteOffset + dstOff;
    for (; i + 4 <= n; i += 4) d.setInt32(dO + i, s.getInt32(so + i, true), true);
  }
  for (; i < n; i++) dst[dstOff + i] = src[srcOff + i];
}
