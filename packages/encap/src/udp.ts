import { read16, write16 } from './bytes.js';
import { finish, sum16 } from './checksum.js';
import { Ipv4Field } from './ipv4.js';
import { Ipv6Field } from './ipv6.js';
import { checkRange, EncapError, EncapErrorCode, malformed, truncated } from './status.js';

/*
 * UDP header (RFC 768):
 *
 *  0      7 8     15 16    23 24    31
 * +--------+--------+--------+--------+
 * |     Source      |   Destination   |
 * |      Port       |      Port       |
 * +--------+--------+--------+--------+
 * |     Length      |    Checksum     |
 * +--------+--------+--------+--------+
 */
/** Byte offsets of the UDP header's fields (RFC 768). */
export const UdpField = { srcPort: 0, dstPort: 2, length: 4, checksum: 6 } as const;
/** A UDP header (RFC 768). */
export const UDP_HEADER_BYTES = 8;
const UDP_PROTOCOL = 17;

/** The source port of the UDP header at `off`. */
export function udpSrcPort(buf: Uint8Array, off: number): number {
  return read16(buf, off + UdpField.srcPort);
}
/** The destination port. */
export function udpDstPort(buf: Uint8Array, off: number): number {
  return read16(buf, off + UdpField.dstPort);
}
/** The Length field: header and payload, in bytes. */
export function udpLength(buf: Uint8Array, off: number): number {
  return read16(buf, off + UdpField.length);
}

/** The UDP checksum over the IPv4 pseudo-header (RFC 768) for the UDP datagram at udpOff. */
export function udpChecksumIpv4(
  buf: Uint8Array,
  ipOff: number,
  udpOff: number,
  udpBytes: number,
): number {
  let sum = sum16(buf, ipOff + Ipv4Field.src, 8); // source and destination addresses
  sum += UDP_PROTOCOL + udpBytes;
  sum = sum16(buf, udpOff, udpBytes, sum);
  // RFC 768: a computed zero is sent as all ones; zero means "no checksum".
  return finish(sum) || 0xffff;
}

/** The UDP checksum over the IPv6 pseudo-header (RFC 8200 section 8.1). */
export function udpChecksumIpv6(
  buf: Uint8Array,
  ipOff: number,
  udpOff: number,
  udpBytes: number,
): number {
  let sum = sum16(buf, ipOff + Ipv6Field.src, 32);
  sum += UDP_PROTOCOL + udpBytes;
  sum = sum16(buf, udpOff, udpBytes, sum);
  return finish(sum) || 0xffff;
}

/** Hot path: verifies a datagram's checksum. IPv4 accepts zero (no checksum); IPv6 does not. */
export function udpChecksumOk(
  buf: Uint8Array,
  ipOff: number,
  udpOff: number,
  udpBytes: number,
  ipVersion: 4 | 6,
): boolean {
  const stored = read16(buf, udpOff + UdpField.checksum);
  if (stored === 0) return ipVersion === 4;
  let sum = sum16(
    buf,
    ipOff + (ipVersion === 4 ? Ipv4Field.src : Ipv6Field.src),
    ipVersion === 4 ? 8 : 32,
  );
  sum += UDP_PROTOCOL + udpBytes;
  sum = sum16(buf, udpOff, udpBytes, sum);
  return finish(sum) === 0;
}

/** Writes a UDP header for `payloadBytes` of payload with checksum 0 (none: allowed over IPv4). */
export function writeUdpHeader(
  buf: Uint8Array,
  off: number,
  srcPort: number,
  dstPort: number,
  payloadBytes: number,
): void {
  write16(buf, off + UdpField.srcPort, srcPort);
  write16(buf, off + UdpField.dstPort, dstPort);
  write16(buf, off + UdpField.length, UDP_HEADER_BYTES + payloadBytes);
  write16(buf, off + UdpField.checksum, 0);
}

/** A UDP header as plain values. */
export interface UdpRepr {
  srcPort: number;
  dstPort: number;
  /** Bytes after the 8-byte header. */
  payloadLength: number;
  /** The checksum field as found (parse) or to write (emit); `undefined` on emit means compute it. */
  checksum?: number;
}

/** Where the UDP datagram sits, for pseudo-header checksums. */
export interface UdpContext {
  ipVersion: 4 | 6;
  /** Offset of the IP header in the same buffer. */
  ipOffset: number;
}

/**
 * The checked UDP codec: parse into a {@link UdpRepr}, emit one (given a context, with its checksum).
 */
export const udp = {
  /**
   * Parses the header at `off`. With a context the checksum is verified (zero accepted over
   * IPv4, as RFC 768 allows).
   */
  parse(buf: Uint8Array, off = 0, len = buf.length - off, context?: UdpContext): UdpRepr {
    if (len < UDP_HEADER_BYTES) throw truncated('udp header', UDP_HEADER_BYTES, len);
    const length = udpLength(buf, off);
    if (length < UDP_HEADER_BYTES)
      throw malformed('udp.length', `${length} is less than the 8-byte header`);
    if (length > len) throw truncated('udp datagram (length)', length, len);
    const checksum = read16(buf, off + UdpField.checksum);
    if (context && !udpChecksumOk(buf, context.ipOffset, off, length, context.ipVersion)) {
      throw new EncapError(
        EncapErrorCode.checksum,
        'udp.checksum',
        checksum === 0
          ? 'udp.checksum: zero (no checksum) is not allowed over IPv6'
          : 'udp.checksum: does not verify over the pseudo-header',
      );
    }
    return {
      srcPort: udpSrcPort(buf, off),
      dstPort: udpDstPort(buf, off),
      payloadLength: length - UDP_HEADER_BYTES,
      checksum,
    };
  },

  /** The bytes `emit` writes: {@link UDP_HEADER_BYTES}. */
  bufferLength(_repr: UdpRepr): number {
    return UDP_HEADER_BYTES;
  },

  /**
   * Writes the header at `off`. The payload must already be in place after it when the checksum
   * is computed: pass a context to compute it, or `repr.checksum` to write a given value (0 for none).
   */
  emit(repr: UdpRepr, buf: Uint8Array, off = 0, context?: UdpContext): number {
    if (buf.length - off < UDP_HEADER_BYTES)
      throw truncated('udp output', UDP_HEADER_BYTES, buf.length - off);
    checkRange('udp.srcPort', repr.srcPort, 0xffff);
    checkRange('udp.dstPort', repr.dstPort, 0xffff);
    checkRange('udp.length', UDP_HEADER_BYTES + repr.payloadLength, 0xffff);
    writeUdpHeader(buf, off, repr.srcPort, repr.dstPort, repr.payloadLength);
    const udpBytes = UDP_HEADER_BYTES + repr.payloadLength;
    if (repr.checksum !== undefined) {
      checkRange('udp.checksum', repr.checksum, 0xffff);
      write16(buf, off + UdpField.checksum, repr.checksum);
    } else if (context) {
      if (buf.length - off < udpBytes)
        throw truncated('udp payload for checksum', udpBytes, buf.length - off);
      const sum =
        context.ipVersion === 4
          ? udpChecksumIpv4(buf, context.ipOffset, off, udpBytes)
          : udpChecksumIpv6(buf, context.ipOffset, off, udpBytes);
      write16(buf, off + UdpField.checksum, sum);
    }
    return UDP_HEADER_BYTES;
  },
};
