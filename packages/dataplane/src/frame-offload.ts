import {
  copyBytes,
  copySum16,
  ETHERNET_HEADER_BYTES,
  EtherType,
  finish,
  IPV4_FLAG_MF,
  IpProtocol,
  Ipv4Field,
  ipv4Check,
  ipv4FillChecksum,
  read16,
  readInt32,
  Status,
  sum16,
  TcpField,
  TcpFlag,
  tcpPseudoSum4,
  VIRTIO_NET_HDR_BYTES,
  VirtioFlag,
  VirtioGso,
  VXLAN_HEADER_BYTES,
  write16,
  write32,
  writeTcpPartialChecksum4,
  writeVirtioNetHdr,
  writeVxlanHeader,
} from '@weft/encap';
import { CoalesceResult, type Segmented, segmentTcp4 } from './offload.js';

/*
 * The offloads of offload.ts for Ethernet frames (TAP mode, an L2 segment): a TSO frame from the
 * TAP is cut into VXLAN datagrams each carrying a copy of the frame's Ethernet header; received
 * segments of one flow behind one Ethernet header are written to the TAP as one GSO frame.
 */

/** An EtherType that says an 802.1Q (or 802.1ad) tag follows. */
function isTag(type: number): boolean {
  return type === EtherType.vlan || type === EtherType.qinq;
}

/**
 * Hot path: the bytes of link header in front of an IPv4 packet in the frame at buf[off] (14, or
 * 18 and 22 behind one or two tags), or -1 when the frame does not carry IPv4 there.
 */
export function frameIpv4Offset(buf: Uint8Array, off: number, len: number): number {
  let at = 12;
  for (let tags = 0; tags <= 2; tags++) {
    if (len < at + 2) return -1;
    const type = read16(buf, off + at);
    if (type === EtherType.ipv4) return at + 2;
    if (!isTag(type)) return -1;
    at += 4;
  }
  return -1;
}

/**
 * Cuts a TSO frame (`len` bytes at src[off]: `linkBytes` of Ethernet header, then a TCPv4
 * super-packet) into VXLAN datagrams of `mss` payload bytes each, written to out[outOff +
 * k*segmentBytes]: the VXLAN header (`vni`), a copy of the frame's Ethernet header, then a whole
 * IPv4/TCP segment (segmentTcp4). Returns `into`, or undefined for anything segmentTcp4 refuses.
 */
export function segmentFrameTcp4(
  src: Buffer,
  off: number,
  len: number,
  linkBytes: number,
  mss: number,
  vni: number,
  out: Buffer,
  outOff: number,
  into: Segmented,
): Segmented | undefined {
  const prefix = VXLAN_HEADER_BYTES + linkBytes;
  const r = segmentTcp4(
    src,
    off + linkBytes,
    len - linkBytes,
    mss,
    out,
    outOff,
    prefix,
    false,
    into,
  );
  if (r === undefined) return undefined;
  if (linkBytes !== ETHERNET_HEADER_BYTES) {
    for (let k = 0, at = outOff; k < r.count; k++, at += r.segmentBytes) {
      writeVxlanHeader(out, at, vni);
      copyBytes(src, off, out, at + VXLAN_HEADER_BYTES, linkBytes);
    }
    return r;
  }
  // The untagged header as words, read once.
  const w0 = readInt32(src, off);
  const w1 = readInt32(src, off + 4);
  const w2 = readInt32(src, off + 8);
  const type = read16(src, off + 12);
  for (let k = 0, at = outOff; k < r.count; k++, at += r.segmentBytes) {
    writeVxlanHeader(out, at, vni);
    const eth = at + VXLAN_HEADER_BYTES;
    write32(out, eth, w0);
    write32(out, eth + 4, w1);
    write32(out, eth + 8, w2);
    write16(out, eth + 12, type);
  }
  return r;
}

/**
 * TcpCoalescer for a TAP: consecutive TCPv4 segments of one flow, in untagged Ethernet frames
 * with the same header (destination, source, EtherType), become one frame written with a
 * virtio_net_hdr (GSO TCPV4, NEEDS_CSUM from the TCP header) into a staging buffer; any other
 * frame (ARP, IPv6, tagged, a bad or padded IPv4 packet, a control segment) passes through as it
 * is, behind an empty header. The joining rules are TcpCoalescer's; `emit(offset, length)`
 * receives each finished frame, in arrival order.
 */
export class FrameCoalescer {
  private pos = 0;
  /** The open group: where it starts in staging (its virtio header), its IP header, and its state. */
  private start = -1;
  private ipOff = 0;
  private ihl = 0;
  private thl = 0;
  private mss = 0;
  private segments = 0;
  private payload = 0;
  private nextSeq = 0;
  private closed = false;
  private psh = false;

  constructor(
    /** Where finished frames are built, each behind its virtio_net_hdr. */
    readonly staging: Buffer,
    private readonly emit: (offset: number, length: number) => void,
    /** The largest super-packet (IP length), below 64 KiB. */
    private readonly maxBytes = 65_000,
  ) {}

  /** Starts a new batch: staging is reused from the beginning. */
  reset(): void {
    this.pos = 0;
    this.start = -1;
  }

  /** Bytes of staging left. */
  get room(): number {
    return this.staging.length - this.pos;
  }

  /** Adds one Ethernet frame (at least 14 bytes) and says what became of it (a CoalesceResult). */
  push(buf: Buffer, off: number, len: number): number {
    const L = ETHERNET_HEADER_BYTES;
    const ip = off + L;
    // A data segment: IPv4 right behind an untagged header, valid, exactly filling the frame.
    if (
      len < L + 40 ||
      read16(buf, off + 12) !== EtherType.ipv4 ||
      ipv4Check(buf, ip, len - L) !== Status.ok ||
      read16(buf, ip + Ipv4Field.totalLength) !== len - L ||
      buf[ip + Ipv4Field.protocol] !== IpProtocol.tcp ||
      (read16(buf, ip + Ipv4Field.flagsFragment) & (IPV4_FLAG_MF | 0x1fff)) !== 0
    )
      return this.passThrough(buf, off, len);
    const ihl = (buf[ip] & 0x0f) << 2;
    const tcp = ip + ihl;
    if (len - L < ihl + 20) return this.passThrough(buf, off, len);
    const thl = (buf[tcp + TcpField.dataOffset] >>> 4) << 2;
    const payload = len - L - ihl - thl;
    if (
      thl < 20 ||
      payload <= 0 ||
      (buf[tcp + TcpField.flags] & (TcpFlag.syn | TcpFlag.fin | TcpFlag.rst | TcpFlag.urg)) !== 0
    )
      return this.passThrough(buf, off, len);
    const staging = this.staging;
    if (this.continues(buf, off, ihl, thl, payload)) {
      // Copied to the group's end while summed; committed only when the checksum verifies.
      const headerSum = sum16(buf, tcp, thl, tcpPseudoSum4(buf, ip, thl + payload));
      if (finish(copySum16(buf, tcp + thl, staging, this.pos, payload, headerSum)) !== 0)
        return CoalesceResult.badChecksum;
      this.pos += payload;
      this.segments++;
      this.payload += payload;
      this.nextSeq = (this.nextSeq + payload) | 0;
      this.psh = (buf[tcp + TcpField.flags] & TcpFlag.psh) !== 0;
      if (payload < this.mss || this.psh) this.closed = true;
      return CoalesceResult.queued;
    }
    this.flush();
    if (VIRTIO_NET_HDR_BYTES + len > this.room) return CoalesceResult.noRoom;
    // Open a group with this segment, once its checksum verifies.
    const frameOff = this.pos + VIRTIO_NET_HDR_BYTES;
    copyBytes(buf, off, staging, frameOff, L + ihl);
    const sum = copySum16(
      buf,
      tcp,
      staging,
      frameOff + L + ihl,
      thl + payload,
      tcpPseudoSum4(buf, ip, thl + payload),
    );
    if (finish(sum) !== 0) return CoalesceResult.badChecksum;
    this.start = this.pos;
    this.ipOff = frameOff + L;
    this.pos = frameOff + len;
    this.ihl = ihl;
    this.thl = thl;
    this.mss = payload;
    this.segments = 1;
    this.payload = payload;
    this.nextSeq = (readInt32(buf, tcp + TcpField.seq) + payload) | 0;
    this.psh = (buf[tcp + TcpField.flags] & TcpFlag.psh) !== 0;
    this.closed = this.psh;
    return CoalesceResult.queued;
  }

  /** Passes a frame through as it is, behind an empty header. */
  passThrough(buf: Buffer, off: number, len: number): number {
    this.flush();
    if (VIRTIO_NET_HDR_BYTES + len > this.room) return CoalesceResult.noRoom;
    writeVirtioNetHdr(this.staging, this.pos, 0, VirtioGso.none, 0, 0, 0, 0);
    copyBytes(buf, off, this.staging, this.pos + VIRTIO_NET_HDR_BYTES, len);
    this.emit(this.pos, VIRTIO_NET_HDR_BYTES + len);
    this.pos += VIRTIO_NET_HDR_BYTES + len;
    return CoalesceResult.queued;
  }

  private continues(
    buf: Uint8Array,
    off: number,
    ihl: number,
    thl: number,
    payload: number,
  ): boolean {
    if (this.start < 0 || this.closed || ihl !== this.ihl || thl !== this.thl || payload > this.mss)
      return false;
    if (
      this.ihl + this.thl + this.payload + payload > this.maxBytes ||
      this.pos + payload > this.staging.length
    )
      return false;
    const s = this.staging;
    const g = this.ipOff;
    const e = g - ETHERNET_HEADER_BYTES;
    const ip = off + ETHERNET_HEADER_BYTES;
    const tcp = ip + ihl;
    const gt = g + ihl;
    // 32 bits at a time: the Ethernet header (one GSO frame has one), the addresses, the TOS and
    // TTL that must match for GRO, the ports, the next sequence number, the ACK, the window.
    if (
      readInt32(buf, off) !== readInt32(s, e) ||
      readInt32(buf, off + 4) !== readInt32(s, e + 4) ||
      readInt32(buf, off + 8) !== readInt32(s, e + 8) ||
      read16(buf, off + 12) !== read16(s, e + 12) ||
      readInt32(buf, ip + Ipv4Field.src) !== readInt32(s, g + Ipv4Field.src) ||
      readInt32(buf, ip + Ipv4Field.dst) !== readInt32(s, g + Ipv4Field.dst) ||
      buf[ip + Ipv4Field.dscpEcn] !== s[g + Ipv4Field.dscpEcn] ||
      buf[ip + Ipv4Field.ttl] !== s[g + Ipv4Field.ttl] ||
      readInt32(buf, tcp) !== readInt32(s, gt) ||
      readInt32(buf, tcp + TcpField.seq) !== this.nextSeq ||
      readInt32(buf, tcp + TcpField.ack) !== readInt32(s, gt + TcpField.ack) ||
      read16(buf, tcp + TcpField.window) !== read16(s, gt + TcpField.window)
    )
      return false;
    const flags = buf[tcp + TcpField.flags];
    const groupFlags = s[gt + TcpField.flags];
    if (flags !== (groupFlags & ~TcpFlag.psh) && flags !== (groupFlags | TcpFlag.psh)) return false;
    // Options, a whole number of 32-bit words.
    for (let b = 20; b < thl; b += 4)
      if (readInt32(buf, tcp + b) !== readInt32(s, gt + b)) return false;
    return true;
  }

  /** Finishes the open group (if any) and emits it. Call at the end of each batch. */
  flush(): void {
    if (this.start < 0) return;
    const s = this.staging;
    const g = this.ipOff;
    const tcpBytes = this.thl + this.payload;
    const L = ETHERNET_HEADER_BYTES;
    if (this.segments === 1) {
      // One segment: it goes as it came, checksum intact.
      writeVirtioNetHdr(s, this.start, 0, VirtioGso.none, 0, 0, 0, 0);
    } else {
      write16(s, g + Ipv4Field.totalLength, this.ihl + tcpBytes);
      ipv4FillChecksum(s, g);
      if (this.psh) s[g + this.ihl + TcpField.flags] |= TcpFlag.psh;
      writeTcpPartialChecksum4(s, g, g + this.ihl, tcpBytes);
      // For a TAP, csum_start and hdr_len count from the frame's first byte.
      writeVirtioNetHdr(
        s,
        this.start,
        VirtioFlag.needsCsum,
        VirtioGso.tcpv4,
        L + this.ihl + this.thl,
        this.mss,
        L + this.ihl,
        TcpField.checksum,
      );
    }
    this.emit(this.start, VIRTIO_NET_HDR_BYTES + L + this.ihl + tcpBytes);
    this.start = -1;
  }
}
