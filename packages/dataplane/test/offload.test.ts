import { randomBytes } from 'node:crypto';
import {
  IpProtocol,
  internetChecksum,
  ipv4,
  ipv4Check,
  ipv6,
  ipv6Check,
  Status,
  TcpField,
  TcpFlag,
  tcpChecksumOk4,
  tcpPseudoSum4,
  udp,
  VIRTIO_NET_HDR_BYTES,
  VirtioFlag,
  VirtioGso,
  virtioRead16,
  write16,
} from '@weft/encap';
import { allocSlab, SendFlag, SendTable } from '@weft/tun';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { COUNTER_COUNT, Counter } from '../src/counters.js';
import {
  CoalesceResult,
  finishPartialChecksum,
  GatherCoalescer,
  segmentTcp4,
  TcpCoalescer,
  TcpSegmenter,
} from '../src/testing.js';
import { cutUso } from './uso.js';

/**
 * A 32-byte TCP header at buf[tcp] (a 12-byte timestamp option) to port 5201, ACK 77, window 501,
 * and `payload` behind it; the checksum field is left for the caller.
 */
function writeTcpWithTimestamps(
  buf: Buffer,
  tcp: number,
  payload: Buffer,
  sport: number,
  seq: number,
  flags: number = TcpFlag.ack,
): void {
  buf.writeUInt16BE(sport, tcp);
  buf.writeUInt16BE(5201, tcp + 2);
  buf.writeUInt32BE(seq >>> 0, tcp + TcpField.seq);
  buf.writeUInt32BE(77, tcp + TcpField.ack);
  buf[tcp + TcpField.dataOffset] = (32 / 4) << 4;
  buf[tcp + TcpField.flags] = flags;
  buf.writeUInt16BE(501, tcp + TcpField.window);
  buf.set([1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2], tcp + 20);
  payload.copy(buf, tcp + 32);
}

/** A TCPv4 packet (20-byte IP header, TCP with a 12-byte timestamp option) carrying `payload`. */
function tcpPacket(
  payload: Buffer,
  opts: { seq?: number; flags?: number; src?: number; sport?: number; ttl?: number } = {},
): Buffer {
  const thl = 32;
  const buf = Buffer.alloc(20 + thl + payload.length);
  ipv4.emit(
    {
      src: opts.src ?? 0x0af40105,
      dst: 0x0af40207,
      protocol: IpProtocol.tcp,
      ttl: opts.ttl ?? 64,
      payloadLength: thl + payload.length,
      identification: 100,
      dontFragment: true,
    },
    buf,
  );
  const tcp = 20;
  writeTcpWithTimestamps(buf, tcp, payload, opts.sport ?? 40000, opts.seq ?? 1_000_000, opts.flags);
  // As the kernel hands it over with NEEDS_CSUM: the pseudo-header sum in the checksum field.
  write16(buf, tcp + TcpField.checksum, 0);
  const partial = tcpPseudoSum4(buf, 0, thl + payload.length);
  write16(buf, tcp + TcpField.checksum, (partial & 0xffff) + (partial >>> 16));
  return buf;
}

function finished(packet: Buffer): Buffer {
  expect(finishPartialChecksum(packet, 0, packet.length, 20, TcpField.checksum)).toBe(true);
  return packet;
}

/**
 * `w` is one TSO super-packet for the TUN carrying `payload` behind 20-byte IPv4 and TCP headers
 * at MSS 1386, ACK|PSH, its TCP checksum partial (NEEDS_CSUM): what the kernel finishes is right.
 */
function expectSuperPacket(w: Buffer, payload: Buffer): void {
  expect(w[0]).toBe(VirtioFlag.needsCsum);
  expect(w[1]).toBe(VirtioGso.tcpv4);
  expect(virtioRead16(w, 2)).toBe(52);
  expect(virtioRead16(w, 4)).toBe(1386);
  expect(virtioRead16(w, 6)).toBe(20);
  expect(virtioRead16(w, 8)).toBe(TcpField.checksum);
  const packet = w.subarray(VIRTIO_NET_HDR_BYTES);
  expect(ipv4Check(packet, 0, packet.length)).toBe(Status.ok);
  expect(packet.subarray(52).equals(payload)).toBe(true);
  expect(packet[20 + TcpField.flags]).toBe(TcpFlag.ack | TcpFlag.psh);
  expect(tcpChecksumOk4(finished(Buffer.from(packet)), 0, 20, packet.length - 20)).toBe(true);
}

describe('TSO segmentation', () => {
  it('cuts a super-packet into valid segments that carry the payload in order', () => {
    const payload = randomBytes(60_000);
    const superPacket = tcpPacket(payload, { flags: TcpFlag.ack | TcpFlag.psh | TcpFlag.cwr });
    const out = Buffer.alloc(80_000);
    const mss = 1386;
    const r = segmentTcp4(superPacket, 0, superPacket.length, mss, out, 0, 22, false)!;
    expect(r.count).toBe(Math.ceil(60_000 / mss));
    expect(r.segmentBytes).toBe(22 + 52 + mss);
    const chunks: Buffer[] = [];
    for (let k = 0; k < r.count; k++) {
      const seg = k * r.segmentBytes + 22;
      const len = out.readUInt16BE(seg + 2);
      expect(ipv4Check(out, seg, len)).toBe(Status.ok);
      expect(out.readUInt16BE(seg + 4)).toBe(100 + k);
      expect(tcpChecksumOk4(out, seg, seg + 20, len - 20)).toBe(true);
      expect(out.readUInt32BE(seg + 20 + TcpField.seq)).toBe(1_000_000 + k * mss);
      const flags = out[seg + 20 + TcpField.flags];
      expect((flags & TcpFlag.psh) !== 0).toBe(k === r.count - 1);
      expect((flags & TcpFlag.cwr) !== 0).toBe(k === 0);
      chunks.push(out.subarray(seg + 52, seg + len));
    }
    expect(Buffer.concat(chunks).equals(payload)).toBe(true);
    expect(r.totalBytes).toBe(r.count * 74 + 60_000);
  });

  it("decrements each segment's TTL for flannel's udp step, and refuses what it cannot cut", () => {
    const p = tcpPacket(randomBytes(3000), { ttl: 9 });
    const out = Buffer.alloc(10_000);
    const r = segmentTcp4(p, 0, p.length, 1400, out, 0, 0, true)!;
    for (let k = 0; k < r.count; k++) expect(out[k * r.segmentBytes + 8]).toBe(8);
    expect(
      segmentTcp4(tcpPacket(Buffer.alloc(10), { ttl: 1 }), 0, 62, 1400, out, 0, 0, true),
    ).toBeUndefined();
    const udpish = Buffer.from(p);
    udpish[9] = IpProtocol.udp;
    expect(segmentTcp4(udpish, 0, udpish.length, 1400, out, 0, 0, false)).toBeUndefined();
    expect(segmentTcp4(p, 0, p.length, 1400, Buffer.alloc(100), 0, 0, false)).toBeUndefined();
  });
});

describe('coalescing for TUN writes', () => {
  const collect = () => {
    const staging = Buffer.alloc(200_000);
    const emitted: Buffer[] = [];
    const c = new TcpCoalescer(staging, (off, len) =>
      emitted.push(Buffer.from(staging.subarray(off, off + len))),
    );
    return { c, emitted };
  };

  it('turns the segments of a super-packet back into one GSO write the kernel can finish', () => {
    const payload = randomBytes(50_000);
    const sp = tcpPacket(payload, { flags: TcpFlag.ack | TcpFlag.psh });
    const segs = Buffer.alloc(70_000);
    const r = segmentTcp4(sp, 0, sp.length, 1386, segs, 0, 0, false)!;
    const { c, emitted } = collect();
    for (let k = 0; k < r.count; k++)
      c.push(segs, k * r.segmentBytes, segs.readUInt16BE(k * r.segmentBytes + 2));
    c.flush();
    expect(emitted.length).toBe(1);
    const w = emitted[0];
    expectSuperPacket(w, payload);
  });

  it('keeps flows, gaps, control segments and other protocols apart, in order', () => {
    const { c, emitted } = collect();
    const seg = (seq: number, bytes: number, o: Parameters<typeof tcpPacket>[1] = {}) =>
      finished(tcpPacket(Buffer.alloc(bytes, seq & 0xff), { seq, ...o }));
    const parts = [
      seg(1000, 100),
      seg(1100, 100),
      seg(5000, 100, { sport: 40001 }), // another flow: the first group ends
      seg(5100, 100, { sport: 40001 }),
      seg(9999, 100, { sport: 40001 }), // a gap
      seg(1200, 100, { flags: TcpFlag.ack | TcpFlag.fin }), // FIN: alone
      Buffer.from(ipv4Packet17()),
    ];
    for (const p of parts) c.push(p, 0, p.length);
    c.flush();
    const summary = emitted.map((w) => `${w[1]}:${w.length - VIRTIO_NET_HDR_BYTES}`);
    expect(summary).toEqual([
      `${VirtioGso.tcpv4}:252`,
      `${VirtioGso.tcpv4}:252`,
      `0:152`,
      '0:152',
      '0:28',
    ]);
  });

  it('says a segment whose checksum is wrong was dropped, not delivered, opening a group or joining one', () => {
    const { c, emitted } = collect();
    const good = finished(tcpPacket(Buffer.alloc(100, 1), { seq: 1 }));
    const bad = finished(tcpPacket(Buffer.alloc(100, 2), { seq: 101 }));
    bad[60] ^= 0xff;
    const badFirst = finished(tcpPacket(Buffer.alloc(100, 3), { seq: 1, sport: 40009 }));
    badFirst[70] ^= 0x01;
    expect(c.push(good, 0, good.length)).toBe(CoalesceResult.queued);
    expect(c.push(bad, 0, bad.length)).toBe(CoalesceResult.badChecksum);
    expect(c.push(badFirst, 0, badFirst.length)).toBe(CoalesceResult.badChecksum);
    c.flush();
    expect(emitted.length).toBe(1);
    expect(emitted[0][1]).toBe(VirtioGso.none);
    expect(emitted[0].subarray(VIRTIO_NET_HDR_BYTES).equals(good)).toBe(true);
  });

  it('says so when staging has no room, and writes nothing past it', () => {
    const staging = Buffer.alloc(150);
    let emitted = 0;
    const c = new TcpCoalescer(staging, () => emitted++);
    const p = finished(tcpPacket(Buffer.alloc(100, 1), { seq: 1 }));
    expect(c.push(p, 0, p.length)).toBe(CoalesceResult.noRoom);
    expect(c.passThrough(p, 0, p.length)).toBe(CoalesceResult.noRoom);
    expect(emitted).toBe(0);
  });

  it('round-trips any payload size and MSS', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 20_000 }),
        fc.integer({ min: 200, max: 1448 }),
        (bytes, mss) => {
          const payload = randomBytes(bytes);
          const sp = tcpPacket(payload);
          const segs = Buffer.alloc(bytes + 200 * Math.ceil(bytes / mss) + 200);
          const r = segmentTcp4(sp, 0, sp.length, mss, segs, 0, 0, false)!;
          const { c, emitted } = collect();
          for (let k = 0; k < r.count; k++)
            c.push(segs, k * r.segmentBytes, segs.readUInt16BE(k * r.segmentBytes + 2));
          c.flush();
          expect(emitted.length).toBe(1);
          expect(emitted[0].subarray(VIRTIO_NET_HDR_BYTES + 52).equals(payload)).toBe(true);
        },
      ),
      { numRuns: 100 },
    );
  });
});

/** A small UDP packet: not TCP, it passes through alone. */
function ipv4Packet17(): Buffer {
  const b = Buffer.alloc(28);
  ipv4.emit({ src: 1, dst: 2, protocol: IpProtocol.udp, ttl: 5, payloadLength: 8 }, b);
  return b;
}

/** The packets descriptors [0, n) of a table make, each its pieces joined (slabs by index). */
function gathered(table: SendTable, n: number, slabs: Record<number, Buffer>): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0; i < n; i++) {
    const piece = slabs[table.slabs[i]].subarray(
      table.offsets[i],
      table.offsets[i] + table.lengths[i],
    );
    if (table.flags[i] & SendFlag.continues)
      out[out.length - 1] = Buffer.concat([out.at(-1)!, piece]);
    else out.push(Buffer.from(piece));
  }
  return out;
}

/** Cuts a super-packet with a TcpSegmenter: each segment as headers (staging) and payload (in place). */
function cutGathered(sp: Buffer, mss: number, prefix: number, decrementTtl = false) {
  const source = allocSlab(sp.length + 64);
  sp.copy(source, 64);
  const staging = allocSlab(200 * 160);
  const seg = new TcpSegmenter(staging, 200);
  const count = seg.cut(source, 64, sp.length, mss, 0, prefix, decrementTtl);
  seg.finish(source);
  const segments: Buffer[] = [];
  for (let k = 0; k < count; k++) {
    const chunk = k === count - 1 ? seg.lastBytes : mss;
    segments.push(
      Buffer.concat([
        staging.subarray(k * seg.headerBytes + prefix, (k + 1) * seg.headerBytes),
        source.subarray(seg.payloadOff + k * mss, seg.payloadOff + k * mss + chunk),
      ]),
    );
  }
  return { count, segments, seg, source };
}

/** A GatherCoalescer over a fresh table, with the segments laid one after another in `source`. */
function coalesceGathered(segments: Buffer[], udp = false) {
  const source = allocSlab(segments.reduce((a, b) => a + b.length, 0) + 16);
  const staging = allocSlab(130 * (segments.length + 1));
  const table = new SendTable(2 * segments.length + 2);
  const counts = new Float64Array(COUNTER_COUNT);
  const c = new GatherCoalescer(staging, table, table.capacity, 3, 1, counts, segments.length, udp);
  let at = 0;
  for (const s of segments) {
    s.copy(source, at);
    c.add(s[0] >>> 4, source, at, s.length);
    at += s.length;
  }
  const before = Buffer.from(source);
  const n = c.finish(source);
  // What was read is never changed: headers of super-packets go to staging.
  expect(source.equals(before)).toBe(true);
  return { packets: gathered(table, n, { 1: source, 3: staging }), counts };
}

describe('TSO segmentation by gathering (TcpSegmenter): headers in staging, payloads in place', () => {
  it('cuts a super-packet into valid segments that carry the payload in order', () => {
    const payload = randomBytes(60_000);
    const sp = tcpPacket(payload, { flags: TcpFlag.ack | TcpFlag.psh | TcpFlag.cwr });
    const mss = 1386;
    const { count, segments, seg } = cutGathered(sp, mss, 22);
    expect(count).toBe(Math.ceil(60_000 / mss));
    expect(seg.headerBytes).toBe(22 + 52);
    segments.forEach((s, k) => {
      expect(s.readUInt16BE(2)).toBe(s.length);
      expect(ipv4Check(s, 0, s.length)).toBe(Status.ok);
      expect(s.readUInt16BE(4)).toBe(100 + k);
      expect(tcpChecksumOk4(s, 0, 20, s.length - 20)).toBe(true);
      expect(s.readUInt32BE(20 + TcpField.seq)).toBe(1_000_000 + k * mss);
      const flags = s[20 + TcpField.flags];
      expect((flags & TcpFlag.psh) !== 0).toBe(k === count - 1);
      expect((flags & TcpFlag.cwr) !== 0).toBe(k === 0);
    });
    expect(Buffer.concat(segments.map((s) => s.subarray(52))).equals(payload)).toBe(true);
  });

  it('makes exactly the segments the copying cut makes, TTL step included', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 20_000 }),
        fc.integer({ min: 200, max: 1448 }),
        fc.boolean(),
        (bytes, mss, ttl) => {
          const sp = tcpPacket(randomBytes(bytes), { ttl: 9 });
          const copied = Buffer.alloc(bytes + 200 * Math.ceil(bytes / mss) + 200);
          const r = segmentTcp4(sp, 0, sp.length, mss, copied, 0, 0, ttl)!;
          const { segments } = cutGathered(sp, mss, 0, ttl);
          expect(segments.length).toBe(r.count);
          segments.forEach((s, k) => {
            const at = k * r.segmentBytes;
            expect(s.equals(copied.subarray(at, at + s.length))).toBe(true);
          });
        },
      ),
      { numRuns: 100 },
    );
  });

  it('refuses what it cannot cut, and a batch with no room left', () => {
    const staging = allocSlab(10 * 160);
    const seg = new TcpSegmenter(staging, 10);
    const p = tcpPacket(randomBytes(3000), { ttl: 1 });
    expect(seg.cut(p, 0, p.length, 1400, 0, 0, true)).toBe(0);
    const udpish = Buffer.from(p);
    udpish[9] = IpProtocol.udp;
    expect(seg.cut(udpish, 0, udpish.length, 1400, 0, 0, false)).toBe(0);
    const big = tcpPacket(randomBytes(20_000));
    expect(seg.cut(big, 0, big.length, 1000, 0, 0, false)).toBe(0); // 20 segments > 10
  });
});

/** A TCPv6 packet (fixed IPv6 header, TCP with a 12-byte timestamp option) carrying `payload`. */
function tcp6Packet(
  payload: Buffer,
  opts: { seq?: number; flags?: number; hopLimit?: number; flowLabel?: number } = {},
): Buffer {
  const thl = 32;
  const buf = Buffer.alloc(40 + thl + payload.length);
  ipv6.emit(
    {
      src: Buffer.from('fd000010024400010000000000000005', 'hex'),
      dst: Buffer.from('fd000010024400020000000000000007', 'hex'),
      nextHeader: IpProtocol.tcp,
      hopLimit: opts.hopLimit ?? 64,
      payloadLength: thl + payload.length,
      trafficClass: 0x28,
      flowLabel: opts.flowLabel ?? 0xabcde,
    },
    buf,
  );
  const tcp = 40;
  writeTcpWithTimestamps(buf, tcp, payload, 40000, opts.seq ?? 4_294_000_000, opts.flags);
  // A TSO6 super-packet's checksum field holds the kernel's partial sum: anything, for the cut.
  write16(buf, tcp + TcpField.checksum, 0x1234);
  return buf;
}

/** Whether the TCP checksum of the IPv6 packet `p` (no extension headers) is right (RFC 8200 8.1). */
function tcp6ChecksumOk(p: Buffer): boolean {
  const upper = p.length - 40;
  const pseudo = Buffer.alloc(40 + upper);
  p.copy(pseudo, 0, 8, 40);
  pseudo.writeUInt32BE(upper, 32);
  pseudo[39] = IpProtocol.tcp;
  p.copy(pseudo, 40, 40);
  return internetChecksum(pseudo, 0, pseudo.length) === 0;
}

describe('TSO6 segmentation by gathering (TcpSegmenter over IPv6)', () => {
  it('cuts an IPv6 super-packet into valid segments: payload length, sequence, flags and checksum each their own, the rest as sent', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 30_000 }),
        fc.integer({ min: 200, max: 1428 }),
        fc.integer({ min: 0, max: 0xffffffff }),
        fc.constantFrom(
          TcpFlag.ack,
          TcpFlag.ack | TcpFlag.psh,
          TcpFlag.ack | TcpFlag.psh | TcpFlag.fin | TcpFlag.cwr,
        ),
        fc.boolean(),
        (bytes, mss, seq, flags, hop) => {
          const payload = randomBytes(bytes);
          const sp = tcp6Packet(payload, { seq, flags, hopLimit: 9 });
          const { count, segments, seg } = cutGathered(sp, mss, 16, hop);
          expect(count).toBe(Math.ceil(bytes / mss));
          expect(seg.headerBytes).toBe(16 + 72);
          segments.forEach((s, k) => {
            expect(ipv6Check(s, 0, s.length)).toBe(Status.ok);
            expect(s.readUInt16BE(4)).toBe(s.length - 40);
            // Version, class and flow label, next header and addresses as the super-packet's.
            expect(s.subarray(0, 4).equals(sp.subarray(0, 4))).toBe(true);
            expect(s[6]).toBe(IpProtocol.tcp);
            expect(s[7]).toBe(hop ? 8 : 9);
            expect(s.subarray(8, 40).equals(sp.subarray(8, 40))).toBe(true);
            expect(s.readUInt32BE(40 + TcpField.seq)).toBe((seq + k * mss) >>> 0);
            const f = s[40 + TcpField.flags];
            const last = k === count - 1;
            expect(f & (TcpFlag.fin | TcpFlag.psh)).toBe(
              last ? flags & (TcpFlag.fin | TcpFlag.psh) : 0,
            );
            expect(f & TcpFlag.cwr).toBe(k === 0 ? flags & TcpFlag.cwr : 0);
            expect(f & TcpFlag.ack).toBe(TcpFlag.ack);
            // Ports, ack, window and options untouched.
            expect(s.subarray(40, 44).equals(sp.subarray(40, 44))).toBe(true);
            expect(s.subarray(48, 52).equals(sp.subarray(48, 52))).toBe(true);
            expect(s.subarray(54, 56).equals(sp.subarray(54, 56))).toBe(true);
            expect(s.subarray(60, 72).equals(sp.subarray(60, 72))).toBe(true);
            expect(tcp6ChecksumOk(s)).toBe(true);
          });
          expect(Buffer.concat(segments.map((s) => s.subarray(72))).equals(payload)).toBe(true);
        },
      ),
      { numRuns: 150 },
    );
  });

  it('copies a link header into each segment (TAP frames), and refuses what it cannot cut', () => {
    const sp = tcp6Packet(randomBytes(5000));
    const link = Buffer.from('0200000002010200000001018' + '6dd', 'hex');
    const source = allocSlab(sp.length + 64);
    link.copy(source, 64 - 14);
    sp.copy(source, 64);
    const staging = allocSlab(10 * 200);
    const seg = new TcpSegmenter(staging, 10);
    expect(seg.cut(source, 64, sp.length, 1400, 0, 8, false, 14)).toBe(4);
    seg.finish(source);
    for (let k = 0; k < 4; k++)
      expect(staging.subarray(k * seg.headerBytes + 8, k * seg.headerBytes + 22).equals(link)).toBe(
        true,
      );
    // Hop limit 1 with the udp step; an extension header (hop-by-hop) first; too many segments.
    expect(seg.cut(tcp6Packet(randomBytes(3000), { hopLimit: 1 }), 0, 3072, 1400, 0, 0, true)).toBe(
      0,
    );
    const ext = tcp6Packet(randomBytes(3000));
    ext[6] = 0;
    expect(seg.cut(ext, 0, ext.length, 1400, 0, 0, false)).toBe(0);
    const big = tcp6Packet(randomBytes(20_000));
    expect(seg.cut(big, 0, big.length, 1000, 0, 0, false)).toBe(0);
  });
});

describe('coalescing IPv6 TCP for TUN writes by gathering (GatherCoalescer)', () => {
  /** The kernel's side of a NEEDS_CSUM write: the sum from csum_start, stored at its offset. */
  const kernelFinished = (w: Buffer) => {
    const p = Buffer.from(w.subarray(VIRTIO_NET_HDR_BYTES));
    expect(finishPartialChecksum(p, 0, p.length, virtioRead16(w, 6), virtioRead16(w, 8))).toBe(
      true,
    );
    return p;
  };

  it('turns the segments of a TSO6 cut back into the super-packet: one TCPv6 GSO write the kernel can finish', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 2, max: 40_000 }),
        fc.integer({ min: 500, max: 1428 }),
        fc.integer({ min: 0, max: 0xffffffff }),
        (bytes, mss, seq) => {
          const payload = randomBytes(bytes);
          const sp = tcp6Packet(payload, { seq, flags: TcpFlag.ack | TcpFlag.psh });
          const { segments } = cutGathered(sp, mss, 0);
          const { packets, counts } = coalesceGathered(segments);
          expect(counts[Counter.dropBadChecksum]).toBe(0);
          expect(counts[Counter.rxPackets]).toBe(segments.length);
          expect(packets.length).toBe(1);
          const w = packets[0];
          if (segments.length === 1) {
            // One segment goes as it came, behind an empty header.
            expect(w[1]).toBe(VirtioGso.none);
            expect(w.subarray(VIRTIO_NET_HDR_BYTES).equals(segments[0])).toBe(true);
            return;
          }
          expect(w[0]).toBe(VirtioFlag.needsCsum);
          expect(w[1]).toBe(VirtioGso.tcpv6);
          expect(virtioRead16(w, 2)).toBe(72);
          expect(virtioRead16(w, 4)).toBe(mss);
          expect(virtioRead16(w, 6)).toBe(40);
          expect(virtioRead16(w, 8)).toBe(TcpField.checksum);
          const packet = kernelFinished(w);
          // The super-packet as it was cut: headers, PSH, every payload byte; a valid checksum.
          expect(packet.length).toBe(sp.length);
          expect(packet.subarray(0, 56).equals(sp.subarray(0, 56))).toBe(true);
          expect(packet.subarray(58).equals(sp.subarray(58))).toBe(true);
          expect(tcp6ChecksumOk(packet)).toBe(true);
        },
      ),
      { numRuns: 120 },
    );
  });

  it('takes any mutation of an IPv6 flow without a throw: a segment with a wrong checksum dropped and counted, every other delivered, every super-packet checksum-true', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 2_000, max: 20_000 }),
        fc.array(
          fc.tuple(fc.nat({ max: 40 }), fc.nat({ max: 1_500 }), fc.integer({ min: 1, max: 255 })),
          { maxLength: 12 },
        ),
        (bytes, mutations) => {
          const sp = tcp6Packet(randomBytes(bytes), { flags: TcpFlag.ack });
          const { segments } = cutGathered(sp, 1000, 0);
          // Flip bytes anywhere: headers (version, lengths, addresses, flow label, ports, data
          // offset, flags) or payload.
          for (const [which, at, xor] of mutations) {
            const seg = segments[which % segments.length];
            seg[at % seg.length] ^= xor;
          }
          // The oracle: a TCP data segment right behind an IPv6 header is checked, and dropped
          // when its checksum is wrong; anything else passes as it came (the kernel checks it).
          const checked = (seg: Buffer) => {
            const thl = (seg[40 + TcpField.dataOffset] >>> 4) << 2;
            const control = TcpFlag.syn | TcpFlag.fin | TcpFlag.rst | TcpFlag.urg;
            return (
              seg[0] >>> 4 === 6 &&
              seg[6] === IpProtocol.tcp &&
              thl >= 20 &&
              seg.length - 40 - thl > 0 &&
              (seg[40 + TcpField.flags] & control) === 0
            );
          };
          const bad = segments.filter((seg) => checked(seg) && !tcp6ChecksumOk(seg)).length;
          const { packets, counts } = coalesceGathered(segments);
          expect(counts[Counter.dropBadChecksum]).toBe(bad);
          expect(counts[Counter.rxPackets] + counts[Counter.dropBadChecksum]).toBe(segments.length);
          let payload = 0;
          for (const w of packets) {
            if (w[1] === VirtioGso.none) {
              expect(segments.some((seg) => seg.equals(w.subarray(VIRTIO_NET_HDR_BYTES)))).toBe(
                true,
              );
              continue;
            }
            // A super-packet: one flow's segments, its checksum right once the kernel finishes it.
            expect(w[1]).toBe(VirtioGso.tcpv6);
            const p = Buffer.from(w.subarray(VIRTIO_NET_HDR_BYTES));
            expect(finishPartialChecksum(p, 0, p.length, 40, TcpField.checksum)).toBe(true);
            expect(tcp6ChecksumOk(p)).toBe(true);
            expect(p.readUInt16BE(4)).toBe(p.length - 40);
            payload += p.length - 72;
          }
          expect(payload).toBeLessThanOrEqual(bytes);
        },
      ),
      { numRuns: 200 },
    );
  });

  it('keeps IPv6 flows, a changed flow label or hop limit, control segments and IPv4 apart, in order; drops a bad checksum', () => {
    const cut = (o: Parameters<typeof tcp6Packet>[1]) =>
      cutGathered(tcp6Packet(randomBytes(3000), o), 1000, 0).segments;
    const a = cut({ seq: 1000 });
    const otherLabel = cut({ seq: 4000, flowLabel: 0x12345 });
    const otherHop = cut({ seq: 4000, hopLimit: 63 });
    const fin = cut({ seq: 4000, flags: TcpFlag.ack | TcpFlag.fin });
    const bad = Buffer.from(a[2]);
    bad[bad.length - 1] ^= 0xff;
    const v4 = cutGathered(tcpPacket(randomBytes(2000)), 1000, 0).segments;
    const { packets, counts } = coalesceGathered([
      a[0],
      a[1],
      bad,
      ...otherLabel,
      ...otherHop.slice(0, 2),
      ...v4,
      fin[2],
    ]);
    expect(counts[Counter.dropBadChecksum]).toBe(1);
    expect(packets.map((w) => `${w[1]}:${w.length - VIRTIO_NET_HDR_BYTES}`)).toEqual([
      `${VirtioGso.tcpv6}:${72 + 2000}`,
      `${VirtioGso.tcpv6}:${72 + 3000}`,
      `${VirtioGso.tcpv6}:${72 + 2000}`,
      `${VirtioGso.tcpv4}:${52 + 2000}`,
      // A FIN passes through as it is.
      `0:${72 + 1000}`,
    ]);
  });
});

describe('coalescing for TUN writes by gathering (GatherCoalescer)', () => {
  it('turns the segments of a super-packet back into one GSO write the kernel can finish', () => {
    const payload = randomBytes(50_000);
    const sp = tcpPacket(payload, { flags: TcpFlag.ack | TcpFlag.psh });
    const { segments } = cutGathered(sp, 1386, 0);
    const { packets, counts } = coalesceGathered(segments);
    expect(packets.length).toBe(1);
    const w = packets[0];
    expectSuperPacket(w, payload);
    expect(counts[Counter.rxPackets]).toBe(segments.length);
    expect(counts[Counter.rxBytes]).toBe(segments.reduce((a, s) => a + s.length, 0));
  });

  it('keeps flows, gaps, control segments and other protocols apart, in order', () => {
    const seg = (seq: number, bytes: number, o: Parameters<typeof tcpPacket>[1] = {}) =>
      finished(tcpPacket(Buffer.alloc(bytes, seq & 0xff), { seq, ...o }));
    const parts = [
      seg(1000, 100),
      seg(1100, 100),
      seg(5000, 100, { sport: 40001 }),
      seg(5100, 100, { sport: 40001 }),
      seg(9999, 100, { sport: 40001 }),
      seg(1200, 100, { flags: TcpFlag.ack | TcpFlag.fin }),
      Buffer.from(ipv4Packet17()),
    ];
    const { packets } = coalesceGathered(parts);
    expect(packets.map((w) => `${w[1]}:${w.length - VIRTIO_NET_HDR_BYTES}`)).toEqual([
      `${VirtioGso.tcpv4}:252`,
      `${VirtioGso.tcpv4}:252`,
      '0:152',
      '0:152',
      '0:28',
    ]);
    expect(packets[2].subarray(VIRTIO_NET_HDR_BYTES).equals(parts[4])).toBe(true);
    expect(packets[4].subarray(VIRTIO_NET_HDR_BYTES).equals(parts[6])).toBe(true);
  });

  it('drops a segment whose checksum is wrong, opening a group or joining one, and counts it', () => {
    const good = finished(tcpPacket(Buffer.alloc(100, 1), { seq: 1 }));
    const bad = finished(tcpPacket(Buffer.alloc(100, 2), { seq: 101 }));
    bad[60] ^= 0xff;
    const badFirst = finished(tcpPacket(Buffer.alloc(100, 3), { seq: 1, sport: 40009 }));
    badFirst[70] ^= 0x01;
    const { packets, counts } = coalesceGathered([good, bad, badFirst]);
    expect(packets.length).toBe(1);
    expect(packets[0][1]).toBe(VirtioGso.none);
    expect(packets[0].subarray(VIRTIO_NET_HDR_BYTES).equals(good)).toBe(true);
    expect(counts[Counter.dropBadChecksum]).toBe(2);
    expect(counts[Counter.rxPackets]).toBe(1);
  });

  it('drops and counts what does not fit the batch, and writes no descriptor past it', () => {
    const staging = allocSlab(1000);
    const table = new SendTable(8);
    const counts = new Float64Array(COUNTER_COUNT);
    const c = new GatherCoalescer(staging, table, 3, 3, 1, counts, 2);
    const source = allocSlab(1000);
    const p = Buffer.from(ipv4Packet17());
    for (let k = 0; k < 3; k++) {
      p.copy(source, k * 100);
      expect(c.add(4, source, k * 100, p.length)).toBe(k < 2);
    }
    table.setLocal(3, 0, 0, 1);
    expect(c.finish(source)).toBe(2);
    expect(table.flags[3]).toBe(0);
    expect(counts[Counter.dropSendError]).toBe(2);
    expect(counts[Counter.rxPackets]).toBe(1);
  });

  it('round-trips any payload size and MSS', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 20_000 }),
        fc.integer({ min: 200, max: 1448 }),
        (bytes, mss) => {
          const payload = randomBytes(bytes);
          const { segments } = cutGathered(tcpPacket(payload), mss, 0);
          const { packets } = coalesceGathered(segments);
          expect(packets.length).toBe(1);
          expect(packets[0].subarray(VIRTIO_NET_HDR_BYTES + 52).equals(payload)).toBe(true);
        },
      ),
      { numRuns: 100 },
    );
  });
});

/** A UDP/IPv4 datagram of one flow, with its checksum, as a kernel sends it (DF, the socket's IDs). */
function udpDatagram(
  payload: Buffer,
  o: { id: number; sport?: number; ttl?: number; df?: boolean; checksum?: boolean },
): Buffer {
  const b = Buffer.alloc(28 + payload.length);
  ipv4.emit(
    {
      src: 0x0af40205,
      dst: 0x0af40107,
      protocol: IpProtocol.udp,
      ttl: o.ttl ?? 64,
      payloadLength: 8 + payload.length,
      identification: o.id & 0xffff,
      dontFragment: o.df ?? true,
    },
    b,
  );
  payload.copy(b, 28);
  udp.emit(
    { srcPort: o.sport ?? 40000, dstPort: 5202, payloadLength: payload.length },
    b,
    20,
    o.checksum === false ? undefined : { ipVersion: 4, ipOffset: 0 },
  );
  return b;
}

/** A UDP/IPv6 datagram of one flow, with its checksum (or none: zero, invalid over IPv6). */
function udp6Datagram(
  payload: Buffer,
  o: { sport?: number; hopLimit?: number; flowLabel?: number; checksum?: boolean } = {},
): Buffer {
  const b = Buffer.alloc(48 + payload.length);
  ipv6.emit(
    {
      src: Buffer.from('fd000010024400020000000000000005', 'hex'),
      dst: Buffer.from('fd000010024400010000000000000007', 'hex'),
      nextHeader: IpProtocol.udp,
      hopLimit: o.hopLimit ?? 64,
      payloadLength: 8 + payload.length,
      trafficClass: 0x10,
      flowLabel: o.flowLabel ?? 0x12345,
    },
    b,
  );
  payload.copy(b, 48);
  udp.emit(
    { srcPort: o.sport ?? 40000, dstPort: 5202, payloadLength: payload.length },
    b,
    40,
    o.checksum === false ? undefined : { ipVersion: 6, ipOffset: 0 },
  );
  return b;
}

describe('coalescing UDP datagrams for UDP GSO writes (GatherCoalescer with udp)', () => {
  it('turns a flow of equal datagrams into one write the kernel cuts back into exactly them', () => {
    const dgrams = Array.from({ length: 40 }, (_, k) =>
      udpDatagram(randomBytes(k === 39 ? 20 : 64), { id: 65_520 + k }),
    );
    const { packets, counts } = coalesceGathered(dgrams, true);
    expect(packets.length).toBe(1);
    const cut = cutUso(packets[0]);
    expect(cut.length).toBe(40);
    expect(cut.every((d, k) => d.equals(dgrams[k]))).toBe(true);
    expect(counts[Counter.rxPackets]).toBe(40);
  });

  it('keeps apart what the kernel would not cut back the same, and drops a bad checksum', () => {
    const p = (n: number) => Buffer.alloc(n, n);
    const bad = udpDatagram(p(64), { id: 9 });
    bad[40] ^= 1;
    const parts = [
      udpDatagram(p(64), { id: 1 }),
      udpDatagram(p(64), { id: 2 }),
      udpDatagram(p(64), { id: 4 }), // an ID skipped: a new group
      udpDatagram(p(64), { id: 5, df: false }), // DF differs
      udpDatagram(p(64), { id: 6, sport: 1 }), // another flow
      udpDatagram(p(64), { id: 7, sport: 1, ttl: 3 }), // TTL differs
      udpDatagram(p(64), { id: 8, checksum: false }), // no checksum: through as it is
      bad,
      udpDatagram(p(100), { id: 10 }),
      udpDatagram(p(64), { id: 11 }), // shorter: joins, and ends the group
      udpDatagram(p(64), { id: 12 }),
    ];
    const { packets, counts } = coalesceGathered(parts, true);
    expect(packets.map((w) => `${w[1]}:${w.length - VIRTIO_NET_HDR_BYTES}`)).toEqual([
      `${VirtioGso.udpL4}:156`,
      '0:92',
      '0:92',
      '0:92',
      '0:92',
      '0:92',
      `${VirtioGso.udpL4}:192`,
      '0:92',
    ]);
    expect(cutUso(packets[0]).every((d, k) => d.equals(parts[k]))).toBe(true);
    expect(cutUso(packets[6]).every((d, k) => d.equals(parts[8 + k]))).toBe(true);
    expect(packets[5].subarray(VIRTIO_NET_HDR_BYTES).equals(parts[6])).toBe(true);
    expect(counts[Counter.dropBadChecksum]).toBe(1);
    expect(counts[Counter.rxPackets]).toBe(10);
  });

  it('over IPv6 too: a flow of equal datagrams is one write; a flow label, hop limit or port apart, a zero checksum passes through, a bad one is dropped', () => {
    const p = (n: number) => Buffer.alloc(n, n);
    const bad = udp6Datagram(p(64));
    bad[60] ^= 1;
    const parts = [
      udp6Datagram(p(64)),
      udp6Datagram(p(64)),
      udp6Datagram(p(64), { flowLabel: 7 }), // another flow label: a new group
      udp6Datagram(p(64), { flowLabel: 7, hopLimit: 3 }), // hop limit differs
      udp6Datagram(p(64), { flowLabel: 7, hopLimit: 3, sport: 1 }), // another flow
      udp6Datagram(p(64), { checksum: false }), // zero: the kernel decides, as it is
      bad,
      udpDatagram(p(64), { id: 1 }), // IPv4 between: its own group
      udp6Datagram(p(100)),
      udp6Datagram(p(100)),
      udp6Datagram(p(64)), // shorter: joins, and ends the group
      udp6Datagram(p(64)),
    ];
    const { packets, counts } = coalesceGathered(parts, true);
    expect(packets.map((w) => `${w[1]}:${w.length - VIRTIO_NET_HDR_BYTES}`)).toEqual([
      `${VirtioGso.udpL4}:176`,
      '0:112',
      '0:112',
      '0:112',
      '0:112',
      '0:92',
      `${VirtioGso.udpL4}:312`,
      '0:112',
    ]);
    expect(cutUso(packets[0]).every((d, k) => d.equals(parts[k]))).toBe(true);
    expect(cutUso(packets[6]).every((d, k) => d.equals(parts[8 + k]))).toBe(true);
    expect(packets[4].subarray(VIRTIO_NET_HDR_BYTES).equals(parts[5])).toBe(true);
    expect(counts[Counter.dropBadChecksum]).toBe(1);
    expect(counts[Counter.rxPackets]).toBe(11);
  });

  it('without `udp`, datagrams pass through one by one', () => {
    const dgrams = Array.from({ length: 5 }, (_, k) => udpDatagram(Buffer.alloc(64), { id: k }));
    const { packets } = coalesceGathered(dgrams, false);
    expect(packets.map((w) => w[1])).toEqual([0, 0, 0, 0, 0]);
  });

  it('round-trips any flow of datagrams', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.integer({ min: 1, max: 1400 }), fc.nat({ max: 3 })), {
          minLength: 1,
          maxLength: 80,
        }),
        fc.nat({ max: 65_535 }),
        fc.constantFrom(4, 6, 46),
        (shape, id0, families) => {
          // Mostly equal sizes and one flow, with other flows and sizes mixed in; IPv4, IPv6 or both.
          const dgrams = shape.map(([n, flow], k) =>
            families === 6 || (families === 46 && k % 3 === 0)
              ? udp6Datagram(randomBytes(flow === 0 ? 500 : n), { sport: 40000 + (flow >> 1) })
              : udpDatagram(randomBytes(flow === 0 ? 500 : n), {
                  id: id0 + k,
                  sport: 40000 + (flow >> 1),
                }),
          );
          const { packets } = coalesceGathered(dgrams, true);
          const out = packets.flatMap((w) =>
            w[1] === VirtioGso.udpL4 ? cutUso(w) : [w.subarray(VIRTIO_NET_HDR_BYTES)],
          );
          expect(out.length).toBe(dgrams.length);
          expect(out.every((d, k) => d.equals(dgrams[k]))).toBe(true);
        },
      ),
      { numRuns: 200 },
    );
  });
});
