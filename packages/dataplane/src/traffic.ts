import {
  EtherType,
  finish,
  IpProtocol,
  ipv4,
  ipv4FillChecksum,
  ipv6,
  sum16,
  TcpField,
  TcpFlag,
  tcpChecksum4,
  udpChecksumIpv6,
  VIRTIO_NET_HDR_BYTES,
  VirtioFlag,
  VirtioGso,
  vxlanEncapInPlace,
  write16,
  writeEthernetHeader,
  writeVirtioNetHdr,
} from '@weft/encap';
import type { PacketRing } from '@weft/tun';

/**
 * Synthetic traffic for driving a backend over stand-in I/O: TCP segments and TSO super-packets
 * written straight into ring slots, wrapped as the kernel (virtio_net_hdr, UDP GRO) or a peer
 * (flannel UDP, VXLAN) would hand them over.
 */

export interface TcpOptions {
  src: number;
  dst: number;
  seq?: number;
  ttl?: number;
  flags?: number;
  /** Payload byte value. */
  fill?: number;
}

const TCP_HEADER = 20;

/** Writes an IPv4/TCP packet with `payloadBytes` of payload and correct checksums; returns its length. */
export function writeTcp4(
  buf: Buffer,
  off: number,
  payloadBytes: number,
  o: TcpOptions,
  checksum = true,
): number {
  const len = 20 + TCP_HEADER + payloadBytes;
  ipv4.emit(
    {
      src: o.src,
      dst: o.dst,
      protocol: IpProtocol.tcp,
      ttl: o.ttl ?? 64,
      payloadLength: TCP_HEADER + payloadBytes,
      identification: 7,
      dontFragment: true,
    },
    buf,
    off,
  );
  const tcp = off + 20;
  buf.fill(0, tcp, tcp + TCP_HEADER);
  write16(buf, tcp, 40000);
  write16(buf, tcp + 2, 5201);
  buf.writeUInt32BE((o.seq ?? 1000) >>> 0, tcp + TcpField.seq);
  buf.writeUInt32BE(1, tcp + TcpField.ack);
  buf[tcp + TcpField.dataOffset] = (TCP_HEADER / 4) << 4;
  buf[tcp + TcpField.flags] = o.flags ?? TcpFlag.ack;
  write16(buf, tcp + TcpField.window, 500);
  buf.fill(o.fill ?? 0x5a, tcp + TCP_HEADER, off + len);
  if (checksum)
    write16(
      buf,
      tcp + TcpField.checksum,
      tcpChecksum4(buf, off, tcp, TCP_HEADER, buf, tcp + TCP_HEADER, payloadBytes),
    );
  return len;
}

/** Resets the TTL (and header checksum) of the IPv4 packet at `off`: flannel's step lowers it each pass. */
export function resetTtl(buf: Buffer, off: number, ttl = 64): void {
  buf[off + 8] = ttl;
  ipv4FillChecksum(buf, off);
}

/** A device slot holding a TSO super-packet of `segments` x `mss` behind its virtio_net_hdr. */
export function putSuperPacket(
  ring: PacketRing,
  i: number,
  segments: number,
  mss: number,
  o: TcpOptions,
): void {
  const at = ring.slotOffset(i);
  const len = writeTcp4(ring.slab, at + VIRTIO_NET_HDR_BYTES, segments * mss, o, false);
  writeVirtioNetHdr(
    ring.slab,
    at,
    VirtioFlag.needsCsum,
    VirtioGso.tcpv4,
    20 + TCP_HEADER,
    mss,
    20,
    TcpField.checksum,
  );
  ring.lengths[i] = VIRTIO_NET_HDR_BYTES + len;
}

/**
 * A device slot holding a TSO6 super-packet (IPv6, TCP) of `segments` x `mss` from `src` to `dst`
 * behind its virtio_net_hdr.
 */
export function putSuperPacket6(
  ring: PacketRing,
  i: number,
  segments: number,
  mss: number,
  src: Uint8Array,
  dst: Uint8Array,
): void {
  const at = ring.slotOffset(i);
  const len = writeTcp6(
    ring.slab,
    at + VIRTIO_NET_HDR_BYTES,
    segments * mss,
    src,
    dst,
    1000,
    false,
  );
  writeVirtioNetHdr(
    ring.slab,
    at,
    VirtioFlag.needsCsum,
    VirtioGso.tcpv6,
    40 + TCP_HEADER,
    mss,
    40,
    TcpField.checksum,
  );
  ring.lengths[i] = VIRTIO_NET_HDR_BYTES + len;
}

/**
 * A TAP slot holding a TSO frame: virtio_net_hdr, an Ethernet header (`dstMac`, `srcMac`), then a
 * TCPv4 super-packet of `segments` x `mss` (csum_start counts from the frame, as a TAP's does).
 */
export function putSuperFrame(
  ring: PacketRing,
  i: number,
  segments: number,
  mss: number,
  dstMac: number,
  srcMac: number,
  o: TcpOptions,
): void {
  const at = ring.slotOffset(i);
  const frame = at + VIRTIO_NET_HDR_BYTES;
  writeEthernetHeader(ring.slab, frame, dstMac, srcMac, EtherType.ipv4);
  const len = writeTcp4(ring.slab, frame + 14, segments * mss, o, false);
  writeVirtioNetHdr(
    ring.slab,
    at,
    VirtioFlag.needsCsum,
    VirtioGso.tcpv4,
    14 + 20 + TCP_HEADER,
    mss,
    14 + 20,
    TcpField.checksum,
  );
  ring.lengths[i] = VIRTIO_NET_HDR_BYTES + 14 + len;
}

/** A device slot holding one IPv4/TCP packet (behind an empty virtio_net_hdr when `h` is 12). */
export function putPacket(
  ring: PacketRing,
  i: number,
  h: number,
  bytes: number,
  o: TcpOptions,
): void {
  const at = ring.slotOffset(i);
  ring.slab.fill(0, at, at + h);
  ring.lengths[i] = h + writeTcp4(ring.slab, at + h, bytes - 40, o);
}

/** How a peer wraps an inner packet: flannel UDP (nothing) or VXLAN (8 + 14 bytes). */
export type Wrap =
  | { kind: 'flannel' }
  /** `ipv6`: the inner packet is IPv6 (EtherType 0x86dd). */
  | { kind: 'vxlan'; vni: number; dstMac: number; srcMac: number; ipv6?: boolean };

export function wrapBytes(w: Wrap): number {
  return w.kind === 'flannel' ? 0 : 22;
}

function wrap(buf: Buffer, innerOff: number, w: Wrap): void {
  if (w.kind === 'vxlan')
    vxlanEncapInPlace(
      buf,
      innerOff,
      w.vni,
      w.dstMac,
      w.srcMac,
      w.ipv6 ? EtherType.ipv6 : EtherType.ipv4,
    );
}

/** Writes an IPv6/UDP packet with `payloadBytes` of payload (UDP checksum left 0); returns its length. */
export function writeUdp6(
  buf: Buffer,
  off: number,
  payloadBytes: number,
  src: Uint8Array,
  dst: Uint8Array,
): number {
  const udpBytes = 8 + payloadBytes;
  ipv6.emit(
    { src, dst, nextHeader: IpProtocol.udp, hopLimit: 64, payloadLength: udpBytes },
    buf,
    off,
  );
  const u = off + 40;
  write16(buf, u, 40000);
  write16(buf, u + 2, 9);
  write16(buf, u + 4, udpBytes);
  write16(buf, u + 6, 0);
  buf.fill(0x5a, u + 8, u + udpBytes);
  return 40 + udpBytes;
}

/** A UDP slot holding one datagram: the wrapped IPv6/UDP packet with `payloadBytes` of payload. */
export function putDatagram6(
  ring: PacketRing,
  i: number,
  payloadBytes: number,
  w: Wrap,
  src: Uint8Array,
  dst: Uint8Array,
): void {
  const at = ring.slotOffset(i);
  const pre = wrapBytes(w);
  const len = writeUdp6(ring.slab, at + pre, payloadBytes, src, dst);
  wrap(ring.slab, at + pre, w);
  ring.lengths[i] = pre + len;
  ring.gso[i] = 0;
}

/** Marks UDP ring slot i as received from the IPv6 address `from6`. */
export function setSource6(ring: PacketRing, i: number, from6: Uint8Array, port: number): void {
  ring.families[i] = 6;
  for (let w = 0; w < 4; w++)
    ring.addrs[i * 4 + w] =
      ((from6[w * 4] << 24) |
        (from6[w * 4 + 1] << 16) |
        (from6[w * 4 + 2] << 8) |
        from6[w * 4 + 3]) >>>
      0;
  ring.ports[i] = port;
}

/** Marks UDP ring slot i as received from `from4` (host order). */
export function setSource(ring: PacketRing, i: number, from4: number, port: number): void {
  ring.families[i] = 4;
  ring.addrs[i * 4] = from4;
  ring.ports[i] = port;
}

/** A UDP slot holding one datagram: the wrapped IPv4/TCP packet of `bytes`. */
export function putDatagram(
  ring: PacketRing,
  i: number,
  bytes: number,
  w: Wrap,
  o: TcpOptions,
): void {
  const at = ring.slotOffset(i);
  const pre = wrapBytes(w);
  writeTcp4(ring.slab, at + pre, bytes - 40, o);
  wrap(ring.slab, at + pre, w);
  ring.lengths[i] = pre + bytes;
  ring.gso[i] = 0;
}

/**
 * A UDP slot as UDP GRO fills it: `count` datagrams of one flow back to back, each the wrapped
 * segment of `mss` payload bytes, consecutive sequence numbers; ring.gso[i] is the datagram size.
 */
/**
 * Writes an IPv6/TCP packet (no extension headers) with `payloadBytes` of payload, and its TCP
 * checksum unless `checksum` is false; returns its length.
 */
export function writeTcp6(
  buf: Buffer,
  off: number,
  payloadBytes: number,
  src: Uint8Array,
  dst: Uint8Array,
  seq: number,
  checksum = true,
): number {
  const tcpBytes = TCP_HEADER + payloadBytes;
  ipv6.emit(
    { src, dst, nextHeader: IpProtocol.tcp, hopLimit: 64, payloadLength: tcpBytes },
    buf,
    off,
  );
  const tcp = off + 40;
  buf.fill(0, tcp, tcp + TCP_HEADER);
  write16(buf, tcp, 40000);
  write16(buf, tcp + 2, 5201);
  buf.writeUInt32BE(seq >>> 0, tcp + TcpField.seq);
  buf.writeUInt32BE(1, tcp + TcpField.ack);
  buf[tcp + TcpField.dataOffset] = (TCP_HEADER / 4) << 4;
  buf[tcp + TcpField.flags] = TcpFlag.ack;
  write16(buf, tcp + TcpField.window, 500);
  buf.fill(0x5a, tcp + TCP_HEADER, tcp + tcpBytes);
  if (checksum)
    write16(
      buf,
      tcp + TcpField.checksum,
      finish(sum16(buf, tcp, tcpBytes, sum16(buf, off + 8, 32, IpProtocol.tcp + tcpBytes))),
    );
  return 40 + tcpBytes;
}

/**
 * A UDP slot holding a GRO batch: `count` datagrams of `innerBytes` (as `write(ip, k)` writes the
 * k-th at ip) each wrapped as `w` says, all one size.
 */
function putGroBatch(
  ring: PacketRing,
  i: number,
  count: number,
  innerBytes: number,
  w: Wrap,
  write: (ip: number, k: number) => void,
): void {
  const at = ring.slotOffset(i);
  const pre = wrapBytes(w);
  const size = pre + innerBytes;
  for (let k = 0; k < count; k++) {
    const ip = at + k * size + pre;
    write(ip, k);
    wrap(ring.slab, ip, w);
  }
  ring.lengths[i] = count * size;
  ring.gso[i] = size;
}

/**
 * A UDP GRO slot of `count` IPv6/UDP datagrams of one flow, `payloadBytes` each, checksummed:
 * what a peer's iperf3 -u sends, and what a TUN taking UDP GSO writes gets coalesced.
 */
export function putUdpGroDatagrams6(
  ring: PacketRing,
  i: number,
  count: number,
  payloadBytes: number,
  w: Wrap,
  src: Uint8Array,
  dst: Uint8Array,
): void {
  const b = ring.slab;
  putGroBatch(ring, i, count, 48 + payloadBytes, w, (ip) => {
    writeUdp6(b, ip, payloadBytes, src, dst);
    write16(b, ip + 46, udpChecksumIpv6(b, ip, ip + 40, 8 + payloadBytes));
  });
}

/** A UDP slot holding a GRO batch of `count` IPv6 TCP segments of `mss`, each wrapped (VXLAN over IPv6). */
export function putGroDatagrams6(
  ring: PacketRing,
  i: number,
  count: number,
  mss: number,
  w: Wrap,
  src: Uint8Array,
  dst: Uint8Array,
): void {
  putGroBatch(ring, i, count, 60 + mss, w, (ip, k) =>
    writeTcp6(ring.slab, ip, mss, src, dst, 1000 + k * mss),
  );
}

/** A UDP slot holding a GRO batch of `count` IPv4 TCP segments of `mss`, sequence numbers following on. */
export function putGroDatagrams(
  ring: PacketRing,
  i: number,
  count: number,
  mss: number,
  w: Wrap,
  o: TcpOptions,
): void {
  putGroBatch(ring, i, count, 40 + mss, w, (ip, k) =>
    writeTcp4(ring.slab, ip, mss, { ...o, seq: (o.seq ?? 1000) + k * mss }),
  );
}
