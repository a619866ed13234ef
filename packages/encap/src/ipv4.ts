import { copyOut, read16, read32, write16, write32 } from './bytes.js';
import { checksumAdjust, internetChecksum } from './checksum.js';
import { checkRange, EncapError, EncapErrorCode, malformed, Status, truncated } from './status.js';

/*
 * IPv4 header (RFC 791 section 3.1):
 *
 *  0                   1                   2                   3
 *  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
 * +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 * |Version|  IHL  |Type of Service|          Total Length         |
 * +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 * |         Identification        |Flags|      Fragment Offset    |
 * +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 * |  Time to Live |    Protocol   |         Header Checksum       |
 * +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 * |                       Source Address                          |
 * +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 * |                    Destination Address                        |
 * +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 * |                    Options                    |    Padding    |
 * +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 */
/** Byte offsets of the IPv4 header's fields (RFC 791 section 3.1). */
export const Ipv4Field = {
  versionIhl: 0,
  dscpEcn: 1,
  totalLength: 2,
  identification: 4,
  flagsFragment: 6,
  ttl: 8,
  protocol: 9,
  checksum: 10,
  src: 12,
  dst: 16,
  options: 20,
} as const;

/** Without options; IHL counts 32-bit words, so the header is 20 to 60 bytes. */
export const IPV4_HEADER_BYTES = 20;
/** The longest IPv4 header: IHL 15, 60 bytes of header and options. */
export const IPV4_MAX_HEADER_BYTES = 60;
/** RFC 791: every host must accept a 576-byte datagram; 68 is the minimum MTU (60 header + 8). */
export const IPV4_MIN_MTU = 68;
/** RFC 1122 / RFC 1700: the TTL Linux uses for packets it originates. */
export const IPV4_DEFAULT_TTL = 64;

/** IP protocol numbers weft meets (IANA). */
export const IpProtocol = {
  icmp: 1,
  tcp: 6,
  udp: 17,
  ipv6HopByHop: 0,
  icmpv6: 58,
} as const;

/** Flags in the top 3 bits of the flags/fragment-offset word. */
export const IPV4_FLAG_DF = 0x4000;
/** The More Fragments flag in the flags/fragment-offset word. */
export const IPV4_FLAG_MF = 0x2000;
const FRAGMENT_OFFSET_MASK = 0x1fff;

// Hot-path field readers: the caller has run ipv4Check (or knows the bytes are there).
/** The header length in bytes (IHL x 4) of the packet at `off` (after {@link ipv4Check}). */
export function ipv4HeaderLength(buf: Uint8Array, off: number): number {
  return (buf[off] & 0x0f) << 2;
}
/** The Total Length field: header and payload, in bytes. */
export function ipv4TotalLength(buf: Uint8Array, off: number): number {
  return read16(buf, off + Ipv4Field.totalLength);
}
/** The Time To Live field. */
export function ipv4Ttl(buf: Uint8Array, off: number): number {
  return buf[off + Ipv4Field.ttl];
}
/** The Protocol field (see {@link IpProtocol}). */
export function ipv4Protocol(buf: Uint8Array, off: number): number {
  return buf[off + Ipv4Field.protocol];
}
/** The source address, host order. */
export function ipv4Src(buf: Uint8Array, off: number): number {
  return read32(buf, off + Ipv4Field.src);
}
/** The destination address, host order. */
export function ipv4Dst(buf: Uint8Array, off: number): number {
  return read32(buf, off + Ipv4Field.dst);
}
/** Fragment offset in bytes (the field counts 8-byte units). */
export function ipv4FragmentOffset(buf: Uint8Array, off: number): number {
  return (read16(buf, off + Ipv4Field.flagsFragment) & FRAGMENT_OFFSET_MASK) << 3;
}
/** Whether the More Fragments flag is set. */
export function ipv4MoreFragments(buf: Uint8Array, off: number): boolean {
  return (read16(buf, off + Ipv4Field.flagsFragment) & IPV4_FLAG_MF) !== 0;
}

/**
 * The single gate before the unchecked readers: `len` bytes at `off` hold a whole IPv4 packet
 * whose header is valid (version 4, IHL >= 5, total length within [IHL*4, len], header checksum):
 * a total length beyond `len` is `truncated` (the packet was cut), below the header `badTotalLength`.
 * Bytes after total length (Ethernet padding) are allowed. Never throws, never reads past len.
 */
export function ipv4Check(buf: Uint8Array, off: number, len: number): Status {
  if (len < IPV4_HEADER_BYTES) return Status.truncated;
  const versionIhl = buf[off];
  if (versionIhl >>> 4 !== 4) return Status.badVersion;
  const headerBytes = (versionIhl & 0x0f) << 2;
  if (headerBytes < IPV4_HEADER_BYTES) return Status.badHeaderLength;
  if (headerBytes > len) return Status.truncated;
  const total = read16(buf, off + Ipv4Field.totalLength);
  if (total < headerBytes) return Status.badTotalLength;
  if (total > len) return Status.truncated;
  if (internetChecksum(buf, off, headerBytes) !== 0) return Status.badChecksum;
  return Status.ok;
}

/**
 * Decrements the TTL in place and patches the header checksum incrementally (RFC 1624 eq. 3),
 * avoiding a sum over the whole header. Returns ttlExpired, leaving the packet untouched, when
 * the TTL is 0 or 1: a router must not forward a packet whose TTL reaches 0 (RFC 1812 5.3.1).
 */
export function ipv4DecrementTtl(buf: Uint8Array, off: number): Status {
  const ttl = buf[off + Ipv4Field.ttl];
  if (ttl <= 1) return Status.ttlExpired;
  // TTL shares a 16-bit word with the protocol.
  const protocol = buf[off + Ipv4Field.protocol];
  const oldWord = (ttl << 8) | protocol;
  const newWord = ((ttl - 1) << 8) | protocol;
  buf[off + Ipv4Field.ttl] = ttl - 1;
  write16(
    buf,
    off + Ipv4Field.checksum,
    checksumAdjust(read16(buf, off + Ipv4Field.checksum), oldWord, newWord),
  );
  return Status.ok;
}

/** Recomputes and writes the header checksum over IHL*4 bytes. */
export function ipv4FillChecksum(buf: Uint8Array, off: number): void {
  const headerBytes = ipv4HeaderLength(buf, off);
  write16(buf, off + Ipv4Field.checksum, 0);
  write16(buf, off + Ipv4Field.checksum, internetChecksum(buf, off, headerBytes));
}

/**
 * Hot path: writes a 20-byte header (no options) with its checksum. `flagsFragment` is the raw
 * word (e.g. IPV4_FLAG_DF).
 */
export function writeIpv4Header(
  buf: Uint8Array,
  off: number,
  src: number,
  dst: number,
  protocol: number,
  payloadBytes: number,
  ttl: number,
  identification: number,
  flagsFragment: number,
): void {
  buf[off] = 0x45;
  buf[off + Ipv4Field.dscpEcn] = 0;
  write16(buf, off + Ipv4Field.totalLength, IPV4_HEADER_BYTES + payloadBytes);
  write16(buf, off + Ipv4Field.identification, identification);
  write16(buf, off + Ipv4Field.flagsFragment, flagsFragment);
  buf[off + Ipv4Field.ttl] = ttl;
  buf[off + Ipv4Field.protocol] = protocol;
  write16(buf, off + Ipv4Field.checksum, 0);
  write32(buf, off + Ipv4Field.src, src);
  write32(buf, off + Ipv4Field.dst, dst);
  write16(buf, off + Ipv4Field.checksum, internetChecksum(buf, off, IPV4_HEADER_BYTES));
}

/** An IPv4 header as a plain value. */
export interface Ipv4Repr {
  src: number;
  dst: number;
  protocol: number;
  ttl: number;
  /** Bytes after the header (total length - header length). */
  payloadLength: number;
  /** DSCP (6 bits) and ECN (2 bits): the old Type of Service octet. Default 0. */
  dscpEcn?: number;
  identification?: number;
  dontFragment?: boolean;
  moreFragments?: boolean;
  /** Fragment offset in bytes, a multiple of 8. */
  fragmentOffset?: number;
  /** Raw option bytes, a multiple of 4 long, at most 40. Parsing keeps them; emit writes them. */
  options?: Uint8Array;
}

/** Options of {@link ipv4}.parse. */
export interface Ipv4ParseOptions {
  /** Verify the header checksum (default true). */
  checksum?: boolean;
}

/** The checked IPv4 codec: parse into an {@link Ipv4Repr}, emit one. */
export const ipv4 = {
  /**
   * Reads and checks the header at `off` (version, lengths, checksum unless told not to); a
   * bad one throws an EncapError naming the field.
   */
  parse(
    buf: Uint8Array,
    off = 0,
    len = buf.length - off,
    options: Ipv4ParseOptions = {},
  ): Ipv4Repr {
    if (len < IPV4_HEADER_BYTES) throw truncated('ipv4 header', IPV4_HEADER_BYTES, len);
    const version = buf[off] >>> 4;
    if (version !== 4) throw malformed('ipv4.version', `${version}, expected 4`);
    const headerBytes = ipv4HeaderLength(buf, off);
    if (headerBytes < IPV4_HEADER_BYTES)
      throw malformed('ipv4.ihl', `${headerBytes / 4} words, must be at least 5`);
    if (headerBytes > len) throw truncated('ipv4 header with options', headerBytes, len);
    const total = ipv4TotalLength(buf, off);
    if (total < headerBytes)
      throw malformed('ipv4.totalLength', `${total} is less than the header length ${headerBytes}`);
    if (total > len) throw truncated('ipv4 packet (total length)', total, len);
    if (options.checksum !== false && internetChecksum(buf, off, headerBytes) !== 0) {
      throw new EncapError(
        EncapErrorCode.checksum,
        'ipv4.checksum',
        'ipv4.checksum: header checksum does not verify',
      );
    }
    const flagsFragment = read16(buf, off + Ipv4Field.flagsFragment);
    const repr: Ipv4Repr = {
      src: ipv4Src(buf, off),
      dst: ipv4Dst(buf, off),
      protocol: ipv4Protocol(buf, off),
      ttl: ipv4Ttl(buf, off),
      payloadLength: total - headerBytes,
      dscpEcn: buf[off + Ipv4Field.dscpEcn],
      identification: read16(buf, off + Ipv4Field.identification),
      dontFragment: (flagsFragment & IPV4_FLAG_DF) !== 0,
      moreFragments: (flagsFragment & IPV4_FLAG_MF) !== 0,
      fragmentOffset: (flagsFragment & FRAGMENT_OFFSET_MASK) << 3,
    };
    if (headerBytes > IPV4_HEADER_BYTES) {
      repr.options = copyOut(buf, off + IPV4_HEADER_BYTES, off + headerBytes);
    }
    return repr;
  },

  /** Header bytes only; the payload follows. */
  bufferLength(repr: Ipv4Repr): number {
    return IPV4_HEADER_BYTES + (repr.options?.length ?? 0);
  },

  /** Writes the header (with checksum) at `off` and returns its length. */
  emit(repr: Ipv4Repr, buf: Uint8Array, off = 0): number {
    const optionBytes = repr.options?.length ?? 0;
    if (optionBytes % 4 !== 0 || optionBytes > 40) {
      throw malformed(
        'ipv4.options',
        `${optionBytes} bytes, must be a multiple of 4 and at most 40`,
      );
    }
    const headerBytes = IPV4_HEADER_BYTES + optionBytes;
    if (buf.length - off < headerBytes)
      throw truncated('ipv4 output', headerBytes, buf.length - off);
    checkRange('ipv4.src', repr.src, 0xffffffff);
    checkRange('ipv4.dst', repr.dst, 0xffffffff);
    checkRange('ipv4.protocol', repr.protocol, 0xff);
    checkRange('ipv4.ttl', repr.ttl, 0xff);
    checkRange('ipv4.totalLength', headerBytes + repr.payloadLength, 0xffff);
    checkRange('ipv4.dscpEcn', repr.dscpEcn ?? 0, 0xff);
    checkRange('ipv4.identification', repr.identification ?? 0, 0xffff);
    const fragmentOffset = repr.fragmentOffset ?? 0;
    if (fragmentOffset % 8 !== 0)
      throw malformed('ipv4.fragmentOffset', `${fragmentOffset} is not a multiple of 8`);
    checkRange('ipv4.fragmentOffset', fragmentOffset >>> 3, FRAGMENT_OFFSET_MASK);
    buf[off] = 0x40 | (headerBytes >>> 2);
    buf[off + Ipv4Field.dscpEcn] = repr.dscpEcn ?? 0;
    write16(buf, off + Ipv4Field.totalLength, headerBytes + repr.payloadLength);
    write16(buf, off + Ipv4Field.identification, repr.identification ?? 0);
    write16(
      buf,
      off + Ipv4Field.flagsFragment,
      (repr.dontFragment ? IPV4_FLAG_DF : 0) |
        (repr.moreFragments ? IPV4_FLAG_MF : 0) |
        (fragmentOffset >>> 3),
    );
    buf[off + Ipv4Field.ttl] = repr.ttl;
    buf[off + Ipv4Field.protocol] = repr.protocol;
    write32(buf, off + Ipv4Field.src, repr.src);
    write32(buf, off + Ipv4Field.dst, repr.dst);
    if (repr.options) buf.set(repr.options, off + IPV4_HEADER_BYTES);
    ipv4FillChecksum(buf, off);
    return headerBytes;
  },
};
