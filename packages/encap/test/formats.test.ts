import { formatIpv4, parseIpv4, parseMac } from '@weft/core';
import { describe, expect, it } from 'vitest';
import {
  ArpOperation,
  arp,
  arpReplyInPlace,
  EncapError,
  EtherType,
  ethernet,
  FLANNEL_UDP_OVERHEAD_BYTES,
  IcmpCode,
  IcmpType,
  IpProtocol,
  icmp,
  icmpv4EchoReplyInPlace,
  internetChecksum,
  ipv4,
  ipv4Check,
  ipv4Dst,
  ipv4FragmentOffset,
  ipv4HeaderLength,
  ipv4MoreFragments,
  ipv4Protocol,
  ipv4Src,
  ipv4Ttl,
  overlayMtu,
  Status,
  statusName,
  VXLAN_IPV4_OVERHEAD_BYTES,
  VXLAN_IPV6_OVERHEAD_BYTES,
  writeIcmpv4Error,
} from '../src/index.js';

/**
 * Deconstruct / construct / parse / emit against static bytes, per format (smoltcp's pattern).
 * IPV4_BYTES is the inner packet of the first ping in kernel-vxlan-l3-8472.pcap, cut to its
 * header and the first 8 ICMP bytes (total length patched to 28 and the checksum to match).
 */
const IPV4_BYTES = Buffer.from(
  '4500001c9c184000400185e10af401000af40200' + '08004b5c16850001',
  'hex',
);

describe('ipv4', () => {
  it('deconstructs', () => {
    expect(ipv4Check(IPV4_BYTES, 0, IPV4_BYTES.length)).toBe(Status.ok);
    expect(ipv4HeaderLength(IPV4_BYTES, 0)).toBe(20);
    expect(ipv4Ttl(IPV4_BYTES, 0)).toBe(64);
    expect(ipv4Protocol(IPV4_BYTES, 0)).toBe(IpProtocol.icmp);
    expect(formatIpv4(ipv4Src(IPV4_BYTES, 0))).toBe('10.244.1.0');
    expect(formatIpv4(ipv4Dst(IPV4_BYTES, 0))).toBe('10.244.2.0');
    expect(ipv4FragmentOffset(IPV4_BYTES, 0)).toBe(0);
    expect(ipv4MoreFragments(IPV4_BYTES, 0)).toBe(false);
  });

  it('parses and emits the same bytes', () => {
    const repr = ipv4.parse(IPV4_BYTES);
    expect(repr).toEqual({
      src: parseIpv4('10.244.1.0'),
      dst: parseIpv4('10.244.2.0'),
      protocol: 1,
      ttl: 64,
      payloadLength: 8,
      dscpEcn: 0,
      identification: 0x9c18,
      dontFragment: true,
      moreFragments: false,
      fragmentOffset: 0,
    });
    const out = Buffer.alloc(28);
    IPV4_BYTES.copy(out, 20, 20);
    expect(ipv4.emit(repr, out)).toBe(20);
    expect(out.equals(IPV4_BYTES)).toBe(true);
  });

  it('names the field at fault', () => {
    const bad = Buffer.from(IPV4_BYTES);
    bad[10] ^= 1;
    expect(ipv4Check(bad, 0, bad.length)).toBe(Status.badChecksum);
    expect(() => ipv4.parse(bad)).toThrow(
      expect.objectContaining({ code: 'ERR_ENCAP_CHECKSUM', field: 'ipv4.checksum' }),
    );
    expect(ipv4.parse(bad, 0, bad.length, { checksum: false }).ttl).toBe(64);
    const v6 = Buffer.from(IPV4_BYTES);
    v6[0] = 0x65;
    expect(() => ipv4.parse(v6)).toThrow(/ipv4.version: 6, expected 4/);
    expect(() => ipv4.parse(IPV4_BYTES.subarray(0, 27))).toThrow(
      expect.objectContaining({ code: 'ERR_ENCAP_TRUNCATED' }),
    );
    expect(() =>
      ipv4.emit({ src: 1, dst: 2, protocol: 1, ttl: 256, payloadLength: 0 }, Buffer.alloc(20)),
    ).toThrow(/ipv4.ttl: 256 is out of range/);
    expect(() =>
      ipv4.emit(
        { src: 1, dst: 2, protocol: 1, ttl: 1, payloadLength: 0, fragmentOffset: 12 },
        Buffer.alloc(20),
      ),
    ).toThrow(/multiple of 8/);
    expect(() =>
      ipv4.emit({ src: 1, dst: 2, protocol: 1, ttl: 1, payloadLength: 0 }, Buffer.alloc(19)),
    ).toThrow(EncapError);
  });
});

describe('ethernet', () => {
  // Outer Ethernet of the first L3 vector frame; then the same with a VLAN 100 tag.
  const UNTAGGED = Buffer.from('daaa4aea957c3a93e3d493240800', 'hex');
  const TAGGED = Buffer.from('daaa4aea957c3a93e3d493248100a0640800', 'hex');

  it('parses and emits untagged and 802.1Q-tagged headers', () => {
    expect(ethernet.parse(UNTAGGED)).toEqual({
      dst: parseMac('da:aa:4a:ea:95:7c'),
      src: parseMac('3a:93:e3:d4:93:24'),
      ethertype: EtherType.ipv4,
    });
    const tagged = ethernet.parse(TAGGED);
    expect(tagged.vlan).toEqual({ pcp: 5, dei: 0, vid: 100 });
    expect(tagged.ethertype).toBe(EtherType.ipv4);
    const out = Buffer.alloc(18);
    expect(ethernet.emit(tagged, out)).toBe(18);
    expect(out.equals(TAGGED)).toBe(true);
  });

  it('refuses an 802.3 length field and a cut tag', () => {
    const llc = Buffer.from(UNTAGGED);
    llc.writeUInt16BE(0x05dc, 12);
    expect(() => ethernet.parse(llc)).toThrow(/802.3 length/);
    expect(() => ethernet.parse(TAGGED.subarray(0, 16))).toThrow(
      /802.1Q tag: need 18 bytes, have 16/,
    );
  });
});

describe('arp', () => {
  // Ethernet + ARP request from kernel-vxlan-l2-4789.pcap: who has 10.99.0.2? tell 10.99.0.1.
  const REQUEST = Buffer.from(
    'ffffffffffff02000000' +
      '0a010806' +
      '0001080006040001' +
      '020000000a010a630001' +
      '0000000000000a630002',
    'hex',
  );
  const REPLY = Buffer.from(
    '020000000a01020000000b010806' +
      '0001080006040002' +
      '020000000b010a630002' +
      '020000000a010a630001',
    'hex',
  );

  it('parses the request', () => {
    expect(arp.parse(REQUEST, 14)).toEqual({
      operation: ArpOperation.request,
      senderMac: parseMac('02:00:00:00:0a:01'),
      senderIp: parseIpv4('10.99.0.1'),
      targetMac: 0,
      targetIp: parseIpv4('10.99.0.2'),
    });
  });

  it('builds in place exactly the reply the kernel sent (kernel-vxlan-l2-4789.pcap)', () => {
    const frame = Buffer.from(REQUEST);
    expect(arpReplyInPlace(frame, 0, frame.length, parseMac('02:00:00:00:0b:01'))).toBe(Status.ok);
    expect(frame.toString('hex')).toBe(REPLY.toString('hex'));
    // A reply is not a request: nothing to answer.
    expect(arpReplyInPlace(frame, 0, frame.length, 1)).toBe(Status.unsupported);
  });

  it('emits the same bytes it parsed', () => {
    const out = Buffer.alloc(28);
    arp.emit(arp.parse(REPLY, 14), out);
    expect(out.equals(REPLY.subarray(14))).toBe(true);
    const ipv6Arp = Buffer.from(REPLY);
    ipv6Arp.writeUInt16BE(0x86dd, 16);
    expect(() => arp.parse(ipv6Arp, 14)).toThrow(/arp.protocolType: 0x86dd/);
  });
});

/** An IPv4 packet from 10.244.1.5 to `dst` carrying `protocol` with `payload`. */
function packet(
  dst: string,
  protocol: number,
  payload: Buffer,
  extra: Partial<Parameters<typeof ipv4.emit>[0]> = {},
): Buffer {
  const buf = Buffer.alloc(20 + (extra.options?.length ?? 0) + payload.length);
  const n = ipv4.emit(
    {
      src: parseIpv4('10.244.1.5'),
      dst: parseIpv4(dst),
      protocol,
      ttl: 63,
      payloadLength: payload.length,
      ...extra,
    },
    buf,
  );
  payload.copy(buf, n);
  return buf;
}

function icmpMessage(type: number, dataBytes = 8): Buffer {
  const repr = { type, code: 0, rest: 0x00010002, data: Buffer.alloc(dataBytes, 7) };
  const out = Buffer.alloc(icmp.bufferLength(repr));
  icmp.emit(repr, out);
  return out;
}

describe('ICMP errors (RFC 792, RFC 1812 4.3.2.7)', () => {
  const router = parseIpv4('10.244.1.0');
  const out = Buffer.alloc(200);
  const err = (
    pkt: Buffer,
    type: number = IcmpType.destinationUnreachable,
    code: number = IcmpCode.netUnreachable,
  ) => writeIcmpv4Error(out, 0, pkt, 0, pkt.length, type, code, router);

  it('quotes the offending header and 8 bytes, from our address back to the sender', () => {
    const udpish = packet('10.9.9.9', IpProtocol.udp, Buffer.from('0011223344556677889900', 'hex'));
    const n = err(udpish);
    expect(n).toBe(20 + 8 + 20 + 8);
    const header = ipv4.parse(out, 0, n);
    expect(formatIpv4(header.src)).toBe('10.244.1.0');
    expect(formatIpv4(header.dst)).toBe('10.244.1.5');
    expect(header.protocol).toBe(IpProtocol.icmp);
    const message = icmp.parse(out, 20, n - 20);
    expect(message).toMatchObject({ type: 3, code: 0, rest: 0 });
    expect(Buffer.from(message.data).equals(udpish.subarray(0, 28))).toBe(true);
  });

  it('quotes options and at most what the packet has', () => {
    const withOptions = packet('10.9.9.9', IpProtocol.tcp, Buffer.alloc(3, 1), {
      options: new Uint8Array([1, 1, 1, 0]),
    });
    expect(err(withOptions)).toBe(20 + 8 + 24 + 3);
    expect(internetChecksum(out, 20, 8 + 24 + 3)).toBe(0);
  });

  it('builds time exceeded the same way', () => {
    const n = err(
      packet('10.9.9.9', IpProtocol.udp, Buffer.alloc(8)),
      IcmpType.timeExceeded,
      IcmpCode.ttlExceeded,
    );
    expect(icmp.parse(out, 20, n - 20)).toMatchObject({ type: 11, code: 0 });
  });

  it('answers an echo request but never an ICMP error', () => {
    expect(
      err(packet('10.9.9.9', IpProtocol.icmp, icmpMessage(IcmpType.echoRequest))),
    ).toBeGreaterThan(0);
    for (const type of [3, 4, 5, 11, 12]) {
      expect(err(packet('10.9.9.9', IpProtocol.icmp, icmpMessage(type))), `type ${type}`).toBe(0);
    }
  });

  it('stays silent for non-first fragments, group addresses and malformed packets', () => {
    expect(err(packet('10.9.9.9', IpProtocol.udp, Buffer.alloc(8), { fragmentOffset: 1480 }))).toBe(
      0,
    );
    expect(
      err(packet('10.9.9.9', IpProtocol.udp, Buffer.alloc(8), { moreFragments: true })),
    ).toBeGreaterThan(0);
    expect(err(packet('224.0.0.5', IpProtocol.udp, Buffer.alloc(8)))).toBe(0);
    expect(err(packet('255.255.255.255', IpProtocol.udp, Buffer.alloc(8)))).toBe(0);
    const fromZero = packet('10.9.9.9', IpProtocol.udp, Buffer.alloc(8), { src: 0 });
    expect(err(fromZero)).toBe(0);
    const broken = packet('10.9.9.9', IpProtocol.udp, Buffer.alloc(8));
    broken[10] ^= 0xff;
    expect(err(broken)).toBe(0);
    expect(writeIcmpv4Error(Buffer.alloc(40), 0, broken, 0, broken.length, 3, 0, router)).toBe(0);
  });
});

describe('ICMP echo reply in place', () => {
  it('equals a reply built from scratch', () => {
    const request = packet('10.244.1.0', IpProtocol.icmp, icmpMessage(IcmpType.echoRequest, 56));
    const reply = Buffer.from(request);
    expect(icmpv4EchoReplyInPlace(reply, 0, reply.length)).toBe(Status.ok);
    const expected = Buffer.alloc(request.length);
    ipv4.emit(
      {
        ...ipv4.parse(request),
        src: parseIpv4('10.244.1.0'),
        dst: parseIpv4('10.244.1.5'),
        ttl: 64,
      },
      expected,
    );
    icmp.emit({ ...icmp.parse(request, 20), type: IcmpType.echoReply }, expected, 20);
    expect(reply.toString('hex')).toBe(expected.toString('hex'));
  });

  it('leaves anything else alone', () => {
    const udpPacket = packet('10.244.1.0', IpProtocol.udp, Buffer.alloc(8));
    expect(icmpv4EchoReplyInPlace(udpPacket, 0, udpPacket.length)).toBe(Status.unsupported);
    const reply = packet('10.244.1.0', IpProtocol.icmp, icmpMessage(IcmpType.echoReply));
    expect(icmpv4EchoReplyInPlace(reply, 0, reply.length)).toBe(Status.unsupported);
  });
});

describe('MTU helpers', () => {
  it("match flannel's devices on a 1500-byte underlay", () => {
    expect(VXLAN_IPV4_OVERHEAD_BYTES).toBe(50);
    expect(VXLAN_IPV6_OVERHEAD_BYTES).toBe(70);
    expect(FLANNEL_UDP_OVERHEAD_BYTES).toBe(28);
    expect(overlayMtu(1500, 'vxlan')).toBe(1450);
    expect(overlayMtu(1500, 'vxlan6')).toBe(1430);
    expect(overlayMtu(1500, 'flannel-udp')).toBe(1472);
    expect(() => overlayMtu(100, 'vxlan')).toThrow(
      /leaves 50 bytes for vxlan, below the IPv4 minimum of 68/,
    );
  });

  it('names statuses for counters', () => {
    expect(statusName(Status.vxlanWrongVni)).toBe('vxlanWrongVni');
    expect(statusName(99)).toBe('unknown(99)');
  });
});
