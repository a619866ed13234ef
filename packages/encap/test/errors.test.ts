import { WeftError } from '@weft/core';
import { describe, expect, it } from 'vitest';
import {
  ARP_BYTES,
  arp,
  EncapError,
  EncapErrorCode,
  type Encapsulation,
  EtherType,
  emitUdpFrame,
  emitVxlanFrame,
  ethernet,
  IpProtocol,
  type Ipv4Repr,
  icmp,
  ipv4,
  ipv6,
  overlayMtu,
  parseFlannelFrame,
  parseUdpFrame,
  parseVxlanFrame,
  type UdpFrameRepr,
  udp,
  vxlan,
} from '../src/index.js';

/**
 * Every way the checked API refuses input, each pinned by its stable code, the field it names and
 * the message a user reads. One row per error path: a path that stops throwing, throws something
 * other than a WeftError, or changes its code fails here.
 */
function thrown(fn: () => unknown): EncapError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(WeftError);
    expect(err).toBeInstanceOf(EncapError);
    return err as EncapError;
  }
  throw new Error('expected a throw');
}

const IPV4 = Buffer.from('4500001c9c184000400185e10af401000af40200' + '08004b5c16850001', 'hex');
const ARP = Buffer.from('0001080006040001020000000a010a6300010000000000000a630002', 'hex');
const withByte = (buf: Buffer, at: number, value: number) => {
  const copy = Buffer.from(buf);
  copy[at] = value;
  return copy;
};
const with16 = (buf: Buffer, at: number, value: number) => {
  const copy = Buffer.from(buf);
  copy.writeUInt16BE(value, at);
  return copy;
};

/** A valid IPv4 UDP frame carrying `payload`, for the frame-level parsers. */
const outerIpv4: Ipv4Repr = { src: 1, dst: 2, protocol: IpProtocol.udp, ttl: 64, payloadLength: 0 };
const frameRepr: UdpFrameRepr = {
  ethernet: { dst: 2, src: 1, ethertype: EtherType.ipv4 },
  ip: { version: 4, header: outerIpv4 },
  udp: { srcPort: 1, dstPort: 8472, payloadLength: 0 },
};

interface Row {
  name: string;
  fn: () => unknown;
  code: string;
  field: string;
  message: RegExp;
}

const rows: Row[] = [
  {
    name: 'ethernet: short header',
    fn: () => ethernet.parse(Buffer.alloc(13)),
    code: EncapErrorCode.truncated,
    field: 'ethernet header',
    message: /^ethernet header: need 14 bytes, have 13$/,
  },
  {
    name: 'ethernet: 802.3 length instead of a type',
    fn: () => ethernet.parse(with16(Buffer.alloc(14), 12, 1500)),
    code: EncapErrorCode.malformed,
    field: 'ethernet.ethertype',
    message: /0x5dc is an 802\.3 length, not an EtherType/,
  },
  {
    name: 'ethernet: VID out of range on emit',
    fn: () =>
      ethernet.emit(
        { dst: 1, src: 2, ethertype: EtherType.ipv4, vlan: { pcp: 0, dei: 0, vid: 4096 } },
        Buffer.alloc(18),
      ),
    code: EncapErrorCode.badValue,
    field: 'ethernet.vlan.vid',
    message: /ethernet\.vlan\.vid: 4096 is out of range \(0\.\.4095\)/,
  },
  {
    name: 'ethernet: MAC wider than 48 bits on emit',
    fn: () => ethernet.emit({ dst: 2 ** 48, src: 2, ethertype: 0x0800 }, Buffer.alloc(14)),
    code: EncapErrorCode.badValue,
    field: 'ethernet.dst',
    message: /ethernet\.dst: 281474976710656 is out of range/,
  },
  {
    name: 'arp: short message',
    fn: () => arp.parse(ARP.subarray(0, 27)),
    code: EncapErrorCode.truncated,
    field: 'arp message',
    message: /arp message: need 28 bytes, have 27/,
  },
  {
    name: 'arp: not Ethernet hardware',
    fn: () => arp.parse(with16(ARP, 0, 6)),
    code: EncapErrorCode.malformed,
    field: 'arp.hardwareType',
    message: /arp\.hardwareType: 6, expected 1 \(Ethernet\)/,
  },
  {
    name: 'arp: not IPv4',
    fn: () => arp.parse(with16(ARP, 2, 0x86dd)),
    code: EncapErrorCode.malformed,
    field: 'arp.protocolType',
    message: /arp\.protocolType: 0x86dd, expected 0x0800/,
  },
  {
    name: 'arp: hardware length',
    fn: () => arp.parse(withByte(ARP, 4, 8)),
    code: EncapErrorCode.malformed,
    field: 'arp.hardwareLength',
    message: /arp\.hardwareLength: 8, expected 6/,
  },
  {
    name: 'arp: protocol length',
    fn: () => arp.parse(withByte(ARP, 5, 16)),
    code: EncapErrorCode.malformed,
    field: 'arp.protocolLength',
    message: /arp\.protocolLength: 16, expected 4/,
  },
  {
    name: 'arp: output too short',
    fn: () =>
      arp.emit(
        { operation: 1, senderMac: 1, senderIp: 1, targetMac: 0, targetIp: 2 },
        Buffer.alloc(ARP_BYTES - 1),
      ),
    code: EncapErrorCode.truncated,
    field: 'arp output',
    message: /arp output: need 28 bytes, have 27/,
  },
  {
    name: 'ipv4: short header',
    fn: () => ipv4.parse(IPV4.subarray(0, 19)),
    code: EncapErrorCode.truncated,
    field: 'ipv4 header',
    message: /ipv4 header: need 20 bytes, have 19/,
  },
  {
    name: 'ipv4: version',
    fn: () => ipv4.parse(withByte(IPV4, 0, 0x65)),
    code: EncapErrorCode.malformed,
    field: 'ipv4.version',
    message: /ipv4\.version: 6, expected 4/,
  },
  {
    name: 'ipv4: IHL below 5',
    fn: () => ipv4.parse(withByte(IPV4, 0, 0x44)),
    code: EncapErrorCode.malformed,
    field: 'ipv4.ihl',
    message: /ipv4\.ihl: 4 words, must be at least 5/,
  },
  {
    name: 'ipv4: IHL beyond the buffer',
    fn: () => ipv4.parse(withByte(IPV4, 0, 0x4f)),
    code: EncapErrorCode.truncated,
    field: 'ipv4 header with options',
    message: /need 60 bytes, have 28/,
  },
  {
    name: 'ipv4: total length below the header',
    fn: () => ipv4.parse(with16(IPV4, 2, 19)),
    code: EncapErrorCode.malformed,
    field: 'ipv4.totalLength',
    message: /ipv4\.totalLength: 19 is less than the header length 20/,
  },
  {
    name: 'ipv4: total length beyond the buffer',
    fn: () => ipv4.parse(with16(IPV4, 2, 29)),
    code: EncapErrorCode.truncated,
    field: 'ipv4 packet (total length)',
    message: /need 29 bytes, have 28/,
  },
  {
    name: 'ipv4: header checksum',
    fn: () => ipv4.parse(withByte(IPV4, 8, 63)),
    code: EncapErrorCode.checksum,
    field: 'ipv4.checksum',
    message: /ipv4\.checksum: header checksum does not verify/,
  },
  {
    name: 'ipv4: options not a multiple of 4',
    fn: () =>
      ipv4.emit(
        { src: 1, dst: 2, protocol: 1, ttl: 1, payloadLength: 0, options: new Uint8Array(3) },
        Buffer.alloc(60),
      ),
    code: EncapErrorCode.malformed,
    field: 'ipv4.options',
    message: /3 bytes, must be a multiple of 4 and at most 40/,
  },
  {
    name: 'ipv4: total length over 65535',
    fn: () =>
      ipv4.emit({ src: 1, dst: 2, protocol: 1, ttl: 1, payloadLength: 65516 }, Buffer.alloc(20)),
    code: EncapErrorCode.badValue,
    field: 'ipv4.totalLength',
    message: /ipv4\.totalLength: 65536 is out of range \(0\.\.65535\)/,
  },
  {
    name: 'ipv4: fragment offset not a multiple of 8',
    fn: () =>
      ipv4.emit(
        { src: 1, dst: 2, protocol: 1, ttl: 1, payloadLength: 0, fragmentOffset: 4 },
        Buffer.alloc(20),
      ),
    code: EncapErrorCode.malformed,
    field: 'ipv4.fragmentOffset',
    message: /ipv4\.fragmentOffset: 4 is not a multiple of 8/,
  },
  {
    name: 'ipv4: address not an integer',
    fn: () =>
      ipv4.emit({ src: 1.5, dst: 2, protocol: 1, ttl: 1, payloadLength: 0 }, Buffer.alloc(20)),
    code: EncapErrorCode.badValue,
    field: 'ipv4.src',
    message: /ipv4\.src: 1\.5 is out of range/,
  },
  {
    name: 'ipv6: short header',
    fn: () => ipv6.parse(Buffer.alloc(39)),
    code: EncapErrorCode.truncated,
    field: 'ipv6 header',
    message: /ipv6 header: need 40 bytes, have 39/,
  },
  {
    name: 'ipv6: version',
    fn: () => ipv6.parse(withByte(Buffer.alloc(40), 0, 0x40)),
    code: EncapErrorCode.malformed,
    field: 'ipv6.version',
    message: /ipv6\.version: 4, expected 6/,
  },
  {
    name: 'ipv6: payload length beyond the buffer',
    fn: () => ipv6.parse(with16(withByte(Buffer.alloc(40), 0, 0x60), 4, 1)),
    code: EncapErrorCode.truncated,
    field: 'ipv6 packet (payload length)',
    message: /need 41 bytes, have 40/,
  },
  {
    name: 'ipv6: address of the wrong size on emit',
    fn: () =>
      ipv6.emit(
        {
          src: new Uint8Array(4),
          dst: new Uint8Array(16),
          nextHeader: 17,
          hopLimit: 1,
          payloadLength: 0,
        },
        Buffer.alloc(40),
      ),
    code: EncapErrorCode.malformed,
    field: 'ipv6.src',
    message: /ipv6\.src: 4 bytes, expected 16/,
  },
  {
    name: 'ipv6: flow label over 20 bits',
    fn: () =>
      ipv6.emit(
        {
          src: new Uint8Array(16),
          dst: new Uint8Array(16),
          nextHeader: 17,
          hopLimit: 1,
          payloadLength: 0,
          flowLabel: 0x100000,
        },
        Buffer.alloc(40),
      ),
    code: EncapErrorCode.badValue,
    field: 'ipv6.flowLabel',
    message: /ipv6\.flowLabel: 1048576 is out of range \(0\.\.1048575\)/,
  },
  {
    name: 'udp: short header',
    fn: () => udp.parse(Buffer.alloc(7)),
    code: EncapErrorCode.truncated,
    field: 'udp header',
    message: /udp header: need 8 bytes, have 7/,
  },
  {
    name: 'udp: length below the header',
    fn: () => udp.parse(with16(Buffer.alloc(8), 4, 7)),
    code: EncapErrorCode.malformed,
    field: 'udp.length',
    message: /udp\.length: 7 is less than the 8-byte header/,
  },
  {
    name: 'udp: length beyond the buffer',
    fn: () => udp.parse(with16(Buffer.alloc(8), 4, 9)),
    code: EncapErrorCode.truncated,
    field: 'udp datagram (length)',
    message: /need 9 bytes, have 8/,
  },
  {
    name: 'udp: port out of range on emit',
    fn: () => udp.emit({ srcPort: 65536, dstPort: 1, payloadLength: 0 }, Buffer.alloc(8)),
    code: EncapErrorCode.badValue,
    field: 'udp.srcPort',
    message: /udp\.srcPort: 65536 is out of range \(0\.\.65535\)/,
  },
  {
    name: 'udp: checksum over the pseudo-header',
    fn: () => {
      const frame = emitUdpFrame(frameRepr, Buffer.from('abcd', 'hex'));
      frame[frame.length - 1] ^= 1;
      return parseUdpFrame(frame, { udpChecksum: true });
    },
    code: EncapErrorCode.checksum,
    field: 'udp.checksum',
    message: /udp\.checksum: does not verify over the pseudo-header/,
  },
  {
    name: 'icmp: short header',
    fn: () => icmp.parse(Buffer.alloc(7)),
    code: EncapErrorCode.truncated,
    field: 'icmp header',
    message: /icmp header: need 8 bytes, have 7/,
  },
  {
    name: 'icmp: checksum',
    fn: () => icmp.parse(withByte(Buffer.alloc(8), 0, 8)),
    code: EncapErrorCode.checksum,
    field: 'icmp.checksum',
    message: /icmp\.checksum: does not verify/,
  },
  {
    name: 'vxlan: short header',
    fn: () => vxlan.parse(Buffer.alloc(7)),
    code: EncapErrorCode.truncated,
    field: 'vxlan header',
    message: /vxlan header: need 8 bytes, have 7/,
  },
  {
    name: 'vxlan: no I flag',
    fn: () => vxlan.parse(Buffer.alloc(8)),
    code: EncapErrorCode.malformed,
    field: 'vxlan.flags',
    message: /the I flag is not set, so the VNI is not valid \(RFC 7348 section 5\)/,
  },
  {
    name: 'vxlan: VNI over 24 bits on emit',
    fn: () => vxlan.emit({ vni: 0x1000000 }, Buffer.alloc(8)),
    code: EncapErrorCode.badValue,
    field: 'vxlan.vni',
    message: /vxlan\.vni: 16777216 is out of range \(0\.\.16777215\)/,
  },
  {
    name: 'vxlan frame: VNI over 24 bits',
    fn: () => emitVxlanFrame(frameRepr, -1, Buffer.alloc(14)),
    code: EncapErrorCode.badValue,
    field: 'vxlan.vni',
    message: /vxlan\.vni: -1 is out of range/,
  },
  {
    name: 'udp frame: neither IPv4 nor IPv6',
    fn: () => parseUdpFrame(with16(emitUdpFrame(frameRepr, Buffer.alloc(0)), 12, EtherType.arp)),
    code: EncapErrorCode.malformed,
    field: 'ethernet.ethertype',
    message: /0x806, expected IPv4 or IPv6/,
  },
  {
    name: 'udp frame: a corrupted outer IPv4 header',
    fn: () => {
      const frame = emitUdpFrame(frameRepr, Buffer.alloc(0));
      frame[14 + 9] = IpProtocol.tcp;
      return parseUdpFrame(frame);
    },
    code: EncapErrorCode.checksum,
    field: 'ipv4.checksum',
    message: /header checksum does not verify/,
  },
  {
    name: 'udp frame: a fragment',
    fn: () =>
      parseUdpFrame(
        emitUdpFrame(
          {
            ...frameRepr,
            ip: { version: 4, header: { ...outerIpv4, moreFragments: true } },
          },
          Buffer.alloc(0),
        ),
      ),
    code: EncapErrorCode.malformed,
    field: 'ipv4.fragment',
    message: /a fragment, not a whole datagram/,
  },
  {
    name: 'vxlan frame: payload without the I flag',
    fn: () => parseVxlanFrame(emitUdpFrame(frameRepr, Buffer.alloc(8 + 14))),
    code: EncapErrorCode.malformed,
    field: 'vxlan.flags',
    message: /the I flag is not set/,
  },
  {
    name: 'flannel frame: payload that is not IPv4',
    fn: () => parseFlannelFrame(emitUdpFrame(frameRepr, withByte(IPV4, 0, 0x60))),
    code: EncapErrorCode.malformed,
    field: 'ipv4.version',
    message: /ipv4\.version: 6, expected 4/,
  },
  {
    name: 'mtu: underlay too small',
    fn: () => overlayMtu(117, 'vxlan'),
    code: EncapErrorCode.badValue,
    field: 'mtu',
    message: /underlay MTU of 117 leaves 67 bytes for vxlan, below the IPv4 minimum of 68/,
  },
  {
    name: 'mtu: unknown encapsulation',
    fn: () => overlayMtu(1500, 'geneve' as Encapsulation),
    code: EncapErrorCode.badValue,
    field: 'encapsulation',
    message: /"geneve" is not one of vxlan, vxlan6, flannel-udp/,
  },
];

describe('checked API: every error path has a stable code, a field and a message', () => {
  for (const row of rows) {
    it(row.name, () => {
      const err = thrown(row.fn);
      expect(err.code).toBe(row.code);
      expect(err.field).toBe(row.field);
      expect(err.message).toMatch(row.message);
    });
  }

  it('an IPv4 frame whose protocol is not UDP names the protocol field', () => {
    const frame = emitUdpFrame(frameRepr, Buffer.alloc(0));
    frame[14 + 9] = IpProtocol.tcp;
    // Patch the header checksum so only the protocol is wrong.
    frame.writeUInt16BE(0, 14 + 10);
    let sum = 0;
    for (let i = 14; i < 34; i += 2) sum += frame.readUInt16BE(i);
    while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
    frame.writeUInt16BE(~sum & 0xffff, 14 + 10);
    const err = thrown(() => parseUdpFrame(frame));
    expect(err.code).toBe(EncapErrorCode.malformed);
    expect(err.field).toBe('ipv4.protocol');
    expect(err.message).toMatch(/ipv4\.protocol: 6, expected 17 \(UDP\)/);
  });
});
