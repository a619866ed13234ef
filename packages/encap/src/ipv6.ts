import { copyOut, read16, write16 } from './bytes.js';
import { checkRange, malformed, Status, truncated } from './status.js';

/*
 * IPv6 fixed header (RFC 8200 section 3):
 *
 * +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 * |Version| Traffic Class |           Flow Label                  |
 * +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 * |         Payload Length        |  Next Header  |   Hop Limit   |
 * +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 * |                  Source Address (128 bits)                    |
 * +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 * |               Destination Address (128 bits)                  |
 * +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 */
/** Byte offsets of the IPv6 header's fields (RFC 8200 section 3). */
export const Ipv6Field = {
  versionClassFlow: 0,
  payloadLength: 4,
  nextHeader: 6,
  hopLimit: 7,
  src: 8,
  dst: 24,
} as const;

/** The fixed IPv6 header (RFC 8200 section 3). */
export const IPV6_HEADER_BYTES = 40;
/** RFC 8200 section 5: every link must carry 1280-byte packets. */
export const IPV6_MIN_MTU = 1280;

/** The Payload Length field: bytes after the fixed header. */
export function ipv6PayloadLength(buf: Uint8Array, off: number): number {
  return read16(buf, off + Ipv6Field.payloadLength);
}
/** The Next Header field (see {@link IpProtocol}). */
export function ipv6NextHeader(buf: Uint8Array, off: number): number {
  return buf[off + Ipv6Field.nextHeader];
}
/** The Hop Limit field. */
export function ipv6HopLimit(buf: Uint8Array, off: number): number {
  return buf[off + Ipv6Field.hopLimit];
}

/**
 * The gate before the readers: version 6 and the payload length within the buffer (RFC 8200
 * jumbograms, payload length 0, are not carried). Never throws.
 */
export function ipv6Check(buf: Uint8Array, off: number, len: number): Status {
  if (len < IPV6_HEADER_BYTES) return Status.truncated;
  if (buf[off] >>> 4 !== 6) return Status.badVersion;
  // A payload length beyond the buffer: the packet was cut.
  if (IPV6_HEADER_BYTES + read16(buf, off + Ipv6Field.payloadLength) > len) return Status.truncated;
  return Status.ok;
}

/** Decrements the hop limit in place (no checksum in IPv6); ttlExpired when it would reach 0. */
export function ipv6DecrementHopLimit(buf: Uint8Array, off: number): Status {
  const hops = buf[off + Ipv6Field.hopLimit];
  if (hops <= 1) return Status.ttlExpired;
  buf[off + Ipv6Field.hopLimit] = hops - 1;
  return Status.ok;
}

/** An IPv6 header as plain values (addresses as 16-byte arrays). */
export interface Ipv6Repr {
  src: Uint8Array;
  dst: Uint8Array;
  nextHeader: number;
  hopLimit: number;
  payloadLength: number;
  trafficClass?: number;
  flowLabel?: number;
}

/** The checked IPv6 codec: parse into an {@link Ipv6Repr}, emit one. */
export const ipv6 = {
  /** Reads and checks the fixed header at `off`; a short or malformed one throws an EncapError. */
  parse(buf: Uint8Array, off = 0, len = buf.length - off): Ipv6Repr {
    if (len < IPV6_HEADER_BYTES) throw truncated('ipv6 header', IPV6_HEADER_BYTES, len);
    const version = buf[off] >>> 4;
    if (version !== 6) throw malformed('ipv6.version', `${version}, expected 6`);
    const payloadLength = ipv6PayloadLength(buf, off);
    if (IPV6_HEADER_BYTES + payloadLength > len) {
      throw truncated('ipv6 packet (payload length)', IPV6_HEADER_BYTES + payloadLength, len);
    }
    const word = ((buf[off] << 24) | (buf[off + 1] << 16) | read16(buf, off + 2)) >>> 0;
    return {
      src: copyOut(buf, off + Ipv6Field.src, off + Ipv6Field.src + 16),
      dst: copyOut(buf, off + Ipv6Field.dst, off + Ipv6Field.dst + 16),
      nextHeader: ipv6NextHeader(buf, off),
      hopLimit: ipv6HopLimit(buf, off),
      payloadLength,
      trafficClass: (word >>> 20) & 0xff,
      flowLabel: word & 0xfffff,
    };
  },

  /** The bytes `emit` writes: {@link IPV6_HEADER_BYTES}. */
  bufferLength(_repr: Ipv6Repr): number {
    return IPV6_HEADER_BYTES;
  },

  /** Writes `repr` at `off` (values checked first); returns the bytes written. */
  emit(repr: Ipv6Repr, buf: Uint8Array, off = 0): number {
    if (buf.length - off < IPV6_HEADER_BYTES)
      throw truncated('ipv6 output', IPV6_HEADER_BYTES, buf.length - off);
    if (repr.src.length !== 16)
      throw malformed('ipv6.src', `${repr.src.length} bytes, expected 16`);
    if (repr.dst.length !== 16)
      throw malformed('ipv6.dst', `${repr.dst.length} bytes, expected 16`);
    const trafficClass = repr.trafficClass ?? 0;
    const flowLabel = repr.flowLabel ?? 0;
    checkRange('ipv6.trafficClass', trafficClass, 0xff);
    checkRange('ipv6.flowLabel', flowLabel, 0xfffff);
    checkRange('ipv6.payloadLength', repr.payloadLength, 0xffff);
    checkRange('ipv6.nextHeader', repr.nextHeader, 0xff);
    checkRange('ipv6.hopLimit', repr.hopLimit, 0xff);
    buf[off] = 0x60 | (trafficClass >>> 4);
    buf[off + 1] = ((trafficClass & 0x0f) << 4) | (flowLabel >>> 16);
    write16(buf, off + 2, flowLabel & 0xffff);
    write16(buf, off + Ipv6Field.payloadLength, repr.payloadLength);
    buf[off + Ipv6Field.nextHeader] = repr.nextHeader;
    buf[off + Ipv6Field.hopLimit] = repr.hopLimit;
    buf.set(repr.src, off + Ipv6Field.src);
    buf.set(repr.dst, off + Ipv6Field.dst);
    return IPV6_HEADER_BYTES;
  },
};
