import { copyOut, read16, write16, write32 } from './bytes.js';
import { checksumAdjust, internetChecksum } from './checksum.js';
import {
  IPV4_DEFAULT_TTL,
  IPV4_HEADER_BYTES,
  IpProtocol,
  Ipv4Field,
  ipv4Check,
  ipv4Dst,
  ipv4FragmentOffset,
  ipv4HeaderLength,
  ipv4Protocol,
  ipv4Src,
  ipv4TotalLength,
  writeIpv4Header,
} from './ipv4.js';
import { checkRange, EncapError, EncapErrorCode, Status, truncated } from './status.js';

/*
 * ICMPv4 message (RFC 792):
 *
 *  0                   1                   2                   3
 *  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
 * +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 * |     Type      |     Code      |          Checksum             |
 * +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 * |   Rest of header (echo: identifier, sequence; errors: unused) |
 * +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 * |   Data (errors: the offending IP header + 64 bits of its data)|
 * +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 */
/** Byte offsets of the ICMP header's fields. */
export const IcmpField = { type: 0, code: 1, checksum: 2, rest: 4, data: 8 } as const;
/** An ICMP header: type, code, checksum and four bytes that depend on the type. */
export const ICMP_HEADER_BYTES = 8;

/** ICMP message types (RFC 792). */
export const IcmpType = {
  echoReply: 0,
  destinationUnreachable: 3,
  sourceQuench: 4,
  redirect: 5,
  echoRequest: 8,
  timeExceeded: 11,
  parameterProblem: 12,
} as const;

/** ICMP codes weft writes (RFC 792). */
export const IcmpCode = {
  /** Destination unreachable: no route to the network (what flannel sends for an unrouted destination). */
  netUnreachable: 0,
  hostUnreachable: 1,
  /** Time exceeded: TTL reached zero in transit. */
  ttlExceeded: 0,
} as const;

/** RFC 792: an error quotes the offending IP header plus the first 64 bits of its payload. */
export const ICMP_ERROR_QUOTED_PAYLOAD_BYTES = 8;
/** The most an ICMP error built here can take: IPv4 + ICMP + a 60-byte header + 8. */
export const ICMP_ERROR_MAX_BYTES =
  IPV4_HEADER_BYTES + ICMP_HEADER_BYTES + 60 + ICMP_ERROR_QUOTED_PAYLOAD_BYTES;

/** Types that are errors (RFC 1812 4.3.2.7: never answer an error with an error). */
function isIcmpError(type: number): boolean {
  return type === 3 || type === 4 || type === 5 || type === 11 || type === 12;
}

/** RFC 1812 4.3.2.7: addresses an error must not be sent to (they do not name one host). */
function isUnicastHost(ip: number): boolean {
  const first = ip >>> 24;
  return ip !== 0 && first !== 0 && first !== 127 && first < 224;
}

/**
 * Hot path: writes an ICMPv4 error about the packet at (pkt, pktOff, pktLen) into `out` at
 * `outOff`: an IPv4 header from `srcIp` to the offender's source, then the ICMP header and the
 * quote. Returns the length written, or 0 when RFC 792/1812 forbid an error here: the offender
 * is malformed, is an ICMP error, is a non-first fragment, or comes from or goes to an address that
 * is not one unicast host; or `out` has no room. Never throws. `ttl` is the error's own TTL
 * (flannel's proxy uses 8; Linux uses 64).
 */
export function writeIcmpv4Error(
  out: Uint8Array,
  outOff: number,
  pkt: Uint8Array,
  pktOff: number,
  pktLen: number,
  type: number,
  code: number,
  srcIp: number,
  ttl: number = IPV4_DEFAULT_TTL,
): number {
  if (ipv4Check(pkt, pktOff, pktLen) !== Status.ok) return 0;
  if (ipv4FragmentOffset(pkt, pktOff) !== 0) return 0;
  const offenderSrc = ipv4Src(pkt, pktOff);
  const offenderDst = ipv4Dst(pkt, pktOff);
  if (!isUnicastHost(offenderSrc) || offenderDst === 0xffffffff || offenderDst >>> 28 === 0xe)
    return 0;
  const headerBytes = ipv4HeaderLength(pkt, pktOff);
  const payloadBytes = ipv4TotalLength(pkt, pktOff) - headerBytes;
  if (ipv4Protocol(pkt, pktOff) === IpProtocol.icmp) {
    // An ICMP message whose type cannot be read may be an error: stay silent.
    if (payloadBytes < 1 || isIcmpError(pkt[pktOff + headerBytes])) return 0;
  }
  const quoteBytes = headerBytes + Math.min(payloadBytes, ICMP_ERROR_QUOTED_PAYLOAD_BYTES);
  const icmpBytes = ICMP_HEADER_BYTES + quoteBytes;
  const total = IPV4_HEADER_BYTES + icmpBytes;
  if (outOff < 0 || out.length - outOff < total) return 0;
  // Copy the quote first: out and pkt may be one buffer with overlapping ranges (copyWithin is
  // memmove); a short loop avoids a subarray view otherwise.
  const quoteOff = outOff + IPV4_HEADER_BYTES + ICMP_HEADER_BYTES;
  if (out === pkt) out.copyWithin(quoteOff, pktOff, pktOff + quoteBytes);
  else for (let i = 0; i < quoteBytes; i++) out[quoteOff + i] = pkt[pktOff + i];
  writeIpv4Header(out, outOff, srcIp, offenderSrc, IpProtocol.icmp, icmpBytes, ttl, 0, 0);
  const icmpOff = outOff + IPV4_HEADER_BYTES;
  out[icmpOff + IcmpField.type] = type;
  out[icmpOff + IcmpField.code] = code;
  write16(out, icmpOff + IcmpField.checksum, 0);
  write32(out, icmpOff + IcmpField.rest, 0);
  write16(out, icmpOff + IcmpField.checksum, internetChecksum(out, icmpOff, icmpBytes));
  return total;
}

/**
 * Hot path: turns the ICMP echo request at `off` (a whole IPv4 packet, `len` bytes) into its
 * reply in place: addresses swapped, TTL reset, type 0, both checksums patched incrementally
 * (RFC 1624) rather than recomputed. Returns `unsupported` when it is not an echo request.
 */
export function icmpv4EchoReplyInPlace(
  buf: Uint8Array,
  off: number,
  len: number,
  ttl = IPV4_DEFAULT_TTL,
): Status {
  const status = ipv4Check(buf, off, len);
  if (status !== Status.ok) return status;
  const headerBytes = ipv4HeaderLength(buf, off);
  const icmpBytes = ipv4TotalLength(buf, off) - headerBytes;
  if (ipv4Protocol(buf, off) !== IpProtocol.icmp || icmpBytes < ICMP_HEADER_BYTES)
    return Status.unsupported;
  const icmpOff = off + headerBytes;
  if (buf[icmpOff + IcmpField.type] !== IcmpType.echoRequest) return Status.unsupported;
  if (ipv4FragmentOffset(buf, off) !== 0) return Status.unsupported;
  if (internetChecksum(buf, icmpOff, icmpBytes) !== 0) return Status.badChecksum;
  const src = ipv4Src(buf, off);
  const dst = ipv4Dst(buf, off);
  // Swapping the addresses leaves the header sum unchanged; only the TTL word moves.
  write32(buf, off + Ipv4Field.src, dst);
  write32(buf, off + Ipv4Field.dst, src);
  const oldTtlWord = read16(buf, off + Ipv4Field.ttl);
  const newTtlWord = (ttl << 8) | buf[off + Ipv4Field.protocol];
  buf[off + Ipv4Field.ttl] = ttl;
  write16(
    buf,
    off + Ipv4Field.checksum,
    checksumAdjust(read16(buf, off + Ipv4Field.checksum), oldTtlWord, newTtlWord),
  );
  const oldTypeWord = read16(buf, icmpOff);
  buf[icmpOff + IcmpField.type] = IcmpType.echoReply;
  write16(
    buf,
    icmpOff + IcmpField.checksum,
    checksumAdjust(read16(buf, icmpOff + IcmpField.checksum), oldTypeWord, read16(buf, icmpOff)),
  );
  return Status.ok;
}

/** An ICMPv4 message as a plain value: the fixed 8 bytes and what follows. */
export interface IcmpRepr {
  type: number;
  code: number;
  /** The 32-bit rest of the header: identifier << 16 | sequence for echo, unused (0) for errors. */
  rest: number;
  data: Uint8Array;
}

/** The checked ICMP codec: parse into an {@link IcmpRepr}, emit one. */
export const icmp = {
  /** Parses an ICMP message of `len` bytes at `off`, verifying its checksum. */
  parse(buf: Uint8Array, off = 0, len = buf.length - off): IcmpRepr {
    if (len < ICMP_HEADER_BYTES) throw truncated('icmp header', ICMP_HEADER_BYTES, len);
    if (internetChecksum(buf, off, len) !== 0) {
      throw new EncapError(
        EncapErrorCode.checksum,
        'icmp.checksum',
        'icmp.checksum: does not verify',
      );
    }
    return {
      type: buf[off + IcmpField.type],
      code: buf[off + IcmpField.code],
      rest: ((read16(buf, off + 4) << 16) | read16(buf, off + 6)) >>> 0,
      data: copyOut(buf, off + ICMP_HEADER_BYTES, off + len),
    };
  },

  /** The bytes `emit` writes for `repr`: the header and its data. */
  bufferLength(repr: IcmpRepr): number {
    return ICMP_HEADER_BYTES + repr.data.length;
  },

  /** Writes the message with its checksum and returns its length. */
  emit(repr: IcmpRepr, buf: Uint8Array, off = 0): number {
    const need = icmp.bufferLength(repr);
    if (buf.length - off < need) throw truncated('icmp output', need, buf.length - off);
    checkRange('icmp.type', repr.type, 0xff);
    checkRange('icmp.code', repr.code, 0xff);
    checkRange('icmp.rest', repr.rest, 0xffffffff);
    buf[off + IcmpField.type] = repr.type;
    buf[off + IcmpField.code] = repr.code;
    write16(buf, off + IcmpField.checksum, 0);
    write32(buf, off + IcmpField.rest, repr.rest);
    buf.set(repr.data, off + ICMP_HEADER_BYTES);
    write16(buf, off + IcmpField.checksum, internetChecksum(buf, off, need));
    return need;
  },
};
