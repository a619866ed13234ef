import { type EthernetRepr, EtherType, ethernet } from './ethernet.js';
import { IpProtocol, type Ipv4Repr, ipv4 } from './ipv4.js';
import { type Ipv6Repr, ipv6 } from './ipv6.js';
import { malformed } from './status.js';
import { UDP_HEADER_BYTES, type UdpRepr, udp } from './udp.js';
import { VXLAN_HEADER_BYTES, type VxlanRepr, vxlan } from './vxlan.js';

/**
 * Whole frames on the underlay wire, as a packet capture sees them: Ethernet, IPv4 or IPv6, UDP,
 * then the encapsulation. For tests, tools and the control plane; the hot path never builds
 * these (it sends through a UDP socket and lets the kernel write the outer headers).
 */
export type IpHeaderRepr = { version: 4; header: Ipv4Repr } | { version: 6; header: Ipv6Repr };

/** A whole UDP frame's headers: Ethernet, IPv4 or IPv6, UDP. */
export interface UdpFrameRepr {
  ethernet: EthernetRepr;
  ip: IpHeaderRepr;
  udp: UdpRepr;
}

/** A parsed UDP frame: its headers and where the payload is. */
export interface ParsedUdpFrame extends UdpFrameRepr {
  /** Where the UDP payload starts in the parsed buffer, and its length. */
  payloadOffset: number;
  payloadLength: number;
}

/** Options of the frame parsers. */
export interface UdpFrameParseOptions {
  /** Verify the outer UDP checksum (default false: captures with transmit offload carry partial sums). */
  udpChecksum?: boolean;
}

/**
 * Parses an Ethernet frame carrying IPv4 or IPv6 and UDP (checked; a bad one throws an
 * EncapError naming the field).
 */
export function parseUdpFrame(buf: Uint8Array, options: UdpFrameParseOptions = {}): ParsedUdpFrame {
  const eth = ethernet.parse(buf, 0, buf.length);
  const ipOffset = ethernet.bufferLength(eth);
  let ip: IpHeaderRepr;
  let udpOffset: number;
  let ipEnd: number;
  if (eth.ethertype === EtherType.ipv4) {
    const header = ipv4.parse(buf, ipOffset, buf.length - ipOffset);
    if (header.protocol !== IpProtocol.udp)
      throw malformed('ipv4.protocol', `${header.protocol}, expected 17 (UDP)`);
    if (header.fragmentOffset !== 0 || header.moreFragments)
      throw malformed('ipv4.fragment', 'a fragment, not a whole datagram');
    ip = { version: 4, header };
    udpOffset = ipOffset + ipv4.bufferLength(header);
    ipEnd = udpOffset + header.payloadLength;
  } else if (eth.ethertype === EtherType.ipv6) {
    const header = ipv6.parse(buf, ipOffset, buf.length - ipOffset);
    if (header.nextHeader !== IpProtocol.udp)
      throw malformed('ipv6.nextHeader', `${header.nextHeader}, expected 17 (UDP)`);
    ip = { version: 6, header };
    udpOffset = ipOffset + ipv6.bufferLength(header);
    ipEnd = udpOffset + header.payloadLength;
  } else {
    throw malformed('ethernet.ethertype', `0x${eth.ethertype.toString(16)}, expected IPv4 or IPv6`);
  }
  const context = options.udpChecksum ? { ipVersion: ip.version, ipOffset } : undefined;
  const udpRepr = udp.parse(buf, udpOffset, ipEnd - udpOffset, context);
  return {
    ethernet: eth,
    ip,
    udp: udpRepr,
    payloadOffset: udpOffset + UDP_HEADER_BYTES,
    payloadLength: udpRepr.payloadLength,
  };
}

/** Options of the frame emitters. */
export interface UdpFrameEmitOptions {
  /** `compute` (default) writes the real checksum; `keep` writes repr.udp.checksum (0 = none over IPv4). */
  udpChecksum?: 'compute' | 'keep';
}

/** Builds a whole frame around `payload`; length fields come from the payload's length. */
export function emitUdpFrame(
  repr: UdpFrameRepr,
  payload: Uint8Array,
  options: UdpFrameEmitOptions = {},
): Buffer {
  const ethBytes = ethernet.bufferLength(repr.ethernet);
  const udpBytes = UDP_HEADER_BYTES + payload.length;
  const ipHeaderBytes =
    repr.ip.version === 4 ? ipv4.bufferLength(repr.ip.header) : ipv6.bufferLength(repr.ip.header);
  const out = Buffer.alloc(ethBytes + ipHeaderBytes + udpBytes);
  ethernet.emit(
    { ...repr.ethernet, ethertype: repr.ip.version === 4 ? EtherType.ipv4 : EtherType.ipv6 },
    out,
    0,
  );
  if (repr.ip.version === 4) {
    ipv4.emit(
      { ...repr.ip.header, protocol: IpProtocol.udp, payloadLength: udpBytes },
      out,
      ethBytes,
    );
  } else {
    ipv6.emit(
      { ...repr.ip.header, nextHeader: IpProtocol.udp, payloadLength: udpBytes },
      out,
      ethBytes,
    );
  }
  const udpOffset = ethBytes + ipHeaderBytes;
  out.set(payload, udpOffset + UDP_HEADER_BYTES);
  const keep = options.udpChecksum === 'keep';
  udp.emit(
    {
      ...repr.udp,
      payloadLength: payload.length,
      checksum: keep ? (repr.udp.checksum ?? 0) : undefined,
    },
    out,
    udpOffset,
    keep ? undefined : { ipVersion: repr.ip.version, ipOffset: ethBytes },
  );
  return out;
}

/** A parsed VXLAN frame: outer headers, the VXLAN header, the inner Ethernet frame. */
export interface ParsedVxlanFrame extends ParsedUdpFrame {
  vxlan: VxlanRepr;
  /** The inner Ethernet header and where the inner frame sits in the parsed buffer. */
  inner: EthernetRepr;
  innerOffset: number;
  innerLength: number;
}

/** Parses a whole VXLAN frame down to the inner Ethernet header (RFC 7348 section 5). */
export function parseVxlanFrame(
  buf: Uint8Array,
  options: UdpFrameParseOptions = {},
): ParsedVxlanFrame {
  const frame = parseUdpFrame(buf, options);
  const vx = vxlan.parse(buf, frame.payloadOffset, frame.payloadLength);
  const innerOffset = frame.payloadOffset + VXLAN_HEADER_BYTES;
  const innerLength = frame.payloadLength - VXLAN_HEADER_BYTES;
  return {
    ...frame,
    vxlan: vx,
    inner: ethernet.parse(buf, innerOffset, innerLength),
    innerOffset,
    innerLength,
  };
}

/** A whole VXLAN frame carrying `innerFrame` (an Ethernet frame) on VNI `vni`. */
export function emitVxlanFrame(
  repr: UdpFrameRepr,
  vni: number,
  innerFrame: Uint8Array,
  options: UdpFrameEmitOptions = {},
): Buffer {
  const payload = Buffer.alloc(VXLAN_HEADER_BYTES + innerFrame.length);
  vxlan.emit({ vni }, payload, 0);
  payload.set(innerFrame, VXLAN_HEADER_BYTES);
  return emitUdpFrame(repr, payload, options);
}

/** A parsed flannel UDP frame: outer headers and the inner IPv4 header. */
export interface ParsedFlannelFrame extends ParsedUdpFrame {
  /** The inner IPv4 packet's header. */
  inner: Ipv4Repr;
}

/** A flannel UDP frame: the UDP payload is one bare IPv4 packet. */
export function parseFlannelFrame(
  buf: Uint8Array,
  options: UdpFrameParseOptions = {},
): ParsedFlannelFrame {
  const frame = parseUdpFrame(buf, options);
  return { ...frame, inner: ipv4.parse(buf, frame.payloadOffset, frame.payloadLength) };
}

/** A whole flannel UDP frame carrying `innerPacket` (a bare IPv4 packet) as the UDP payload. */
export function emitFlannelFrame(
  repr: UdpFrameRepr,
  innerPacket: Uint8Array,
  options: UdpFrameEmitOptions = {},
): Buffer {
  return emitUdpFrame(repr, innerPacket, options);
}
