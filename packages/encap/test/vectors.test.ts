import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { formatIpv4, formatMac, parseIpv4, parseMac } from '@weft/core';
import { readPcap, VECTORS_DIR } from '@weft/testkit';
import { describe, expect, it } from 'vitest';
import {
  ARP_BYTES,
  ArpOperation,
  arp,
  EtherType,
  emitFlannelFrame,
  emitVxlanFrame,
  FLANNEL_UDP_PORT,
  flannelTtlStep,
  IpProtocol,
  icmp,
  ipv4,
  ipv4Check,
  ipv4FillChecksum,
  ipv6,
  parseFlannelFrame,
  parseVxlanFrame,
  Status,
  UdpField,
  VXLAN_ENCAP_HEADROOM,
  VXLAN_PORT_IANA,
  VXLAN_PORT_LINUX,
  vxlanDecapCheck,
  vxlanEncapInPlace,
} from '../src/index.js';

function frames(name: string): Buffer[] {
  return readPcap(readFileSync(join(VECTORS_DIR, name))).records.map((r) => r.data);
}

const A = parseIpv4('198.18.0.1');
const B = parseIpv4('198.18.0.2');

/** Offset of the outer UDP checksum in an untagged Ethernet + 20-byte IPv4 frame. */
const OUTER_UDP_CHECKSUM = 14 + 20 + UdpField.checksum;

function expectSameExceptUdpChecksum(actual: Buffer, captured: Buffer): void {
  expect(actual.length).toBe(captured.length);
  const a = Buffer.from(actual);
  const c = Buffer.from(captured);
  a.writeUInt16BE(0, OUTER_UDP_CHECKSUM);
  c.writeUInt16BE(0, OUTER_UDP_CHECKSUM);
  expect(a.equals(c)).toBe(true);
}

describe('kernel-vxlan-l3-8472.pcap (the kernel VXLAN as flannel configures it)', () => {
  const all = frames('kernel-vxlan-l3-8472.pcap');
  const vtepA = parseMac('02:00:00:00:01:01');
  const vtepB = parseMac('02:00:00:00:02:01');

  it('decodes every frame to VNI 1 on port 8472 between the two VTEPs', () => {
    expect(all.length).toBe(145);
    for (const [i, data] of all.entries()) {
      const f = parseVxlanFrame(data);
      expect(f.udp.dstPort, `frame ${i}`).toBe(VXLAN_PORT_LINUX);
      expect(f.vxlan.vni).toBe(1);
      expect(f.ip.version).toBe(4);
      if (f.ip.version !== 4) continue;
      const aToB = f.ip.header.src === A;
      expect(f.ip.header.dst).toBe(aToB ? B : A);
      expect(f.inner.src).toBe(aToB ? vtepA : vtepB);
      expect(f.inner.dst).toBe(aToB ? vtepB : vtepA);
      expect(f.inner.ethertype).toBe(EtherType.ipv4);
      const inner = ipv4.parse(data, f.innerOffset + 14, f.innerLength - 14);
      expect(formatIpv4(inner.src)).toBe(aToB ? '10.244.1.0' : '10.244.2.0');
      expect(formatIpv4(inner.dst)).toBe(aToB ? '10.244.2.0' : '10.244.1.0');
      expect(inner.ttl).toBe(64);
    }
  });

  it('finds the pings the README lists: 3 a->b with 100 bytes, 2 b->a with 1400 bytes', () => {
    const requests = all
      .map((d) => ({ d, f: parseVxlanFrame(d) }))
      .map(({ d, f }) => {
        const ipOff = f.innerOffset + 14;
        const ip = ipv4.parse(d, ipOff, f.innerLength - 14);
        if (ip.protocol !== IpProtocol.icmp) return undefined;
        const message = icmp.parse(d, ipOff + 20, ip.payloadLength);
        return message.type === 8
          ? { from: formatIpv4(ip.src), dataBytes: message.data.length }
          : undefined;
      })
      .filter((x) => x !== undefined);
    expect(requests).toEqual([
      ...Array(3).fill({ from: '10.244.1.0', dataBytes: 100 }),
      ...Array(2).fill({ from: '10.244.2.0', dataBytes: 1400 }),
    ]);
  });

  it('re-encodes every frame from its fields to the captured bytes', () => {
    for (const data of all) {
      const f = parseVxlanFrame(data);
      const inner = data.subarray(f.innerOffset, f.innerOffset + f.innerLength);
      expect(emitVxlanFrame(f, f.vxlan.vni, inner, { udpChecksum: 'keep' }).equals(data)).toBe(
        true,
      );
      expectSameExceptUdpChecksum(emitVxlanFrame(f, f.vxlan.vni, inner), data);
    }
  });

  it('the hot-path encapsulation writes the same UDP payload the kernel sent', () => {
    for (const data of all) {
      const f = parseVxlanFrame(data);
      const packet = data.subarray(f.innerOffset + 14, f.innerOffset + f.innerLength);
      const slot = Buffer.alloc(64 + packet.length, 0xee);
      packet.copy(slot, 64);
      const start = vxlanEncapInPlace(slot, 64, 1, f.inner.dst, f.inner.src, EtherType.ipv4);
      expect(start).toBe(64 - VXLAN_ENCAP_HEADROOM);
      expect(
        slot
          .subarray(start)
          .equals(data.subarray(f.payloadOffset, f.payloadOffset + f.payloadLength)),
      ).toBe(true);
      // And the receive check accepts it for the VTEP it was sent to, and no other.
      const ours = f.inner.dst;
      expect(vxlanDecapCheck(data, f.payloadOffset, f.payloadLength, 1, ours)).toBe(Status.ok);
      expect(vxlanDecapCheck(data, f.payloadOffset, f.payloadLength, 2, ours)).toBe(
        Status.vxlanWrongVni,
      );
      expect(vxlanDecapCheck(data, f.payloadOffset, f.payloadLength, 1, ours + 1)).toBe(
        Status.wrongDstMac,
      );
    }
  });
});

describe('kernel-vxlan-l2-4789.pcap (an L2 segment with ARP and IPv6)', () => {
  const all = frames('kernel-vxlan-l2-4789.pcap');
  const macA = parseMac('02:00:00:00:0a:01');
  const macB = parseMac('02:00:00:00:0b:01');

  it('decodes every frame to VNI 42 on the IANA port', () => {
    const kinds = new Map<number, number>();
    for (const data of all) {
      const f = parseVxlanFrame(data);
      expect(f.udp.dstPort).toBe(VXLAN_PORT_IANA);
      expect(f.vxlan.vni).toBe(42);
      expect([macA, macB]).toContain(f.inner.src);
      kinds.set(f.inner.ethertype, (kinds.get(f.inner.ethertype) ?? 0) + 1);
    }
    expect(Object.fromEntries(kinds)).toEqual({
      [EtherType.arp]: 4,
      [EtherType.ipv4]: 4,
      [EtherType.ipv6]: 12,
    });
  });

  it('reads the ARP exchange: who has 10.99.0.2, tell 10.99.0.1, and the reply', () => {
    const messages = all
      .map((d) => ({ d, f: parseVxlanFrame(d) }))
      .filter(({ f }) => f.inner.ethertype === EtherType.arp)
      .map(({ d, f }) => ({ eth: f.inner, arp: arp.parse(d, f.innerOffset + 14, ARP_BYTES) }));
    const request = messages.find(
      (m) => m.arp.operation === ArpOperation.request && m.arp.senderMac === macA,
    );
    const reply = messages.find(
      (m) => m.arp.operation === ArpOperation.reply && m.arp.senderMac === macB,
    );
    expect(request).toBeDefined();
    expect(reply).toBeDefined();
    expect(formatMac(request!.eth.dst)).toBe('ff:ff:ff:ff:ff:ff');
    expect(formatIpv4(request!.arp.senderIp)).toBe('10.99.0.1');
    expect(formatIpv4(request!.arp.targetIp)).toBe('10.99.0.2');
    expect(reply!.eth.dst).toBe(macA);
    expect(formatIpv4(reply!.arp.senderIp)).toBe('10.99.0.2');
    expect(reply!.arp.targetMac).toBe(macA);
  });

  it('reads the 2 pings a->b: inner addresses, MACs and ICMP types', () => {
    const pings = all
      .map((d) => ({ d, f: parseVxlanFrame(d) }))
      .filter(({ f }) => f.inner.ethertype === EtherType.ipv4)
      .map(({ d, f }) => {
        const ip = ipv4.parse(d, f.innerOffset + 14, f.innerLength - 14);
        const message = icmp.parse(d, f.innerOffset + 14 + 20, ip.payloadLength);
        return [formatMac(f.inner.src), formatIpv4(ip.src), formatIpv4(ip.dst), message.type];
      });
    const request = ['02:00:00:00:0a:01', '10.99.0.1', '10.99.0.2', 8];
    const reply = ['02:00:00:00:0b:01', '10.99.0.2', '10.99.0.1', 0];
    expect(pings).toEqual([request, reply, request, reply]);
  });

  it('reads the IPv6 fixed header of the ND and MLD frames', () => {
    const v6 = all
      .map((d) => ({ d, f: parseVxlanFrame(d) }))
      .filter(({ f }) => f.inner.ethertype === EtherType.ipv6)
      .map(({ d, f }) => ipv6.parse(d, f.innerOffset + 14, f.innerLength - 14));
    expect(v6.length).toBe(12);
    for (const h of v6) {
      expect([IpProtocol.icmpv6, IpProtocol.ipv6HopByHop]).toContain(h.nextHeader);
      expect([1, 255]).toContain(h.hopLimit);
    }
  });

  it('re-encodes every frame to the captured bytes', () => {
    for (const data of all) {
      const f = parseVxlanFrame(data);
      const inner = data.subarray(f.innerOffset, f.innerOffset + f.innerLength);
      expect(emitVxlanFrame(f, f.vxlan.vni, inner, { udpChecksum: 'keep' }).equals(data)).toBe(
        true,
      );
      expectSameExceptUdpChecksum(emitVxlanFrame(f, f.vxlan.vni, inner), data);
    }
  });
});

describe("flannel-udp-8285.pcap (flannel's own UDP proxy)", () => {
  const all = frames('flannel-udp-8285.pcap');

  it('decodes every frame: port 8285 both ways, inner TTL 63 with a valid checksum', () => {
    expect(all.length).toBe(215);
    for (const data of all) {
      const f = parseFlannelFrame(data);
      expect(f.udp.srcPort).toBe(FLANNEL_UDP_PORT);
      expect(f.udp.dstPort).toBe(FLANNEL_UDP_PORT);
      expect(f.inner.ttl).toBe(63);
      expect(ipv4Check(data, f.payloadOffset, f.payloadLength)).toBe(Status.ok);
      if (f.ip.version !== 4) throw new Error('outer IPv4 expected');
      const aToB = f.ip.header.src === A;
      expect(formatIpv4(f.inner.src)).toBe(aToB ? '10.244.1.0' : '10.244.2.0');
      expect(formatIpv4(f.inner.dst)).toBe(aToB ? '10.244.2.0' : '10.244.1.0');
      expect(f.payloadLength).toBe(f.inner.payloadLength + 20);
    }
  });

  it("the TTL step turns the sender's packet (TTL 64) into exactly the captured bytes", () => {
    for (const data of all) {
      const f = parseFlannelFrame(data);
      const captured = data.subarray(f.payloadOffset, f.payloadOffset + f.payloadLength);
      const original = Buffer.from(captured);
      original[8] = 64;
      ipv4FillChecksum(original, 0);
      expect(flannelTtlStep(original, 0, original.length)).toBe(Status.ok);
      expect(original.equals(captured)).toBe(true);
    }
  });

  it('re-encodes every frame to the captured bytes', () => {
    for (const data of all) {
      const f = parseFlannelFrame(data);
      const inner = data.subarray(f.payloadOffset, f.payloadOffset + f.payloadLength);
      expect(emitFlannelFrame(f, inner, { udpChecksum: 'keep' }).equals(data)).toBe(true);
      expectSameExceptUdpChecksum(emitFlannelFrame(f, inner), data);
    }
  });
});
