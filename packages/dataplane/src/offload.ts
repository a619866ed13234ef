import {
  copyBytes,
  copySum16,
  finish,
  IPV4_FLAG_MF,
  IpProtocol,
  Ipv4Field,
  ipv4FillChecksum,
  read16,
  readInt32,
  sum16,
  TcpField,
  TcpFlag,
  tcpPseudoSum4,
  VIRTIO_NET_HDR_BYTES,
  VirtioFlag,
  VirtioGso,
  write16,
  write32,
  writeTcpPartialChecksum4,
  writeVirtioNetHdr,
} from '@weft/encap';

/**
 * Segmentation and coalescing offloads, the way wireguard-go gets its speed: the local kernel
 * hands the TUN one 64 KiB TCP "super-packet" instead of 45 segments (TSO), weft cuts it into
 * segments itself and gives the kernel all of them in one UDP send (UDP GSO); on the way in, the
 * kernel hands over coalesced datagrams (UDP GRO) and weft writes consecutive segments of a flow
 * to the TUN as one super-packet the kernel's TCP takes whole. Fewer, larger trips through the
 * kernel: its per-packet work was most of weft's cost.
 */

/** Finishes a checksum the kernel left partial (NEEDS_CSUM): sum from csumStart, store at +csumOffset. */
export function finishPartialChecksum(
  buf: Uint8Array,
  pktOff: number,
  len: number,
  csumStart: number,
  csumOffset: number,
): boolean {
  if (csumStart + csumOffset + 2 > len || csumStart >= len) return false;
  const at = pktOff + csumStart + csumOffset;
  // The field holds the pseudo-header sum; summing over it folds it in.
  const value = finish(sum16(buf, pktOff + csumStart, len - csumStart));
  write16(buf, at, value);
  return true;
}

export interface Segmented {
  count: number;
  /** Bytes per segment, prefix included (the last may be shorter). */
  segmentBytes: number;
  totalBytes: number;
}

/**
 * Cuts a TSO TCPv4 super-packet (`len` bytes at src[ipOff]) into segments of `mss` payload bytes,
 * each written to out[outOff + k*segmentBytes + prefixBytes] as a whole IPv4/TCP packet with its
 * own length, identification, sequence number, flags and checksums. `prefixBytes` are left free
 * in front of each for encapsulation headers. With decrementTtl, each segment's TTL is one lower
 * (flannel's udp step). Returns `into` (pass one to reuse: the hot path allocates nothing), or
 * undefined for anything that is not a plain TCPv4 super-packet.
 */
export function segmentTcp4(
  src: Buffer,
  ipOff: number,
  len: number,
  mss: number,
  out: Buffer,
  outOff: number,
  prefixBytes: number,
  decrementTtl: boolean,
  into: Segmented = { count: 0, segmentBytes: 0, totalBytes: 0 },
): Segmented | undefined {
  if (
    len < 40 ||
    (src[ipOff] & 0xf0) !== 0x40 ||
    src[ipOff + Ipv4Field.protocol] !== IpProtocol.tcp ||
    mss <= 0
  )
    return undefined;
  const ihl = (src[ipOff] & 0x0f) << 2;
  const tcpOff = ipOff + ihl;
  if (ihl < 20 || ihl + 20 > len) return undefined;
  const thl = (src[tcpOff + TcpField.dataOffset] >>> 4) << 2;
  const hdrBytes = ihl + thl;
  if (thl < 20 || hdrBytes > len) return undefined;
  if (decrementTtl && src[ipOff + Ipv4Field.ttl] <= 1) return undefined;
  const payloadOff = ipOff + hdrBytes;
  const payloadBytes = len - hdrBytes;
  const count = Math.max(1, Math.ceil(payloadBytes / mss));
  const segmentBytes = prefixBytes + hdrBytes + mss;
  if (
    outOff +
      (count - 1) * segmentBytes +
      prefixBytes +
      hdrBytes +
      (payloadBytes - (count - 1) * mss) >
    out.length
  )
    return undefined;
  const id0 = read16(src, ipOff + Ipv4Field.identification);
  // Sequence numbers as signed 32-bit: small integers across calls, the same bits on the wire.
  const seq0 = readInt32(src, tcpOff + TcpField.seq);
  const flags = src[tcpOff + TcpField.flags];
  let totalBytes = 0;
  for (let k = 0; k < count; k++) {
    const seg = outOff + k * segmentBytes + prefixBytes;
    const chunk = k === count - 1 ? payloadBytes - k * mss : mss;
    for (let b = 0; b < hdrBytes; b++) out[seg + b] = src[ipOff + b];
    write16(out, seg + Ipv4Field.totalLength, hdrBytes + chunk);
    write16(out, seg + Ipv4Field.identification, (id0 + k) & 0xffff);
    if (decrementTtl) out[seg + Ipv4Field.ttl]--;
    ipv4FillChecksum(out, seg);
    const tcp = seg + ihl;
    write32(out, tcp + TcpField.seq, (seq0 + k * mss) | 0);
    // FIN and PSH belong to the last segment, CWR to the first.
    let f = flags;
    if (k < count - 1) f &= ~(TcpFlag.fin | TcpFlag.psh);
    if (k > 0) f &= ~TcpFlag.cwr;
    out[tcp + TcpField.flags] = f;
    write16(out, tcp + TcpField.checksum, 0);
    // The header's sum, then the payload copied and summed in one pass (its offset is even).
    const headerSum = sum16(out, tcp, thl, tcpPseudoSum4(out, seg, thl + chunk));
    const sum = copySum16(src, payloadOff + k * mss, out, seg + hdrBytes, chunk, headerSum);
    write16(out, tcp + TcpField.checksum, finish(sum));
    totalBytes += prefixBytes + hdrBytes + chunk;
  }
  into.count = count;
  into.segmentBytes = segmentBytes;
  into.totalBytes = totalBytes;
  return into;
}

/** What TcpCoalescer.push did with a packet. */
export const CoalesceResult = {
  /** Queued for the device: joined a group, opened one, or passed through. */
  queued: 0,
  /** A TCP segment whose checksum does not verify: dropped, nothing written. */
  badChecksum: 1,
  /** No room left in staging this batch: dropped. */
  noRoom: 2,
} as const;

/**
 * Coalesces consecutive TCPv4 segments of one flow into super-packets written to a TUN with a
 * virtio_net_hdr (GSO TCPV4, NEEDS_CSUM), into a staging buffer; anything else passes through
 * with an empty header. Segments join a group only when they continue it exactly: same
 * addresses, ports, ACK, window and options; the next sequence number; the same size as the
 * group's first (a shorter one ends the group, as GSO requires); no SYN, FIN, RST or URG; a
 * correct checksum. `emit(offset, length)` receives each finished packet, in arrival order.
 */
export class TcpCoalescer {
  private pos = 0;
  /** The open group: where it starts in staging (its virtio header), and its state. */
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

  /**
   * Adds one inner IPv4 packet (its header already validated) and says what became of it (a
   * CoalesceResult): only `queued` reaches the device.
   */
  push(buf: Buffer, off: number, len: number): number {
    const ihl = (buf[off] & 0x0f) << 2;
    const tcp = off + ihl;
    const eligible =
      buf[off + Ipv4Field.protocol] === IpProtocol.tcp &&
      len >= ihl + 20 &&
      (read16(buf, off + Ipv4Field.flagsFragment) & (IPV4_FLAG_MF | 0x1fff)) === 0 &&
      (buf[tcp + TcpField.flags] & (TcpFlag.syn | TcpFlag.fin | TcpFlag.rst | TcpFlag.urg)) === 0;
    const thl = eligible ? (buf[tcp + TcpField.dataOffset] >>> 4) << 2 : 0;
    const payload = len - ihl - thl;
    const staging = this.staging;
    if (eligible && thl >= 20 && payload > 0 && this.continues(buf, off, ihl, thl, payload)) {
      // Copied to the group's end while summed; committed only when the checksum verifies.
      const headerSum = sum16(buf, tcp, thl, tcpPseudoSum4(buf, off, thl + payload));
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
    if (eligible && thl >= 20 && payload > 0) {
      // Open a group with this segment, once its checksum verifies.
      const ipOff = this.pos + VIRTIO_NET_HDR_BYTES;
      copyBytes(buf, off, staging, ipOff, ihl);
      const sum = copySum16(
        buf,
        tcp,
        staging,
        ipOff + ihl,
        thl + payload,
        tcpPseudoSum4(buf, off, thl + payload),
      );
      if (finish(sum) !== 0) return CoalesceResult.badChecksum;
      this.start = this.pos;
      this.ipOff = ipOff;
      this.pos = ipOff + len;
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
    // Not a data segment: through, as it is, behind an empty header.
    return this.passThrough(buf, off, len);
  }

  /** Passes a packet through as it is (IPv6, anything not to coalesce), behind an empty header. */
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
    const g = this.ipOff;
    const s = this.staging;
    // Addresses (and the TOS/TTL that must match for GRO), then ports, ACK, window, options.
    for (let b = Ipv4Field.src; b < Ipv4Field.src + 8; b++)
      if (buf[off + b] !== s[g + b]) return false;
    if (
      buf[off + Ipv4Field.dscpEcn] !== s[g + Ipv4Field.dscpEcn] ||
      buf[off + Ipv4Field.ttl] !== s[g + Ipv4Field.ttl]
    )
      return false;
    const tcp = off + ihl;
    const gt = g + ihl;
    for (let b = 0; b < 4; b++) if (buf[tcp + b] !== s[gt + b]) return false;
    if (readInt32(buf, tcp + TcpField.seq) !== this.nextSeq) return false;
    for (let b = TcpField.ack; b < TcpField.ack + 4; b++)
      if (buf[tcp + b] !== s[gt + b]) return false;
    if (
      buf[tcp + TcpField.flags] !== (s[gt + TcpField.flags] & ~TcpFlag.psh) &&
      buf[tcp + TcpField.flags] !== (s[gt + TcpField.flags] | TcpFlag.psh)
    )
      return false;
    if (read16(buf, tcp + TcpField.window) !== read16(s, gt + TcpField.window)) return false;
    for (let b = 20; b < thl; b++) if (buf[tcp + b] !== s[gt + b]) return false;
    return true;
  }

  /** Finishes the open group (if any) and emits it. Call at the end of each batch. */
  flush(): void {
    if (this.start < 0) return;
    const s = this.staging;
    const g = this.ipOff;
    const tcpBytes = this.thl + this.payload;
    if (this.segments === 1) {
      // One segment: it goes as it came, checksum intact.
      writeVirtioNetHdr(s, this.start, 0, VirtioGso.none, 0, 0, 0, 0);
    } else {
      write16(s, g + Ipv4Field.totalLength, this.ihl + tcpBytes);
      ipv4FillChecksum(s, g);
      if (this.psh) s[g + this.ihl + TcpField.flags] |= TcpFlag.psh;
      writeTcpPartialChecksum4(s, g, g + this.ihl, tcpBytes);
      writeVirtioNetHdr(
        s,
        this.start,
        VirtioFlag.needsCsum,
        VirtioGso.tcpv4,
        this.ihl + this.thl,
        this.mss,
        this.ihl,
        TcpField.checksum,
      );
    }
    this.emit(this.start, VIRTIO_NET_HDR_BYTES + this.ihl + tcpBytes);
    this.start = -1;
  }
}
