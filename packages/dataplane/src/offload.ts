import {
  copyBytes,
  copySum16,
  ETHERNET_HEADER_BYTES,
  EtherType,
  finish,
  fold,
  IPV4_FLAG_MF,
  IPV6_HEADER_BYTES,
  IpProtocol,
  Ipv4Field,
  Ipv6Field,
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
  write16,
  write32,
  writeTcpPartialChecksum4,
  writeVirtioNetHdr,
} from '@weft/encap';
import { type SendTable, SumOp, sumRanges } from '@weft/tun';
import { Counter } from './counters.js';

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

/** The most segments one UDP GSO send may carry (the kernel's UDP_MAX_SEGMENTS). */
export const UDP_GSO_MAX_SEGMENTS = 64;
/** The most bytes one UDP datagram may carry before the kernel cuts it (an IPv4 packet's 64 KiB). */
export const UDP_GSO_MAX_BYTES = 65_000;

/**
 * Offloads, outbound, without copying a payload: a TSO TCP super-packet (IPv4 or IPv6) is cut into segments
 * whose headers are written to a staging buffer (each behind `prefixBytes` for encapsulation)
 * while each segment's payload stays where the device read put it; a send gathers header and
 * payload pieces (SendTable.append). The payload checksums are summed by the addon, one call per
 * batch (finish), and folded into the TCP checksums the headers were given.
 */
export class TcpSegmenter {
  /** One sum op per segment: its payload's range in the device ring. */
  private readonly ops: Int32Array;
  /** Per op: where its segment's TCP checksum field is in staging. */
  private readonly fields: Int32Array;
  private pending = 0;
  /** What the last cut() made: segments, bytes of each header (prefix included), MSS. */
  count = 0;
  headerBytes = 0;
  mss = 0;
  /** Where the first segment's payload starts in the source, and the last segment's size. */
  payloadOff = 0;
  lastBytes = 0;

  constructor(
    readonly staging: Buffer,
    /** The most segments a batch may cut. */
    readonly maxSegments: number,
  ) {
    this.ops = new Int32Array(maxSegments * SumOp.words);
    this.fields = new Int32Array(maxSegments);
  }

  /** Starts a batch. */
  reset(): void {
    this.pending = 0;
  }

  /**
   * Writes the headers of the segments of the super-packet at src[ipOff, +len) to staging[at...],
   * `headerBytes` apart, each after `prefixBytes` left free: a copy of the `linkBytes` of link
   * header in front of src[ipOff] (a TAP frame's Ethernet header, tags included; 0 for a TUN),
   * then whole IPv4/TCP headers with their own length, identification, sequence number, flags and
   * IPv4 checksum, and the TCP checksum still missing its payload's sum (finish adds it); for
   * IPv6 (TSO6), whole IPv6/TCP headers with their own payload length, sequence number and flags.
   * With decrementTtl each TTL (hop limit) is one lower (flannel's udp step). Returns the segment
   * count, or 0 for anything that is not a plain TCP super-packet (IPv4 options are kept; an IPv6
   * extension header is not cut), or when the batch has no room left.
   */
  cut(
    src: Buffer,
    ipOff: number,
    len: number,
    mss: number,
    at: number,
    prefixBytes: number,
    decrementTtl: boolean,
    linkBytes = 0,
  ): number {
    if (mss <= 0) return 0;
    const v6 = (src[ipOff] & 0xf0) === 0x60;
    let ihl: number;
    if (v6) {
      // TCP right behind the fixed header (an extension header is not cut).
      if (len < IPV6_HEADER_BYTES + 20 || src[ipOff + Ipv6Field.nextHeader] !== IpProtocol.tcp)
        return 0;
      ihl = IPV6_HEADER_BYTES;
    } else {
      if (
        len < 40 ||
        (src[ipOff] & 0xf0) !== 0x40 ||
        src[ipOff + Ipv4Field.protocol] !== IpProtocol.tcp
      )
        return 0;
      ihl = (src[ipOff] & 0x0f) << 2;
      if (ihl < 20 || ihl + 20 > len) return 0;
    }
    const tcpOff = ipOff + ihl;
    const thl = (src[tcpOff + TcpField.dataOffset] >>> 4) << 2;
    const hdrBytes = ihl + thl;
    if (thl < 20 || hdrBytes > len) return 0;
    const ttl = v6 ? Ipv6Field.hopLimit : Ipv4Field.ttl;
    if (decrementTtl && src[ipOff + ttl] <= 1) return 0;
    const payloadBytes = len - hdrBytes;
    const count = Math.max(1, Math.ceil(payloadBytes / mss));
    const stride = prefixBytes + linkBytes + hdrBytes;
    const out = this.staging;
    if (at + count * stride > out.length || this.pending + count > this.maxSegments) return 0;
    const id0 = v6 ? 0 : read16(src, ipOff + Ipv4Field.identification);
    // Sequence numbers as signed 32-bit: small integers across calls, the same bits on the wire.
    const seq0 = readInt32(src, tcpOff + TcpField.seq);
    const flags = src[tcpOff + TcpField.flags];
    const payloadOff = ipOff + hdrBytes;
    const ops = this.ops;
    // The first segment's headers, as the super-packet's with the fields that differ per segment
    // zeroed: their sums, taken once, are what every segment's checksums start from.
    const head = at + prefixBytes;
    const first = head + linkBytes;
    for (let b = -linkBytes; b < hdrBytes; b++) out[first + b] = src[ipOff + b];
    if (decrementTtl) out[first + ttl]--;
    let ipBase = 0;
    if (!v6) {
      write16(out, first + Ipv4Field.totalLength, 0);
      write16(out, first + Ipv4Field.identification, 0);
      write16(out, first + Ipv4Field.checksum, 0);
      ipBase = sum16(out, first, ihl);
    }
    const tcp0 = first + ihl;
    write32(out, tcp0 + TcpField.seq, 0);
    write16(out, tcp0 + TcpField.dataOffset, 0);
    write16(out, tcp0 + TcpField.checksum, 0);
    // The TCP header's and pseudo-header's sum (addresses and protocol; RFC 9293 3.1, RFC 8200
    // 8.1), but for the length, sequence number and flags.
    const tcpBase = sum16(
      out,
      tcp0,
      thl,
      v6 ? sum16(out, first + Ipv6Field.src, 32, IpProtocol.tcp) : tcpPseudoSum4(out, first, 0),
    );
    const doff = src[tcpOff + TcpField.dataOffset] << 8;
    for (let k = 0; k < count; k++) {
      const seg = at + k * stride + prefixBytes + linkBytes;
      const chunk = k === count - 1 ? payloadBytes - k * mss : mss;
      // Every header starts as the first's, link header and all (memmove within staging, no view).
      if (k > 0) out.copyWithin(seg - linkBytes, head, first + hdrBytes);
      if (v6) {
        write16(out, seg + Ipv6Field.payloadLength, thl + chunk);
      } else {
        const length = hdrBytes + chunk;
        const id = (id0 + k) & 0xffff;
        write16(out, seg + Ipv4Field.totalLength, length);
        write16(out, seg + Ipv4Field.identification, id);
        write16(out, seg + Ipv4Field.checksum, finish(ipBase + length + id));
      }
      const tcp = seg + ihl;
      const seq = (seq0 + k * mss) | 0;
      write32(out, tcp + TcpField.seq, seq);
      // FIN and PSH belong to the last segment, CWR to the first.
      let f = flags;
      if (k < count - 1) f &= ~(TcpFlag.fin | TcpFlag.psh);
      if (k > 0) f &= ~TcpFlag.cwr;
      out[tcp + TcpField.dataOffset] = doff >>> 8;
      out[tcp + TcpField.flags] = f;
      // The header's and pseudo-header's sum now; the payload's joins it in finish().
      write16(
        out,
        tcp + TcpField.checksum,
        fold(tcpBase + thl + chunk + (seq >>> 16) + (seq & 0xffff) + (doff | f)),
      );
      const op = this.pending++;
      ops[op * SumOp.words + SumOp.offset] = payloadOff + k * mss;
      ops[op * SumOp.words + SumOp.length] = chunk;
      this.fields[op] = tcp + TcpField.checksum;
    }
    this.count = count;
    this.headerBytes = stride;
    this.mss = mss;
    this.payloadOff = payloadOff;
    this.lastBytes = payloadBytes - (count - 1) * mss;
    return count;
  }

  /** Completes every TCP checksum of the batch: `source` is the buffer the super-packets were in. */
  finish(source: Buffer): void {
    const n = this.pending;
    if (n === 0) return;
    const ops = this.ops;
    sumRanges(source, ops, n);
    const out = this.staging;
    for (let op = 0; op < n; op++) {
      const at = this.fields[op];
      write16(out, at, finish(read16(out, at) + ops[op * SumOp.words + SumOp.result]));
    }
    this.pending = 0;
  }
}

/** Staging a GatherCoalescer needs per packet: a virtio_net_hdr, an Ethernet header (TAP), IP and TCP headers. */
export const GATHER_STAGING_PER_RECORD = VIRTIO_NET_HDR_BYTES + 14 + 120;

/** What a record of the GatherCoalescer holds. */
const Kind = { passThrough: 0, tcp: 1, udp: 2 } as const;
/** The most datagrams one UDP super-packet carries (as UDP GSO sends do). */
const UDP_GROUP_MAX_SEGMENTS = 64;
const UDP_HEADER_BYTES = 8;

/**
 * Offloads, inbound, without copying a payload: the packets of a batch are recorded (add), then
 * (finish) their checksums are summed by the addon in one call and checked, and consecutive
 * packets of one flow become one GSO super-packet for the TUN, written as an iovec: from
 * staging, a virtio_net_hdr and the super-packet's IP and transport headers, then each packet's
 * payload where the socket read put it (nothing read is changed).
 *
 * TCP segments, over IPv4 or IPv6 (no extension headers), join a group only when they continue
 * it exactly: same addresses, TOS (traffic class and flow label), TTL (hop limit), ports, ACK,
 * window and options; the next sequence number; the same size as the group's first (a shorter one
 * ends the group, as GSO requires); no SYN, FIN, RST or URG; a correct checksum.
 * With `udp`, UDP datagrams of one flow become a UDP GSO (USO, Linux 6.2+) super-packet the
 * kernel cuts back into exactly those datagrams: same addresses, TOS (traffic class and flow
 * label), TTL (hop limit) and ports; over IPv4 the same DF and consecutive identifications (the
 * kernel numbers the datagrams it cuts so); the same size as the first (a shorter one ends the
 * group), a checksum present and correct. Anything else passes through as it is, behind an
 * empty header. Order is kept; a packet whose checksum is wrong is dropped and counted, as the
 * kernel would have dropped it.
 *
 * For a TAP (`linkBytes` 14) a record is an Ethernet frame: its IP packet follows an untagged
 * header, and segments join a group only behind the same header (one GSO frame has one); the
 * virtio_net_hdr's offsets count from the frame's first byte.
 */
export class GatherCoalescer {
  private readonly offs: Int32Array;
  private readonly lens: Int32Array;
  private readonly kinds: Uint8Array;
  /** Per record: its IP version (4 or 6; 0 for what passes through). */
  private readonly families: Uint8Array;
  /** Per record: its sum op (the transport header and payload), else -1. */
  private readonly opOf: Int32Array;
  private readonly ops: Int32Array;
  private records = 0;
  private opCount = 0;
  private n = 0;
  private stagingPos = 0;
  /** The open group: its kind, first descriptor, first packet, and state. */
  private kind = 0;
  private family = 4;
  private head = -1;
  private headOff = 0;
  private ihl = 0;
  /** Transport header bytes: TCP's, or 8 for UDP. */
  private thl = 0;
  private mss = 0;
  private segments = 0;
  private payload = 0;
  /** TCP: the next sequence number; UDP over IPv4: the next identification. */
  private next = 0;
  private closed = false;
  private psh = false;

  constructor(
    /**
     * Where virtio_net_hdrs and super-packet headers are written (slab `stagingSlab` of the device
     * handle): room for GATHER_STAGING_PER_RECORD bytes per record.
     */
    readonly staging: Buffer,
    private readonly table: SendTable,
    /** Descriptors [0, capacity) of the table are the coalescer's. */
    private readonly capacity: number,
    private readonly stagingSlab: number,
    /** The slab index of the buffer the packets are in. */
    private readonly sourceSlab: number,
    private readonly counts: Float64Array,
    /** The most packets a batch may hold. */
    readonly maxRecords: number,
    /** Coalesce UDP datagrams too (the device takes UDP GSO writes). */
    private readonly udp = false,
    /** Bytes of link header in front of each IPv4 packet: 0 (a TUN), or 14 (a TAP's Ethernet). */
    private readonly linkBytes = 0,
    /** The largest super-packet (IP length), below 64 KiB. */
    private readonly maxBytes = 65_000,
  ) {
    this.offs = new Int32Array(maxRecords);
    this.lens = new Int32Array(maxRecords);
    this.kinds = new Uint8Array(maxRecords);
    this.families = new Uint8Array(maxRecords);
    this.opOf = new Int32Array(maxRecords);
    this.ops = new Int32Array(maxRecords * SumOp.words);
    // One empty header, shared by every packet that passes through.
    staging.fill(0, 0, VIRTIO_NET_HDR_BYTES);
  }

  /** Starts a batch. */
  reset(): void {
    this.records = 0;
    this.opCount = 0;
  }

  /**
   * Records one inner packet (its IP header already validated, `len` its total length) for the
   * device; TCP data segments (and, with `udp`, IPv4 UDP datagrams) are candidates to coalesce.
   * `family` says what it is: 4 or 6, a validated IP packet of that version (filling the frame
   * behind `linkBytes` of Ethernet header), or 0, anything else, which passes through. False when
   * the batch is full: the packet is dropped and counted.
   */
  add(family: number, buf: Buffer, off: number, len: number): boolean {
    const r = this.records;
    if (r >= this.maxRecords) {
      this.counts[Counter.dropSendError]++;
      return false;
    }
    this.records = r + 1;
    this.offs[r] = off;
    this.lens[r] = len;
    this.kinds[r] = Kind.passThrough;
    this.families[r] = family;
    this.opOf[r] = -1;
    const ip = off + this.linkBytes;
    let ihl: number;
    let protocol: number;
    if (family === 4) {
      if ((read16(buf, ip + Ipv4Field.flagsFragment) & (IPV4_FLAG_MF | 0x1fff)) !== 0) return true;
      ihl = (buf[ip] & 0x0f) << 2;
      protocol = buf[ip + Ipv4Field.protocol];
    } else if (family === 6) {
      // TCP or UDP right behind the fixed header; extension headers pass through.
      ihl = IPV6_HEADER_BYTES;
      protocol = buf[ip + Ipv6Field.nextHeader];
    } else {
      return true;
    }
    const l4 = ip + ihl;
    const ipLen = len - this.linkBytes;
    if (protocol === IpProtocol.tcp) {
      if (
        ipLen < ihl + 20 ||
        (buf[l4 + TcpField.flags] & (TcpFlag.syn | TcpFlag.fin | TcpFlag.rst | TcpFlag.urg)) !== 0
      )
        return true;
      const thl = (buf[l4 + TcpField.dataOffset] >>> 4) << 2;
      if (thl < 20 || ipLen - ihl - thl <= 0) return true;
      this.kinds[r] = Kind.tcp;
    } else if (protocol === IpProtocol.udp && this.udp) {
      // A datagram with a checksum (zero is none over IPv4, invalid over IPv6: the kernel
      // decides) and its length as the IP header says.
      if (
        ipLen <= ihl + UDP_HEADER_BYTES ||
        read16(buf, l4 + 4) !== ipLen - ihl ||
        read16(buf, l4 + 6) === 0
      )
        return true;
      this.kinds[r] = Kind.udp;
    } else {
      return true;
    }
    const op = this.opCount++;
    this.opOf[r] = op;
    this.ops[op * SumOp.words + SumOp.offset] = l4;
    this.ops[op * SumOp.words + SumOp.length] = ipLen - ihl;
    return true;
  }

  /**
   * Checks and groups the batch's packets, fills descriptors [0, n) of the table and returns n;
   * counts what was delivered (rxPackets, rxBytes) and what was dropped (a bad checksum, no
   * room). `buf` is the buffer add() was given.
   */
  finish(buf: Buffer): number {
    if (this.opCount > 0) sumRanges(buf, this.ops, this.opCount);
    this.n = 0;
    this.stagingPos = VIRTIO_NET_HDR_BYTES;
    this.head = -1;
    const c = this.counts;
    for (let r = 0; r < this.records; r++) {
      const off = this.offs[r];
      const len = this.lens[r];
      const kind = this.kinds[r];
      if (kind === Kind.passThrough) {
        this.close(buf);
        this.passThrough(off, len);
        continue;
      }
      const ip = off + this.linkBytes;
      const family = this.families[r];
      const ihl = family === 6 ? IPV6_HEADER_BYTES : (buf[ip] & 0x0f) << 2;
      const l4 = ip + ihl;
      const l4Bytes = len - this.linkBytes - ihl;
      const protocol = kind === Kind.tcp ? IpProtocol.tcp : IpProtocol.udp;
      // The pseudo-header (RFC 9293 3.1, RFC 768, RFC 8200 8.1): addresses, protocol, length.
      const a = ip + Ipv4Field.src;
      const pseudo =
        family === 6
          ? sum16(buf, ip + Ipv6Field.src, 32, protocol + l4Bytes)
          : read16(buf, a) +
            read16(buf, a + 2) +
            read16(buf, a + 4) +
            read16(buf, a + 6) +
            protocol +
            l4Bytes;
      if (finish(this.ops[this.opOf[r] * SumOp.words + SumOp.result] + pseudo) !== 0) {
        c[Counter.dropBadChecksum]++;
        continue;
      }
      const thl = kind === Kind.tcp ? (buf[l4 + TcpField.dataOffset] >>> 4) << 2 : UDP_HEADER_BYTES;
      const payload = l4Bytes - thl;
      const joins =
        family === this.family &&
        (kind === Kind.tcp
          ? this.continuesTcp(buf, off, ihl, thl, payload)
          : this.continuesUdp(buf, off, ihl, payload));
      if (joins) {
        if (this.n >= this.capacity) {
          c[Counter.dropSendError]++;
          continue;
        }
        this.table.append(this.n++, this.sourceSlab, l4 + thl, payload);
        this.segments++;
        this.payload += payload;
        if (kind === Kind.tcp) {
          this.next = (this.next + payload) | 0;
          this.psh = (buf[l4 + TcpField.flags] & TcpFlag.psh) !== 0;
          if (payload < this.mss || this.psh) this.closed = true;
        } else {
          this.next = (this.next + 1) & 0xffff;
          if (payload < this.mss) this.closed = true;
        }
      } else {
        this.close(buf);
        if (this.n + 2 > this.capacity) {
          c[Counter.dropSendError]++;
          continue;
        }
        // Its two descriptors (header, first payload) are filled when the group closes.
        this.kind = kind;
        this.family = family;
        this.head = this.n;
        this.n += 2;
        this.headOff = off;
        this.ihl = ihl;
        this.thl = thl;
        this.mss = payload;
        this.segments = 1;
        this.payload = payload;
        if (kind === Kind.tcp) {
          this.next = (readInt32(buf, l4 + TcpField.seq) + payload) | 0;
          this.psh = (buf[l4 + TcpField.flags] & TcpFlag.psh) !== 0;
          this.closed = this.psh;
        } else {
          this.next = family === 4 ? (read16(buf, ip + Ipv4Field.identification) + 1) & 0xffff : 0;
          this.closed = false;
        }
      }
      c[Counter.rxPackets]++;
      c[Counter.rxBytes] += len;
    }
    this.close(buf);
    this.records = 0;
    this.opCount = 0;
    return this.n;
  }

  private passThrough(off: number, len: number): void {
    const c = this.counts;
    if (this.n + 2 > this.capacity) {
      c[Counter.dropSendError]++;
      return;
    }
    this.table.setLocal(this.n++, this.stagingSlab, 0, VIRTIO_NET_HDR_BYTES);
    this.table.append(this.n++, this.sourceSlab, off, len);
    c[Counter.rxPackets]++;
    c[Counter.rxBytes] += len;
  }

  /**
   * Whether the packet in the frame at off matches the group's first (of the same IP version) in
   * link header (a GSO frame has one), and in its IP header's addresses, TOS and TTL (IPv6: the
   * first word, version, traffic class and flow label, and the hop limit).
   */
  private sameIp(buf: Buffer, frame: number, ihl: number): boolean {
    if (this.head < 0 || this.closed || ihl !== this.ihl) return false;
    const link = this.linkBytes;
    const f = this.headOff;
    // The Ethernet addresses (the EtherType is IPv4 for both).
    if (
      link !== 0 &&
      (readInt32(buf, frame) !== readInt32(buf, f) ||
        readInt32(buf, frame + 4) !== readInt32(buf, f + 4) ||
        readInt32(buf, frame + 8) !== readInt32(buf, f + 8))
    )
      return false;
    const off = frame + link;
    const g = f + link;
    if (this.family === 6) {
      if (readInt32(buf, off) !== readInt32(buf, g) || buf[off + 7] !== buf[g + 7]) return false;
      for (let b = Ipv6Field.src; b < IPV6_HEADER_BYTES; b += 4)
        if (readInt32(buf, off + b) !== readInt32(buf, g + b)) return false;
      return true;
    }
    return (
      readInt32(buf, off + Ipv4Field.src) === readInt32(buf, g + Ipv4Field.src) &&
      readInt32(buf, off + Ipv4Field.dst) === readInt32(buf, g + Ipv4Field.dst) &&
      buf[off + Ipv4Field.dscpEcn] === buf[g + Ipv4Field.dscpEcn] &&
      buf[off + Ipv4Field.ttl] === buf[g + Ipv4Field.ttl]
    );
  }

  private continuesTcp(
    buf: Buffer,
    off: number,
    ihl: number,
    thl: number,
    payload: number,
  ): boolean {
    if (this.kind !== Kind.tcp || thl !== this.thl || payload > this.mss) return false;
    if (this.ihl + this.thl + this.payload + payload > this.maxBytes) return false;
    if (!this.sameIp(buf, off, ihl)) return false;
    const tcp = off + this.linkBytes + ihl;
    const gt = this.headOff + this.linkBytes + ihl;
    // Ports, then ACK, window, options; the next sequence number; flags but for PSH.
    if (readInt32(buf, tcp) !== readInt32(buf, gt)) return false;
    if (readInt32(buf, tcp + TcpField.seq) !== this.next) return false;
    if (readInt32(buf, tcp + TcpField.ack) !== readInt32(buf, gt + TcpField.ack)) return false;
    if (
      buf[tcp + TcpField.flags] !== (buf[gt + TcpField.flags] & ~TcpFlag.psh) &&
      buf[tcp + TcpField.flags] !== (buf[gt + TcpField.flags] | TcpFlag.psh)
    )
      return false;
    if (read16(buf, tcp + TcpField.window) !== read16(buf, gt + TcpField.window)) return false;
    for (let b = 20; b < thl; b += 4)
      if (readInt32(buf, tcp + b) !== readInt32(buf, gt + b)) return false;
    return true;
  }

  private continuesUdp(buf: Buffer, off: number, ihl: number, payload: number): boolean {
    if (this.kind !== Kind.udp || payload > this.mss || this.segments >= UDP_GROUP_MAX_SEGMENTS)
      return false;
    if (this.ihl + UDP_HEADER_BYTES + this.payload + payload > this.maxBytes) return false;
    if (!this.sameIp(buf, off, ihl)) return false;
    const ip = off + this.linkBytes;
    const g = this.headOff + this.linkBytes;
    // IPv4: DF as the first had it, the next identification. Both: the same ports.
    if (
      this.family === 4 &&
      (read16(buf, ip + Ipv4Field.flagsFragment) !== read16(buf, g + Ipv4Field.flagsFragment) ||
        read16(buf, ip + Ipv4Field.identification) !== this.next)
    )
      return false;
    return readInt32(buf, ip + ihl) === readInt32(buf, g + ihl);
  }

  /** Finishes the open group, if any: its headers, its two reserved descriptors. */
  private close(buf: Buffer): void {
    const h = this.head;
    if (h < 0) return;
    this.head = -1;
    const g = this.headOff;
    const l4Bytes = this.thl + this.payload;
    const table = this.table;
    const link = this.linkBytes;
    // Headers: the link header (a TAP's), IP and transport.
    const hdrBytes = link + this.ihl + this.thl;
    if (this.segments === 1) {
      // One packet: it goes as it came, checksum intact.
      table.setLocal(h, this.stagingSlab, 0, VIRTIO_NET_HDR_BYTES);
      table.append(h + 1, this.sourceSlab, g, hdrBytes + this.payload);
      return;
    }
    // The super-packet's headers go to staging (the packets stay as they were read), after its
    // virtio_net_hdr: the first packet's, with the whole length (PSH if the last segment had
    // it), and the pseudo-header sum where NEEDS_CSUM has the kernel finish the checksum.
    const s = this.staging;
    const at = this.stagingPos;
    const frame = at + VIRTIO_NET_HDR_BYTES;
    const ip = frame + link;
    const l4 = ip + this.ihl;
    this.stagingPos = frame + hdrBytes;
    const tcp = this.kind === Kind.tcp;
    const v6 = this.family === 6;
    writeVirtioNetHdr(
      s,
      at,
      VirtioFlag.needsCsum,
      tcp ? (v6 ? VirtioGso.tcpv6 : VirtioGso.tcpv4) : VirtioGso.udpL4,
      hdrBytes,
      this.mss,
      // For a TAP, csum_start and hdr_len count from the frame's first byte.
      link + this.ihl,
      tcp ? TcpField.checksum : 6,
    );
    for (let b = 0; b < hdrBytes; b++) s[frame + b] = buf[g + b];
    if (v6) {
      // No header checksum in IPv6; the pseudo-header has the addresses and the L4 length.
      write16(s, ip + Ipv6Field.payloadLength, l4Bytes);
      const pseudo = fold(
        sum16(s, ip + Ipv6Field.src, 32, (tcp ? IpProtocol.tcp : IpProtocol.udp) + l4Bytes),
      );
      if (tcp) {
        if (this.psh) s[l4 + TcpField.flags] |= TcpFlag.psh;
        write16(s, l4 + TcpField.checksum, pseudo);
      } else {
        write16(s, l4 + 4, l4Bytes);
        write16(s, l4 + 6, pseudo);
      }
    } else if (tcp) {
      write16(s, ip + Ipv4Field.totalLength, this.ihl + l4Bytes);
      ipv4FillChecksum(s, ip);
      if (this.psh) s[l4 + TcpField.flags] |= TcpFlag.psh;
      writeTcpPartialChecksum4(s, ip, l4, l4Bytes);
    } else {
      write16(s, ip + Ipv4Field.totalLength, this.ihl + l4Bytes);
      ipv4FillChecksum(s, ip);
      write16(s, l4 + 4, l4Bytes);
      write16(s, l4 + 6, fold(sum16(s, ip + Ipv4Field.src, 8, IpProtocol.udp + l4Bytes)));
    }
    table.setLocal(h, this.stagingSlab, at, VIRTIO_NET_HDR_BYTES + hdrBytes);
    table.append(h + 1, this.sourceSlab, g + hdrBytes, this.mss);
  }
}

/**
 * Hot path: the bytes of link header in front of an IPv4 or IPv6 packet in the Ethernet frame at
 * buf[off] (14, or 18 and 22 behind one or two 802.1Q/802.1ad tags), or -1 when the frame does not
 * carry IP there.
 */
export function frameIpOffset(buf: Uint8Array, off: number, len: number): number {
  let at = 12;
  for (let tags = 0; tags <= 2; tags++) {
    if (len < at + 2) return -1;
    const type = read16(buf, off + at);
    if (type === EtherType.ipv4 || type === EtherType.ipv6) return at + 2;
    if (type !== EtherType.vlan && type !== EtherType.qinq) return -1;
    at += 4;
  }
  return -1;
}

/**
 * Hot path: what the Ethernet frame at buf[off, +len) is to a TAP's GatherCoalescer (its `add`
 * family): 4 or 6 for a valid IPv4 or IPv6 packet right behind an untagged header, filling the
 * frame exactly (a GSO frame has no trailer); 0 for anything else.
 */
export function frameIpFamily(buf: Uint8Array, off: number, len: number): number {
  const ip = off + ETHERNET_HEADER_BYTES;
  const ipLen = len - ETHERNET_HEADER_BYTES;
  if (ipLen < 40) return 0;
  const type = read16(buf, off + 12);
  if (type === EtherType.ipv4)
    return ipv4Check(buf, ip, ipLen) === Status.ok &&
      read16(buf, ip + Ipv4Field.totalLength) === ipLen
      ? 4
      : 0;
  if (type === EtherType.ipv6)
    return buf[ip] >>> 4 === 6 &&
      IPV6_HEADER_BYTES + read16(buf, ip + Ipv6Field.payloadLength) === ipLen
      ? 6
      : 0;
  return 0;
}
