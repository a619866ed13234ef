import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  ARP_BYTES,
  arp,
  arpCheck,
  arpReplyInPlace,
  copyBytes,
  copySum16,
  EncapError,
  EtherType,
  emitFlannelFrame,
  emitVxlanFrame,
  ethernet,
  ethernetHeaderLength,
  ethernetType,
  flannelTtlStep,
  fold,
  IcmpType,
  type IpHeaderRepr,
  IpProtocol,
  type Ipv4Repr,
  icmp,
  icmpv4EchoReplyInPlace,
  ipv4,
  ipv4Check,
  ipv4DecrementTtl,
  ipv4FillChecksum,
  ipv6,
  ipv6Check,
  parseFlannelFrame,
  parseUdpFrame,
  parseVxlanFrame,
  Status,
  sum16,
  type UdpFrameRepr,
  udp,
  vxlan,
  vxlanCheck,
  vxlanDecapCheck,
  writeIcmpv4Error,
} from '../src/index.js';

const u8 = fc.integer({ min: 0, max: 0xff });
const u16 = fc.integer({ min: 0, max: 0xffff });
const u32 = fc.integer({ min: 0, max: 0xffffffff });
const mac = fc.integer({ min: 0, max: 2 ** 48 - 1 });
const bytes16 = fc.uint8Array({ minLength: 16, maxLength: 16 });

const ipv4Repr: fc.Arbitrary<Ipv4Repr> = fc.record({
  src: u32,
  dst: u32,
  protocol: u8,
  ttl: u8,
  payloadLength: fc.integer({ min: 0, max: 200 }),
  dscpEcn: u8,
  identification: u16,
  dontFragment: fc.boolean(),
  moreFragments: fc.boolean(),
  fragmentOffset: fc.integer({ min: 0, max: 0x1fff }).map((n) => n * 8),
  options: fc.option(
    fc
      .integer({ min: 1, max: 10 })
      .chain((words) => fc.uint8Array({ minLength: words * 4, maxLength: words * 4 })),
    { nil: undefined },
  ),
});

/** A whole IPv4 packet (header + random payload) from a repr. */
function packetOf(repr: Ipv4Repr, fill = 0xab): Buffer {
  const buf = Buffer.alloc(ipv4.bufferLength(repr) + repr.payloadLength, fill);
  ipv4.emit(repr, buf);
  return buf;
}

/**
 * A view that throws on any index outside [lo, hi): handed to the hot-path functions, it turns a
 * read or write past the bytes they were given into a test failure instead of a silent undefined.
 */
function guarded(buf: Uint8Array, lo: number, hi: number): Uint8Array {
  return new Proxy(buf, {
    get(target, prop, receiver) {
      if (typeof prop === 'string' && /^\d+$/.test(prop)) {
        const i = Number(prop);
        if (i < lo || i >= hi) throw new Error(`read outside [${lo}, ${hi}) at ${i}`);
        return target[i];
      }
      const value = Reflect.get(target, prop, target);
      return typeof value === 'function'
        ? value.bind(receiver === target ? target : target)
        : value;
    },
    set(target, prop, value) {
      if (typeof prop === 'string' && /^\d+$/.test(prop)) {
        const i = Number(prop);
        if (i < lo || i >= hi) throw new Error(`write outside [${lo}, ${hi}) at ${i}`);
        target[i] = value;
        return true;
      }
      return Reflect.set(target, prop, value);
    },
  });
}

/** Every hot-path entry point, given (buf, off, len); none may throw or touch bytes outside. */
function runHotPath(buf: Uint8Array, off: number, len: number): void {
  const g = guarded(buf, off, off + len);
  ethernetType(g, off, len);
  ethernetHeaderLength(g, off, len);
  ipv4Check(g, off, len);
  ipv6Check(g, off, len);
  arpCheck(g, off, len);
  vxlanCheck(g, off, len, 1);
  vxlanDecapCheck(g, off, len, 1, 0x020000000101);
  const copy = Uint8Array.from(buf);
  const gc = guarded(copy, off, off + len);
  flannelTtlStep(gc, off, len);
  icmpv4EchoReplyInPlace(gc, off, len);
  arpReplyInPlace(gc, off, len, 0x020000000202);
  const out = new Uint8Array(128);
  writeIcmpv4Error(
    guarded(out, 0, 128),
    0,
    g,
    off,
    len,
    IcmpType.destinationUnreachable,
    0,
    0x0af40100,
  );
}

describe('parse(emit(repr)) == repr for every format', () => {
  it('ethernet, with and without an 802.1Q tag', () => {
    const repr = fc.record({
      dst: mac,
      src: mac,
      ethertype: fc.integer({ min: 0x0600, max: 0xffff }).filter((t) => t !== EtherType.vlan),
      vlan: fc.option(
        fc.record({
          pcp: fc.integer({ min: 0, max: 7 }),
          dei: fc.integer({ min: 0, max: 1 }),
          vid: fc.integer({ min: 0, max: 4095 }),
        }),
        { nil: undefined },
      ),
    });
    fc.assert(
      fc.property(repr, (r) => {
        const buf = Buffer.alloc(ethernet.bufferLength(r));
        ethernet.emit(r, buf);
        const back = ethernet.parse(buf);
        expect(back).toEqual(r.vlan ? r : { dst: r.dst, src: r.src, ethertype: r.ethertype });
        expect(ethernetHeaderLength(buf, 0, buf.length)).toBe(r.vlan ? 18 : 14);
        expect(ethernetType(buf, 0, buf.length)).toBe(r.ethertype);
      }),
    );
  });

  it('arp', () => {
    fc.assert(
      fc.property(
        fc.record({
          operation: fc.constantFrom(1, 2),
          senderMac: mac,
          senderIp: u32,
          targetMac: mac,
          targetIp: u32,
        }),
        (r) => {
          const buf = Buffer.alloc(ARP_BYTES);
          arp.emit(r, buf);
          expect(arp.parse(buf)).toEqual(r);
        },
      ),
    );
  });

  it('ipv4, options and fragments included, and the result passes ipv4Check', () => {
    fc.assert(
      fc.property(ipv4Repr, (r) => {
        const buf = packetOf(r);
        expect(ipv4Check(buf, 0, buf.length)).toBe(Status.ok);
        const back = ipv4.parse(buf);
        expect(back).toEqual(r.options ? r : { ...r, options: undefined });
      }),
    );
  });

  it('ipv6', () => {
    const repr = fc.record({
      src: bytes16,
      dst: bytes16,
      nextHeader: u8,
      hopLimit: u8,
      payloadLength: fc.integer({ min: 0, max: 300 }),
      trafficClass: u8,
      flowLabel: fc.integer({ min: 0, max: 0xfffff }),
    });
    fc.assert(
      fc.property(repr, (r) => {
        const buf = Buffer.alloc(40 + r.payloadLength);
        ipv6.emit(r, buf);
        expect(ipv6Check(buf, 0, buf.length)).toBe(Status.ok);
        expect(ipv6.parse(buf)).toEqual(r);
      }),
    );
  });

  it('udp over IPv4 and IPv6: the checksum verifies, and any flipped bit breaks it', () => {
    fc.assert(
      fc.property(
        u16,
        u16,
        fc.uint8Array({ maxLength: 100 }),
        fc.boolean(),
        u32,
        u32,
        fc.nat(),
        (sp, dp, payload, v6, a, b, flip) => {
          const ipBytes = v6 ? 40 : 20;
          const buf = Buffer.alloc(ipBytes + 8 + payload.length);
          if (v6) {
            const src = new Uint8Array(16).fill(a & 0xff);
            ipv6.emit(
              {
                src,
                dst: new Uint8Array(16).fill(b & 0xff),
                nextHeader: 17,
                hopLimit: 64,
                payloadLength: 8 + payload.length,
              },
              buf,
            );
          } else {
            ipv4.emit(
              { src: a, dst: b, protocol: 17, ttl: 64, payloadLength: 8 + payload.length },
              buf,
            );
          }
          buf.set(payload, ipBytes + 8);
          const context = { ipVersion: v6 ? (6 as const) : (4 as const), ipOffset: 0 };
          udp.emit(
            { srcPort: sp, dstPort: dp, payloadLength: payload.length },
            buf,
            ipBytes,
            context,
          );
          expect(udp.parse(buf, ipBytes, buf.length - ipBytes, context)).toMatchObject({
            srcPort: sp,
            dstPort: dp,
            payloadLength: payload.length,
          });
          const bit = flip % ((8 + payload.length) * 8);
          buf[ipBytes + (bit >> 3)] ^= 1 << (bit & 7);
          expect(() => udp.parse(buf, ipBytes, buf.length - ipBytes, context)).toThrow(EncapError);
        },
      ),
    );
  });

  it('udp: zero checksum is accepted over IPv4 and refused over IPv6', () => {
    const buf = Buffer.alloc(40 + 8 + 4);
    ipv6.emit(
      {
        src: new Uint8Array(16),
        dst: new Uint8Array(16),
        nextHeader: 17,
        hopLimit: 1,
        payloadLength: 12,
      },
      buf,
    );
    udp.emit({ srcPort: 1, dstPort: 2, payloadLength: 4, checksum: 0 }, buf, 40);
    expect(() => udp.parse(buf, 40, 12, { ipVersion: 6, ipOffset: 0 })).toThrow(
      /zero \(no checksum\) is not allowed over IPv6/,
    );
    const v4 = Buffer.alloc(20 + 8 + 4);
    ipv4.emit({ src: 1, dst: 2, protocol: 17, ttl: 1, payloadLength: 12 }, v4);
    udp.emit({ srcPort: 1, dstPort: 2, payloadLength: 4, checksum: 0 }, v4, 20);
    expect(udp.parse(v4, 20, 12, { ipVersion: 4, ipOffset: 0 }).checksum).toBe(0);
  });

  it('icmp', () => {
    fc.assert(
      fc.property(
        fc.record({ type: u8, code: u8, rest: u32, data: fc.uint8Array({ maxLength: 64 }) }),
        (r) => {
          const buf = Buffer.alloc(icmp.bufferLength(r));
          icmp.emit(r, buf);
          expect(icmp.parse(buf)).toEqual({ ...r, data: Uint8Array.from(r.data) });
        },
      ),
    );
  });

  it('vxlan: every 24-bit VNI; reserved bits ignored on receive', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 0xffffff }), u8, (vni, noise) => {
        const buf = Buffer.alloc(8 + 14);
        vxlan.emit({ vni }, buf);
        expect(buf[0]).toBe(0x08);
        expect(buf[1] | buf[2] | buf[3] | buf[7]).toBe(0);
        expect(vxlan.parse(buf).vni).toBe(vni);
        // Reserved bits set by a peer change nothing.
        buf[0] |= noise & 0xf7;
        buf[1] = noise;
        buf[7] = noise;
        expect(vxlanCheck(buf, 0, buf.length, vni)).toBe(Status.ok);
        buf[0] &= 0xf7;
        expect(vxlanCheck(buf, 0, buf.length, vni)).toBe(Status.vxlanNoIFlag);
        expect(() => vxlan.parse(buf)).toThrow(/I flag is not set/);
      }),
    );
  });
});

/** Outer headers of an underlay frame: IPv4 or IPv6, tagged or not. */
const outerRepr: fc.Arbitrary<UdpFrameRepr> = fc.record({
  ethernet: fc.record({
    dst: mac,
    src: mac,
    ethertype: fc.constant(0),
    vlan: fc.option(
      fc.record({
        pcp: fc.integer({ min: 0, max: 7 }),
        dei: fc.integer({ min: 0, max: 1 }),
        vid: fc.integer({ min: 0, max: 4095 }),
      }),
      { nil: undefined },
    ),
  }),
  ip: fc.oneof(
    ipv4Repr.map(
      (h): IpHeaderRepr => ({
        version: 4,
        header: { ...h, moreFragments: false, fragmentOffset: 0 },
      }),
    ),
    fc
      .record({
        src: bytes16,
        dst: bytes16,
        hopLimit: u8,
        trafficClass: u8,
        flowLabel: fc.integer({ min: 0, max: 0xfffff }),
      })
      .map(
        (h): IpHeaderRepr => ({ version: 6, header: { ...h, nextHeader: 0, payloadLength: 0 } }),
      ),
  ),
  udp: fc.record({ srcPort: u16, dstPort: u16, payloadLength: fc.constant(0) }),
});

describe('whole frames: parse(emit(fields)) == fields, and emit(parse(bytes)) == bytes', () => {
  it('VXLAN frames over IPv4 and IPv6, with a checksum that verifies', () => {
    fc.assert(
      fc.property(
        outerRepr,
        fc.integer({ min: 0, max: 0xffffff }),
        mac,
        mac,
        fc.integer({ min: 0x0600, max: 0xffff }).filter((t) => t !== EtherType.vlan),
        fc.uint8Array({ maxLength: 100 }),
        (repr, vni, innerDst, innerSrc, innerType, innerPayload) => {
          const inner = Buffer.alloc(14 + innerPayload.length);
          ethernet.emit({ dst: innerDst, src: innerSrc, ethertype: innerType }, inner);
          inner.set(innerPayload, 14);
          const bytes = emitVxlanFrame(repr, vni, inner);
          const f = parseVxlanFrame(bytes, { udpChecksum: true });
          expect(f.vxlan).toEqual({ vni, flags: 0x08 });
          expect(f.inner).toEqual({ dst: innerDst, src: innerSrc, ethertype: innerType });
          expect(bytes.subarray(f.innerOffset, f.innerOffset + f.innerLength).equals(inner)).toBe(
            true,
          );
          expect(f.udp).toMatchObject({ srcPort: repr.udp.srcPort, dstPort: repr.udp.dstPort });
          expect(f.ethernet.src).toBe(repr.ethernet.src);
          expect(f.ethernet.vlan).toEqual(repr.ethernet.vlan);
          expect(f.ip.version).toBe(repr.ip.version);
          if (f.ip.version === 4 && repr.ip.version === 4) {
            expect(f.ip.header).toMatchObject({
              src: repr.ip.header.src,
              dst: repr.ip.header.dst,
              ttl: repr.ip.header.ttl,
              identification: repr.ip.header.identification,
              protocol: IpProtocol.udp,
            });
          } else if (f.ip.version === 6 && repr.ip.version === 6) {
            expect(f.ip.header).toMatchObject({
              src: repr.ip.header.src,
              dst: repr.ip.header.dst,
              hopLimit: repr.ip.header.hopLimit,
              flowLabel: repr.ip.header.flowLabel,
              nextHeader: IpProtocol.udp,
            });
          }
          const again = emitVxlanFrame(f, f.vxlan.vni, inner, { udpChecksum: 'keep' });
          expect(again.equals(bytes)).toBe(true);
        },
      ),
    );
  });

  it('flannel UDP frames: the payload is the bare inner packet, byte for byte', () => {
    fc.assert(
      fc.property(outerRepr, ipv4Repr, (repr, innerRepr) => {
        const inner = packetOf(innerRepr, 0x5a);
        const bytes = emitFlannelFrame(repr, inner);
        const f = parseFlannelFrame(bytes, { udpChecksum: true });
        expect(f.inner).toEqual(
          innerRepr.options ? innerRepr : { ...innerRepr, options: undefined },
        );
        expect(bytes.subarray(f.payloadOffset).equals(inner)).toBe(true);
        expect(emitFlannelFrame(f, inner, { udpChecksum: 'keep' }).equals(bytes)).toBe(true);
      }),
    );
  });
});

describe('RFC 1624 TTL step', () => {
  it('equals a full recompute for random headers', () => {
    fc.assert(
      fc.property(ipv4Repr, (r) => {
        const buf = packetOf(r);
        const expected = Buffer.from(buf);
        const status = ipv4DecrementTtl(buf, 0);
        if (r.ttl <= 1) {
          expect(status).toBe(Status.ttlExpired);
          expect(buf.equals(expected)).toBe(true);
          return;
        }
        expected[8] = r.ttl - 1;
        ipv4FillChecksum(expected, 0);
        expect(status).toBe(Status.ok);
        expect(buf.equals(expected)).toBe(true);
      }),
    );
  });

  it('equals a full recompute for every checksum value (all 65536 identifications, TTLs 2, 64, 255)', () => {
    for (const ttl of [2, 64, 255]) {
      const buf = packetOf({
        src: 0x0af40105,
        dst: 0x0af40207,
        protocol: 6,
        ttl,
        payloadLength: 0,
      });
      const expected = Buffer.alloc(20);
      const seen = new Set<number>();
      for (let id = 0; id <= 0xffff; id++) {
        buf[4] = id >>> 8;
        buf[5] = id & 0xff;
        buf[8] = ttl;
        ipv4FillChecksum(buf, 0);
        buf.copy(expected);
        expected[8] = ttl - 1;
        ipv4FillChecksum(expected, 0);
        ipv4DecrementTtl(buf, 0);
        seen.add(expected.readUInt16BE(10));
        if (!buf.equals(expected))
          throw new Error(
            `ttl ${ttl} id ${id}: ${buf.toString('hex')} != ${expected.toString('hex')}`,
          );
      }
      // The sweep covers the edge values a naive update gets wrong.
      expect(seen.has(0x0000)).toBe(true);
      expect(seen.has(0xfffe)).toBe(true);
    }
  });

  it('the flannel step drops at TTL 1 and 0, as flannel does at zero', () => {
    for (const ttl of [0, 1]) {
      const buf = packetOf({ src: 1, dst: 2, protocol: 17, ttl, payloadLength: 8 });
      expect(flannelTtlStep(buf, 0, buf.length)).toBe(Status.ttlExpired);
    }
  });
});

describe('hostile input', () => {
  it('the guard used below does catch a stray read', () => {
    const raw = new Uint8Array(64);
    raw[2] = 0x45;
    const g = guarded(raw, 2, 4);
    expect(() => g[4]).toThrow(/outside \[2, 4\) at 4/);
    // A caller lying about the length (30 bytes where 2 exist) makes the read stray: caught.
    expect(() => ipv4Check(g, 2, 30)).toThrow(/outside/);
  });

  it('random bytes at random offsets: the hot path never throws nor strays outside', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), fc.nat(16), fc.nat(16), (data, pre, post) => {
        const buf = new Uint8Array(pre + data.length + post).fill(0xcc);
        buf.set(data, pre);
        runHotPath(buf, pre, data.length);
      }),
      { numRuns: 2000 },
    );
  });

  it('random bytes: the checked API throws EncapError and nothing else', () => {
    const parsers = [
      (b: Buffer) => ethernet.parse(b),
      (b: Buffer) => ipv4.parse(b),
      (b: Buffer) => ipv6.parse(b),
      (b: Buffer) => arp.parse(b),
      (b: Buffer) => icmp.parse(b),
      (b: Buffer) => udp.parse(b),
      (b: Buffer) => vxlan.parse(b),
      (b: Buffer) => parseUdpFrame(b),
      (b: Buffer) => parseVxlanFrame(b),
      (b: Buffer) => parseFlannelFrame(b),
    ];
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 120 }), (data) => {
        for (const parse of parsers) {
          try {
            parse(Buffer.from(data));
          } catch (err) {
            if (!(err instanceof EncapError)) throw err;
          }
        }
      }),
      { numRuns: 2000 },
    );
  });

  it('truncation at every length of a real frame is reported, never over-read', () => {
    const packet = packetOf({
      src: 0x0af40105,
      dst: 0x0af40207,
      protocol: IpProtocol.udp,
      ttl: 9,
      payloadLength: 40,
      options: new Uint8Array(8),
    });
    const frame = Buffer.alloc(8 + 14 + packet.length);
    vxlan.emit({ vni: 1 }, frame);
    ethernet.emit(
      { dst: 0x020000000101, src: 0x020000000202, ethertype: EtherType.ipv4 },
      frame,
      8,
    );
    packet.copy(frame, 22);
    for (let len = 0; len <= frame.length; len++) {
      runHotPath(frame, 0, len);
      const status = ipv4Check(frame, 22, Math.max(0, len - 22));
      expect(status === Status.ok).toBe(len === frame.length);
      expect(vxlanCheck(frame, 0, len, 1) === Status.ok).toBe(len >= 22);
      if (len < frame.length)
        expect(() => parseVxlanFrame(frame.subarray(0, len))).toThrow(EncapError);
    }
  });

  it('IHL and total-length lies are caught by ipv4Check and the checked parser', () => {
    fc.assert(
      fc.property(ipv4Repr, fc.integer({ min: 0, max: 15 }), u16, (r, ihl, total) => {
        const buf = packetOf(r);
        buf[0] = 0x40 | ihl;
        buf.writeUInt16BE(total, 2);
        ipv4FillChecksumSafe(buf, ihl);
        const headerBytes = ihl * 4;
        const honest =
          ihl >= 5 && headerBytes <= buf.length && total >= headerBytes && total <= buf.length;
        const status = ipv4Check(guarded(buf, 0, buf.length), 0, buf.length);
        expect(status === Status.ok).toBe(honest);
        // A total length beyond the bytes is a cut packet, the same reason in every backend.
        if (ihl >= 5 && headerBytes <= buf.length && total > buf.length)
          expect(status).toBe(Status.truncated);
        if (!honest) expect(() => ipv4.parse(buf)).toThrow(EncapError);
        runHotPath(buf, 0, buf.length);
      }),
      { numRuns: 1000 },
    );
  });
});

/** Fills the checksum for a header whose IHL may be a lie, within the buffer, so only the lie is wrong. */
function ipv4FillChecksumSafe(buf: Buffer, ihl: number): void {
  if (ihl >= 5 && ihl * 4 <= buf.length) ipv4FillChecksum(buf, 0);
}

describe('the Internet checksum', () => {
  /** RFC 1071, byte by byte: the reference the fast path must equal. */
  function reference(buf: Uint8Array, off: number, len: number): number {
    let sum = 0;
    for (let i = 0; i < len; i += 2)
      sum += (buf[off + i] << 8) | (i + 1 < len ? buf[off + i + 1] : 0);
    while (sum > 0xffff) sum = (sum & 0xffff) + Math.floor(sum / 0x10000);
    return sum;
  }

  it('sums any range of any buffer (any alignment, any length) exactly as RFC 1071 does', () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 0, maxLength: 3000 }),
        fc.nat(7),
        fc.nat(7),
        fc.nat(),
        (data, pad, start, cut) => {
          const backing = new Uint8Array(pad + data.length + 8);
          backing.set(data, pad);
          const view = new Uint8Array(backing.buffer, pad, data.length);
          const off = Math.min(start, data.length);
          const len = data.length - off === 0 ? 0 : cut % (data.length - off + 1);
          expect(fold(sum16(view, off, len))).toBe(reference(view, off, len));
        },
      ),
      { numRuns: 3000 },
    );
  });

  it('copySum16 copies any range to any offset and sums it as sum16 does; copyBytes copies it', () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 0, maxLength: 3000 }),
        fc.nat(7),
        fc.nat(11),
        fc.nat(),
        fc.nat(0xffff),
        (data, start, to, cut, initial) => {
          const src = Buffer.from(data);
          const off = Math.min(start, data.length);
          const len = data.length - off === 0 ? 0 : cut % (data.length - off + 1);
          const dst = Buffer.alloc(to + len + 5, 0xee);
          const want = Buffer.from(dst);
          src.copy(want, to, off, off + len);
          expect(fold(copySum16(src, off, dst, to, len, initial))).toBe(
            fold(sum16(src, off, len, initial)),
          );
          expect(dst.equals(want)).toBe(true);
          dst.fill(0xee);
          copyBytes(src, off, dst, to, len);
          expect(dst.equals(want)).toBe(true);
        },
      ),
      { numRuns: 3000 },
    );
  });
});
