import { randomBytes } from 'node:crypto';
import { parseMac } from '@weft/core';
import {
  EtherType,
  IpProtocol,
  ipv4,
  ipv4Check,
  ipv6,
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
  vxlanVni,
  write16,
  writeEthernetHeader,
  writeVirtioNetHdr,
  writeVxlanHeader,
} from '@weft/encap';
import { haveTools, scapyRun } from '@weft/testkit';
import { allocSlab, SendFlag, SendTable } from '@weft/tun';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { COUNTER_COUNT, Counter } from '../src/counters.js';
import { VxlanBackend } from '../src/index.js';
import {
  finishPartialChecksum,
  frameIpFamily,
  frameIpOffset,
  GatherCoalescer,
  segmentTcp4,
  setSource,
  standInBackendIo,
  TcpCoalescer,
  TcpSegmenter,
} from '../src/testing.js';
import { cutUso } from './uso.js';

const DST = parseMac('02:00:00:aa:02:05');
const SRC = parseMac('02:00:00:aa:01:05');
const THL = 32;

/**
 * An Ethernet frame (tagged with `tags` 802.1Q tags) carrying a TCPv4 packet (TCP with a 12-byte
 * timestamp option) with `payload`; its TCP checksum partial, as a TAP hands a TSO frame over, or
 * whole with `whole`.
 */
function tcpFrame(
  payload: Buffer,
  o: {
    seq?: number;
    flags?: number;
    sport?: number;
    src?: number;
    tags?: number;
    whole?: boolean;
    srcMac?: number;
  } = {},
): Buffer {
  const link = 14 + 4 * (o.tags ?? 0);
  const buf = Buffer.alloc(link + 20 + THL + payload.length);
  writeEthernetHeader(buf, 0, DST, o.srcMac ?? SRC, o.tags ? EtherType.vlan : EtherType.ipv4);
  for (let t = 0; t < (o.tags ?? 0); t++) {
    buf.writeUInt16BE(100 + t, 14 + 4 * t);
    buf.writeUInt16BE(t + 1 < (o.tags ?? 0) ? EtherType.vlan : EtherType.ipv4, 16 + 4 * t);
  }
  ipv4.emit(
    {
      src: o.src ?? 0x0a630105,
      dst: 0x0a630207,
      protocol: IpProtocol.tcp,
      ttl: 64,
      payloadLength: THL + payload.length,
      identification: 100,
      dontFragment: true,
    },
    buf,
    link,
  );
  const tcp = link + 20;
  buf.writeUInt16BE(o.sport ?? 40000, tcp);
  buf.writeUInt16BE(5201, tcp + 2);
  buf.writeUInt32BE((o.seq ?? 1_000_000) >>> 0, tcp + TcpField.seq);
  buf.writeUInt32BE(77, tcp + TcpField.ack);
  buf[tcp + TcpField.dataOffset] = (THL / 4) << 4;
  buf[tcp + TcpField.flags] = o.flags ?? TcpFlag.ack;
  buf.writeUInt16BE(501, tcp + TcpField.window);
  buf.set([1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2], tcp + 20);
  payload.copy(buf, tcp + THL);
  write16(buf, tcp + TcpField.checksum, 0);
  const partial = tcpPseudoSum4(buf, link, THL + payload.length);
  write16(buf, tcp + TcpField.checksum, (partial & 0xffff) + (partial >>> 16));
  if (o.whole)
    expect(finishPartialChecksum(buf, link, buf.length - link, 20, TcpField.checksum)).toBe(true);
  return buf;
}

/**
 * Cuts a TSO frame as VxlanBridge does, by gathering: TcpSegmenter with the frame's link header,
 * each segment's headers in staging behind a VXLAN header (`vni`), its payload where the frame
 * is. Returns the VXLAN datagrams (pieces joined), and the segmenter.
 */
function cut(frame: Buffer, mss: number, vni = 100) {
  const source = allocSlab(frame.length + 64);
  frame.copy(source, 64);
  const link = frameIpOffset(source, 64, frame.length);
  const staging = allocSlab(400 * 160);
  const seg = new TcpSegmenter(staging, 400);
  const count = seg.cut(source, 64 + link, frame.length - link, mss, 0, 8, false, link);
  seg.finish(source);
  const datagrams: Buffer[] = [];
  for (let k = 0; k < count; k++) {
    const at = k * seg.headerBytes;
    writeVxlanHeader(staging, at, vni);
    const chunk = k === count - 1 ? seg.lastBytes : mss;
    const payload = seg.payloadOff + k * mss;
    datagrams.push(
      Buffer.concat([
        staging.subarray(at, at + seg.headerBytes),
        source.subarray(payload, payload + chunk),
      ]),
    );
  }
  return { count, datagrams, seg };
}

/** The Ethernet frames (VXLAN header stripped) of a cut. */
function frames(datagrams: Buffer[]): Buffer[] {
  return datagrams.map((d) => d.subarray(8));
}

/**
 * The copying cut TAP mode made before it gathered, rebuilt on the copying segmentTcp4: each
 * segment a whole datagram, behind a VXLAN header and a copy of the frame's link header. The
 * reference the gathering cut must match byte for byte.
 */
function copyingCut(frame: Buffer, mss: number, vni = 100) {
  const link = frameIpOffset(frame, 0, frame.length);
  const out = Buffer.alloc(frame.length * 2 + 4096);
  const r = segmentTcp4(frame, link, frame.length - link, mss, out, 0, 8 + link, false)!;
  for (let k = 0; k < r.count; k++) {
    writeVxlanHeader(out, k * r.segmentBytes, vni);
    frame.copy(out, k * r.segmentBytes + 8, 0, link);
  }
  return { out, r };
}

/**
 * What GatherCoalescer (linkBytes 14, as VxlanBridge makes it) writes to a TAP for `list`, laid
 * one after another in a buffer as datagrams are: each write's pieces joined; and its counters.
 */
function coalesce(list: Buffer[], udp = false) {
  const source = allocSlab(list.reduce((a, f) => a + f.length, 0) + 16);
  const staging = allocSlab(150 * (list.length + 1));
  const table = new SendTable(2 * list.length + 2);
  const counts = new Float64Array(COUNTER_COUNT);
  const c = new GatherCoalescer(staging, table, table.capacity, 3, 1, counts, list.length, udp, 14);
  let at = 0;
  for (const f of list) {
    f.copy(source, at);
    c.add(frameIpFamily(source, at, f.length), source, at, f.length);
    at += f.length;
  }
  const before = Buffer.from(source);
  const n = c.finish(source);
  // What was read is never changed: headers of GSO frames go to staging.
  expect(source.equals(before)).toBe(true);
  const writes: Buffer[] = [];
  for (let i = 0; i < n; i++) {
    const slab = table.slabs[i] === 3 ? staging : source;
    const piece = slab.subarray(table.offsets[i], table.offsets[i] + table.lengths[i]);
    if (table.flags[i] & SendFlag.continues)
      writes[writes.length - 1] = Buffer.concat([writes.at(-1)!, piece]);
    else writes.push(Buffer.from(piece));
  }
  return { writes, counts };
}

/**
 * The copying coalescer TAP mode used before it gathered, rebuilt on the copying TcpCoalescer:
 * the IPv4 packets of untagged frames it fills exactly are coalesced, a group ending where the
 * Ethernet header changes; the header goes back in front of each write (a GSO write's offsets
 * counted from it); any other frame passes through as it is. The reference the gathering
 * coalescer must match byte for byte.
 */
function copyingCoalesce(list: Buffer[]): Buffer[] {
  const staging = Buffer.alloc(400_000);
  const out: Buffer[] = [];
  let eth = Buffer.alloc(14);
  const tc = new TcpCoalescer(staging, (o, l) => {
    const w = Buffer.from(staging.subarray(o, o + l));
    const hdr = w.subarray(0, VIRTIO_NET_HDR_BYTES);
    if (w[1] !== VirtioGso.none) {
      hdr.writeUInt16LE(hdr.readUInt16LE(2) + 14, 2);
      hdr.writeUInt16LE(hdr.readUInt16LE(6) + 14, 6);
    }
    out.push(Buffer.concat([hdr, eth, w.subarray(VIRTIO_NET_HDR_BYTES)]));
  });
  for (const f of list) {
    if (frameIpFamily(f, 0, f.length) !== 4) {
      tc.flush();
      out.push(Buffer.concat([Buffer.alloc(VIRTIO_NET_HDR_BYTES), f]));
      continue;
    }
    if (!f.subarray(0, 14).equals(eth)) {
      tc.flush();
      eth = Buffer.from(f.subarray(0, 14));
    }
    tc.push(f, 14, f.length - 14);
  }
  tc.flush();
  return out;
}

describe('the link header of an IP frame', () => {
  it('is 14 bytes, 18 or 22 behind one or two tags, for IPv4 and IPv6; anything else is not IP', () => {
    const p = Buffer.alloc(10);
    expect(frameIpOffset(tcpFrame(p), 0, 80)).toBe(14);
    expect(frameIpOffset(tcpFrame(p, { tags: 1 }), 0, 80)).toBe(18);
    expect(frameIpOffset(tcpFrame(p, { tags: 2 }), 0, 80)).toBe(22);
    expect(frameIpOffset(tcpFrame(p, { tags: 3 }), 0, 80)).toBe(-1);
    const arp = tcpFrame(p);
    arp.writeUInt16BE(EtherType.arp, 12);
    expect(frameIpOffset(arp, 0, 80)).toBe(-1);
    arp.writeUInt16BE(EtherType.ipv6, 12);
    expect(frameIpOffset(arp, 0, 80)).toBe(14);
    // Never a read past the frame: a tag cut short is not IP.
    expect(frameIpOffset(tcpFrame(p, { tags: 1 }), 0, 17)).toBe(-1);
    expect(frameIpOffset(tcpFrame(p), 0, 13)).toBe(-1);
  });

  it('is coalesced only when valid, untagged and filling the frame exactly', () => {
    const f = tcpFrame(Buffer.alloc(100, 1), { whole: true });
    expect(frameIpFamily(f, 0, f.length)).toBe(4);
    expect(frameIpFamily(f, 0, f.length - 1)).toBe(0);
    const padded = Buffer.concat([f, Buffer.alloc(4)]);
    expect(frameIpFamily(padded, 0, padded.length)).toBe(0);
    const tagged = tcpFrame(Buffer.alloc(100, 1), { whole: true, tags: 1 });
    expect(frameIpFamily(tagged, 0, tagged.length)).toBe(0);
    const badHeader = Buffer.from(f);
    badHeader[14 + 8] ^= 1;
    expect(frameIpFamily(badHeader, 0, badHeader.length)).toBe(0);
    // IPv6: its payload length must fill the frame.
    const v6 = Buffer.alloc(14 + 40 + 60);
    v6.writeUInt16BE(EtherType.ipv6, 12);
    v6[14] = 0x60;
    v6.writeUInt16BE(60, 14 + 4);
    expect(frameIpFamily(v6, 0, v6.length)).toBe(6);
    expect(frameIpFamily(v6, 0, v6.length - 1)).toBe(0);
    v6[14] = 0x40;
    expect(frameIpFamily(v6, 0, v6.length)).toBe(0);
  });
});

describe('TSO frames cut into VXLAN datagrams by gathering', () => {
  it('each segment behind the VXLAN header and a copy of the Ethernet header, valid and in order', () => {
    for (const tags of [0, 1, 2]) {
      const payload = randomBytes(60_000);
      const frame = tcpFrame(payload, { tags, flags: TcpFlag.ack | TcpFlag.psh | TcpFlag.cwr });
      const link = 14 + 4 * tags;
      const mss = 1398;
      const { count, datagrams, seg } = cut(frame, mss, 0xabcdef);
      expect(count).toBe(Math.ceil(60_000 / mss));
      expect(seg.headerBytes).toBe(8 + link + 20 + THL);
      const chunks: Buffer[] = [];
      for (const [k, d] of datagrams.entries()) {
        expect(vxlanVni(d, 0)).toBe(0xabcdef);
        expect(d[0]).toBe(0x08);
        const f = d.subarray(8);
        expect(f.subarray(0, link).equals(frame.subarray(0, link))).toBe(true);
        const len = f.readUInt16BE(link + 2);
        expect(len).toBe(f.length - link);
        expect(ipv4Check(f, link, len)).toBe(Status.ok);
        expect(tcpChecksumOk4(f, link, link + 20, len - 20)).toBe(true);
        expect(f.readUInt32BE(link + 20 + TcpField.seq)).toBe(1_000_000 + k * mss);
        const flags = f[link + 20 + TcpField.flags];
        expect((flags & TcpFlag.psh) !== 0).toBe(k === count - 1);
        expect((flags & TcpFlag.cwr) !== 0).toBe(k === 0);
        chunks.push(f.subarray(link + 20 + THL));
      }
      expect(Buffer.concat(chunks).equals(payload)).toBe(true);
    }
  });

  it('makes exactly the datagrams the copying cut makes, tags or not', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 20_000 }),
        fc.integer({ min: 200, max: 1448 }),
        fc.integer({ min: 0, max: 2 }),
        fc.integer({ min: 0, max: 0xffffffff }),
        (bytes, mss, tags, seq) => {
          const frame = tcpFrame(randomBytes(bytes), { tags, seq });
          const { out, r } = copyingCut(frame, mss);
          const { datagrams } = cut(frame, mss);
          expect(datagrams.length).toBe(r.count);
          for (const [k, d] of datagrams.entries()) {
            const at = k * r.segmentBytes;
            expect(d.equals(out.subarray(at, at + d.length))).toBe(true);
          }
        },
      ),
      { numRuns: 200 },
    );
  });

  it('refuses a frame that is not a TCPv4 super-packet', () => {
    const frame = tcpFrame(randomBytes(3000));
    const udp = Buffer.from(frame);
    udp[14 + 9] = IpProtocol.udp;
    expect(cut(udp, 1400).count).toBe(0);
  });
});

/** An untagged Ethernet frame carrying a UDP datagram over IPv4 (DF, identification `id`) or IPv6. */
function udpFrame(
  payload: Buffer,
  o: { family: 4 | 6; id?: number; sport?: number; srcMac?: number },
): Buffer {
  const ihl = o.family === 4 ? 20 : 40;
  const buf = Buffer.alloc(14 + ihl + 8 + payload.length);
  writeEthernetHeader(
    buf,
    0,
    DST,
    o.srcMac ?? SRC,
    o.family === 4 ? EtherType.ipv4 : EtherType.ipv6,
  );
  if (o.family === 4)
    ipv4.emit(
      {
        src: 0x0a630105,
        dst: 0x0a630207,
        protocol: IpProtocol.udp,
        ttl: 64,
        payloadLength: 8 + payload.length,
        identification: (o.id ?? 0) & 0xffff,
        dontFragment: true,
      },
      buf,
      14,
    );
  else
    ipv6.emit(
      {
        src: Buffer.from('fd990000000000000000000000000011', 'hex'),
        dst: Buffer.from('fd990000000000000000000000000021', 'hex'),
        nextHeader: IpProtocol.udp,
        hopLimit: 64,
        payloadLength: 8 + payload.length,
      },
      buf,
      14,
    );
  payload.copy(buf, 14 + ihl + 8);
  udp.emit(
    { srcPort: o.sport ?? 40000, dstPort: 5202, payloadLength: payload.length },
    buf,
    14 + ihl,
    { ipVersion: o.family, ipOffset: 14 },
  );
  return buf;
}

describe('coalescing frames for TAP writes by gathering', () => {
  it('turns the segments of a TSO frame back into one GSO frame the kernel can finish', () => {
    const payload = randomBytes(50_000);
    const frame = tcpFrame(payload, { flags: TcpFlag.ack | TcpFlag.psh });
    const { datagrams } = cut(frame, 1398);
    const { writes, counts } = coalesce(frames(datagrams));
    expect(writes.length).toBe(1);
    const w = writes[0];
    expect(w[0]).toBe(VirtioFlag.needsCsum);
    expect(w[1]).toBe(VirtioGso.tcpv4);
    // A TAP's offsets count from the frame's first byte.
    expect(virtioRead16(w, 2)).toBe(14 + 20 + THL);
    expect(virtioRead16(w, 4)).toBe(1398);
    expect(virtioRead16(w, 6)).toBe(14 + 20);
    expect(virtioRead16(w, 8)).toBe(TcpField.checksum);
    const f = w.subarray(VIRTIO_NET_HDR_BYTES);
    expect(f.subarray(0, 14).equals(frame.subarray(0, 14))).toBe(true);
    expect(ipv4Check(f, 14, f.length - 14)).toBe(Status.ok);
    expect(f.subarray(14 + 20 + THL).equals(payload)).toBe(true);
    expect(f[14 + 20 + TcpField.flags]).toBe(TcpFlag.ack | TcpFlag.psh);
    const done = Buffer.from(f);
    expect(finishPartialChecksum(done, 14, done.length - 14, 20, TcpField.checksum)).toBe(true);
    expect(tcpChecksumOk4(done, 14, 34, done.length - 34)).toBe(true);
    expect(counts[Counter.rxPackets]).toBe(datagrams.length);
    expect(counts[Counter.rxBytes]).toBe(datagrams.reduce((a, d) => a + d.length - 8, 0));
  });

  it('keeps Ethernet headers, flows, gaps, control segments and other frames apart, in order', () => {
    const seg = (seq: number, o: Parameters<typeof tcpFrame>[1] = {}) =>
      tcpFrame(Buffer.alloc(100, seq & 0xff), { seq, whole: true, ...o });
    const arp = Buffer.alloc(42);
    writeEthernetHeader(arp, 0, 0xffffffffffff, SRC, EtherType.arp);
    const padded = Buffer.concat([seg(1400), Buffer.alloc(4)]);
    const parts = [
      seg(1000),
      seg(1100),
      seg(1200, { srcMac: parseMac('02:00:00:aa:01:06') }), // another Ethernet header: a new group
      seg(1300, { srcMac: parseMac('02:00:00:aa:01:06') }),
      seg(5000, { sport: 40001 }), // another flow
      seg(9999, { sport: 40001 }), // a gap
      seg(1400, { flags: TcpFlag.ack | TcpFlag.fin }), // FIN: alone
      seg(1500, { tags: 1 }), // tagged: as it is
      padded, // an Ethernet trailer behind the packet: as it is
      arp,
    ];
    const { writes } = coalesce(parts);
    const summary = writes.map((w) => `${w[1]}:${w.length - VIRTIO_NET_HDR_BYTES}`);
    const one = 14 + 20 + THL + 100;
    expect(summary).toEqual([
      `${VirtioGso.tcpv4}:${one + 100}`,
      `${VirtioGso.tcpv4}:${one + 100}`,
      `0:${one}`,
      `0:${one}`,
      `0:${one}`,
      `0:${one + 4}`,
      `0:${one + 4}`,
      '0:42',
    ]);
    // What passes through is byte for byte the frame.
    expect(writes[6].subarray(VIRTIO_NET_HDR_BYTES).equals(padded)).toBe(true);
    expect(writes[1].readUIntBE(VIRTIO_NET_HDR_BYTES + 6, 6)).toBe(parseMac('02:00:00:aa:01:06'));
  });

  it('with `udp`: UDP datagrams of one flow behind one Ethernet header, IPv4 or IPv6, become one UDP GSO frame the kernel cuts back into exactly them', () => {
    const p = (n: number) => Buffer.alloc(n, n);
    for (const family of [4, 6] as const) {
      const parts = [
        udpFrame(p(300), { family, id: 1 }),
        udpFrame(p(300), { family, id: 2 }),
        udpFrame(p(300), { family, id: 3 }),
        udpFrame(p(300), { family, id: 4, srcMac: parseMac('02:00:00:aa:01:06') }), // another header
        udpFrame(p(300), { family, id: 5, srcMac: parseMac('02:00:00:aa:01:06') }),
        udpFrame(p(200), { family, id: 6, srcMac: parseMac('02:00:00:aa:01:06') }), // shorter: the last
        udpFrame(p(300), { family, id: 7, sport: 1 }),
      ];
      const { writes, counts } = coalesce(parts, true);
      expect(writes.map((w) => w[1])).toEqual([VirtioGso.udpL4, VirtioGso.udpL4, VirtioGso.none]);
      const out = [...cutUso(writes[0], 14), ...cutUso(writes[1], 14)];
      expect(out.length).toBe(6);
      for (const [k, d] of out.entries()) expect(d.equals(parts[k]), `${family} ${k}`).toBe(true);
      expect(writes[2].subarray(VIRTIO_NET_HDR_BYTES).equals(parts[6])).toBe(true);
      expect(counts[Counter.rxPackets]).toBe(7);
    }
    // Without `udp` (before Linux 6.2), one write each.
    const { writes } = coalesce([udpFrame(p(9), { family: 6 }), udpFrame(p(9), { family: 6 })]);
    expect(writes.map((w) => w[1])).toEqual([VirtioGso.none, VirtioGso.none]);
  });

  it('drops and counts a segment whose checksum is wrong, opening a group or joining one', () => {
    const good = tcpFrame(Buffer.alloc(100, 1), { seq: 1, whole: true });
    const bad = tcpFrame(Buffer.alloc(100, 2), { seq: 101, whole: true });
    bad[80] ^= 0xff;
    const badFirst = tcpFrame(Buffer.alloc(100, 3), { seq: 1, sport: 40009, whole: true });
    badFirst[90] ^= 0x01;
    const { writes, counts } = coalesce([good, bad, badFirst]);
    expect(writes.length).toBe(1);
    expect(writes[0][1]).toBe(VirtioGso.none);
    expect(writes[0].subarray(VIRTIO_NET_HDR_BYTES).equals(good)).toBe(true);
    expect(counts[Counter.dropBadChecksum]).toBe(2);
    expect(counts[Counter.rxPackets]).toBe(1);
  });

  it('round-trips any payload size and MSS through a cut and a coalesce', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 20_000 }),
        fc.integer({ min: 200, max: 1448 }),
        (bytes, mss) => {
          const payload = randomBytes(bytes);
          const { datagrams } = cut(tcpFrame(payload), mss);
          const { writes } = coalesce(frames(datagrams));
          expect(writes.length).toBe(1);
          expect(writes[0].subarray(VIRTIO_NET_HDR_BYTES + 14 + 20 + THL).equals(payload)).toBe(
            true,
          );
        },
      ),
      { numRuns: 100 },
    );
  });
});

describe.skipIf(!haveTools('scapy on cut and coalesced frames', 'scapy'))(
  'scapy reads what the L2 offloads write',
  () => {
    it('segments (tagged and not) and a finished GSO frame: every field and checksum as scapy computes it', async () => {
      const payload = randomBytes(5000);
      const list = [
        ...frames(cut(tcpFrame(payload), 1398).datagrams),
        ...frames(cut(tcpFrame(payload, { tags: 1 }), 1398).datagrams),
      ];
      const gso = coalesce(list.slice(0, 4)).writes[0].subarray(VIRTIO_NET_HDR_BYTES);
      finishPartialChecksum(gso, 14, gso.length - 14, 20, TcpField.checksum);
      const report = (await scapyRun(
        [...list, gso],
        `
def ok(layer):
    again = layer.__class__(raw(layer))
    again.chksum = None
    return layer.chksum == layer.__class__(raw(again)).chksum
def tcp_ok(p):
    q = p[IP].copy()
    del q[TCP].chksum
    return p[TCP].chksum == IP(raw(q))[TCP].chksum
out = []
for p in packets:
    out.append({"src": p[Ether].src, "dst": p[Ether].dst, "vlan": p[Dot1Q].vlan if Dot1Q in p else None,
                "ip": ok(p[IP]), "len": p[IP].len, "tcp": tcp_ok(p), "seq": p[TCP].seq,
                "payload": len(p[TCP].payload)})
print(json.dumps(out))
`,
      )) as {
        src: string;
        dst: string;
        vlan: number | null;
        ip: boolean;
        len: number;
        tcp: boolean;
        seq: number;
        payload: number;
      }[];
      expect(report.length).toBe(list.length + 1);
      for (const [i, p] of report.entries()) {
        expect(p.src).toBe('02:00:00:aa:01:05');
        expect(p.dst).toBe('02:00:00:aa:02:05');
        expect(p.ip, `frame ${i}`).toBe(true);
        expect(p.tcp, `frame ${i}`).toBe(true);
      }
      const half = list.length / 2;
      expect(report.slice(0, half).map((p) => p.vlan)).toEqual(Array(half).fill(null));
      expect(report.slice(half, list.length).map((p) => p.vlan)).toEqual(Array(half).fill(100));
      expect(report.slice(0, half).map((p) => p.seq)).toEqual(
        Array.from({ length: half }, (_, k) => 1_000_000 + k * 1398),
      );
      // The GSO frame: the four segments behind one header, its checksum finished as the kernel would.
      expect(report[list.length]).toMatchObject({ payload: 5000, seq: 1_000_000, vlan: null });
    });
  },
);

/*
 * TAP mode gathers (VxlanBridge over TcpSegmenter and GatherCoalescer): what it puts on the wire
 * and writes to the TAP must be, byte for byte, what the copying L2 offloads made.
 */
describe('TAP mode by gathering, against the copying offloads', () => {
  const NODES = [
    { publicIp: '198.18.0.2', vtepMac: '02:00:00:00:0b:01' },
    { publicIp: '198.18.0.3' },
  ];
  function tapBridge() {
    const { queue, socket, io } = standInBackendIo({ port: 4789 });
    const backend = VxlanBackend.overIo(io, {
      mode: 'tap',
      vni: 100,
      port: 4789,
      vtepMac: '02:00:00:00:0a:01',
      innerVlan: 'accept',
      offload: true,
    });
    backend.setNodes(NODES);
    return { backend, queue, socket };
  }

  it('outbound: every destination gets exactly the datagrams the copying cut makes, in the same GSO sends', () => {
    const { backend, queue, socket } = tapBridge();
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 20_000 }),
        fc.integer({ min: 200, max: 1448 }),
        fc.integer({ min: 0, max: 2 }),
        fc.constantFrom(
          TcpFlag.ack,
          TcpFlag.ack | TcpFlag.psh,
          TcpFlag.ack | TcpFlag.cwr | TcpFlag.fin,
        ),
        fc.boolean(),
        (bytes, mss, tags, flags, flood) => {
          const frame = tcpFrame(randomBytes(bytes), { tags, flags, seq: 0xfffff000 });
          // To every node, or to the one whose VTEP MAC it is.
          frame.writeUIntBE(flood ? 0xffffffffffff : parseMac('02:00:00:00:0b:01'), 0, 6);
          const { out, r } = copyingCut(frame, mss);
          const ring = queue.ring;
          const at = ring.slotOffset(0);
          const link = 14 + 4 * tags;
          writeVirtioNetHdr(
            ring.slab,
            at,
            VirtioFlag.needsCsum,
            VirtioGso.tcpv4,
            link + 20 + THL,
            mss,
            link + 20,
            TcpField.checksum,
          );
          frame.copy(ring.slab, at + VIRTIO_NET_HDR_BYTES);
          ring.lengths[0] = VIRTIO_NET_HDR_BYTES + frame.length;
          queue.onBatch(1);
          const sent = socket.sentPackets();
          const t = socket.table;
          // Each send's destination and GSO size, then its bytes, by destination.
          const perDst = new Map<number, Buffer[]>();
          let i = socket.lastSendStart;
          for (const p of sent) {
            expect(t.gso[i]).toBe(p.length > r.segmentBytes ? r.segmentBytes : 0);
            const dst = t.addrs[i * 4];
            perDst.set(dst, [...(perDst.get(dst) ?? []), p]);
            i++;
            while (
              i < socket.lastSendStart + socket.lastSendCount &&
              t.flags[i] & SendFlag.continues
            )
              i++;
          }
          expect(perDst.size).toBe(flood ? 2 : 1);
          for (const list of perDst.values())
            expect(Buffer.concat(list).equals(out.subarray(0, r.totalBytes))).toBe(true);
        },
      ),
      { numRuns: 200 },
    );
    expect(drops(backend)).toEqual({});
    backend.close();
  });

  it('inbound: a batch of frames becomes exactly the TAP writes the copying coalescer makes', () => {
    const { backend, queue, socket } = tapBridge();
    const other = parseMac('02:00:00:aa:01:06');
    // Frames as a peer sends them: segments of two flows and two senders, the odd control
    // segment, tagged or padded frame, and ARP.
    const frameOf = fc.oneof(
      {
        weight: 6,
        arbitrary: fc.record({
          kind: fc.constant('seg' as const),
          flow: fc.integer({ min: 0, max: 2 }),
          bytes: fc.constantFrom(100, 100, 100, 37),
        }),
      },
      { weight: 1, arbitrary: fc.constantFrom('fin', 'tagged', 'padded', 'arp', 'gap') },
    );
    fc.assert(
      fc.property(fc.array(frameOf, { minLength: 1, maxLength: 60 }), (plan) => {
        const seqs = [1000, 5000, 9000];
        const frames = plan.map((p) => {
          if (typeof p === 'object') {
            // Flow 2 continues flow 0's sequence, behind another source MAC: never one group.
            const f = p.flow === 2 ? 0 : p.flow;
            const seq = seqs[f];
            seqs[f] += p.bytes;
            return tcpFrame(Buffer.alloc(p.bytes, seq & 0xff), {
              seq,
              whole: true,
              sport: 40000 + (p.flow === 1 ? 1 : 0),
              srcMac: p.flow === 2 ? other : SRC,
            });
          }
          if (p === 'arp') {
            const arp = Buffer.alloc(42);
            writeEthernetHeader(arp, 0, 0xffffffffffff, SRC, EtherType.arp);
            return arp;
          }
          if (p === 'gap') seqs[0] += 7;
          const f = tcpFrame(Buffer.alloc(60, 9), {
            seq: seqs[0],
            whole: true,
            tags: p === 'tagged' ? 1 : 0,
            flags: p === 'fin' ? TcpFlag.ack | TcpFlag.fin : TcpFlag.ack,
          });
          return p === 'padded' ? Buffer.concat([f, Buffer.alloc(4)]) : f;
        });
        const expected = copyingCoalesce(frames);
        // The same frames as VXLAN datagrams, one a slot.
        const ring = socket.ring;
        frames.forEach((f, k) => {
          const at = ring.slotOffset(k);
          writeVxlanHeader(ring.slab, at, 100);
          f.copy(ring.slab, at + 8);
          ring.lengths[k] = 8 + f.length;
          ring.gso[k] = 0;
          setSource(ring, k, 0xc6120002, 4789);
        });
        const before = backend.counters().rxPackets;
        socket.onBatch(frames.length);
        const written = queue.sentPackets();
        expect(written.length).toBe(expected.length);
        for (const [k, w] of written.entries())
          expect(w.equals(expected[k]), `write ${k}`).toBe(true);
        expect(backend.counters().rxPackets - before).toBe(frames.length);
      }),
      { numRuns: 200 },
    );
    expect(drops(backend)).toEqual({});
    backend.close();
  });
});

function drops(backend: { counters(): { drops: Record<string, number> } }) {
  return Object.fromEntries(Object.entries(backend.counters().drops).filter(([, v]) => v !== 0));
}
