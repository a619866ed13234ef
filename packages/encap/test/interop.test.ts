import { parseIpv4, parseIpv6, parseMac } from '@weft/core';
import { haveTools, scapyRun, tsharkDissect } from '@weft/testkit';
import { describe, expect, it } from 'vitest';
import {
  ArpOperation,
  arp,
  arpReplyInPlace,
  EtherType,
  emitFlannelFrame,
  emitUdpFrame,
  emitVxlanFrame,
  FLANNEL_UDP_PORT,
  flannelTtlStep,
  IcmpCode,
  IcmpType,
  IpProtocol,
  icmp,
  ipv4,
  Status,
  type UdpFrameRepr,
  VXLAN_PORT_IANA,
  VXLAN_PORT_LINUX,
  vxlanEncapInPlace,
  writeEthernetHeader,
  writeIcmpv4Error,
} from '../src/index.js';

/**
 * Frames weft encodes, read back by two dissectors nobody on this team wrote: tshark (Wireshark)
 * and scapy. Each field they report must equal what weft meant to write, and every checksum
 * they verify must be good.
 */
const canRun = haveTools('the tshark and scapy interop tests', 'tshark', 'scapy');

const vtepA = parseMac('02:00:00:00:01:01');
const vtepB = parseMac('02:00:00:00:02:01');
const outer = (srcPort: number, dstPort: number): UdpFrameRepr => ({
  ethernet: {
    src: parseMac('0e:00:00:00:00:01'),
    dst: parseMac('0e:00:00:00:00:02'),
    ethertype: EtherType.ipv4,
  },
  ip: {
    version: 4,
    header: {
      src: parseIpv4('198.18.0.1'),
      dst: parseIpv4('198.18.0.2'),
      protocol: IpProtocol.udp,
      ttl: 64,
      payloadLength: 0,
      identification: 0x1234,
    },
  },
  udp: { srcPort: srcPort, dstPort: dstPort, payloadLength: 0 },
});

/** An ICMP echo request from 10.244.1.5 to 10.244.2.7 as a bare IPv4 packet. */
function echoRequest(ttl: number, dataBytes = 56): Buffer {
  const data = Buffer.alloc(dataBytes, 0x5a);
  const message = { type: IcmpType.echoRequest, code: 0, rest: (0x77 << 16) | 1, data };
  const packet = Buffer.alloc(20 + icmp.bufferLength(message));
  ipv4.emit(
    {
      src: parseIpv4('10.244.1.5'),
      dst: parseIpv4('10.244.2.7'),
      protocol: IpProtocol.icmp,
      ttl,
      payloadLength: icmp.bufferLength(message),
      identification: 7,
      dontFragment: true,
    },
    packet,
  );
  icmp.emit(message, packet, 20);
  return packet;
}

/**
 * The hot path's VXLAN encapsulation: headers written into the headroom of a slot. The headroom
 * starts as all ones, so a reserved bit the encoder forgot to clear would show.
 */
function vxlanPayload(packet: Buffer, vni: number): Buffer {
  const slot = Buffer.alloc(64 + packet.length, 0xff);
  packet.copy(slot, 64);
  const start = vxlanEncapInPlace(slot, 64, vni, vtepB, vtepA, EtherType.ipv4);
  return slot.subarray(start);
}

function arpRequestFrame(): Buffer {
  const frame = Buffer.alloc(14 + 28);
  writeEthernetHeader(frame, 0, 0xffffffffffff, vtepA, EtherType.arp);
  arp.emit(
    {
      operation: ArpOperation.request,
      senderMac: vtepA,
      senderIp: parseIpv4('10.244.1.0'),
      targetMac: 0,
      targetIp: parseIpv4('10.244.2.0'),
    },
    frame,
    14,
  );
  return frame;
}

function build(): { frames: Buffer[]; unreachable: Buffer } {
  const vx8472 = emitUdpFrame(outer(40001, VXLAN_PORT_LINUX), vxlanPayload(echoRequest(63), 1));
  const reply = arpRequestFrame();
  expect(arpReplyInPlace(reply, 0, reply.length, vtepB)).toBe(Status.ok);
  const vx4789 = emitVxlanFrame(outer(40002, VXLAN_PORT_IANA), 4096, arpRequestFrame());
  const vx4789reply = emitVxlanFrame(outer(40003, VXLAN_PORT_IANA), 4096, reply);
  const flannelInner = echoRequest(64);
  expect(flannelTtlStep(flannelInner, 0, flannelInner.length)).toBe(Status.ok);
  const flannel = emitFlannelFrame(outer(FLANNEL_UDP_PORT, FLANNEL_UDP_PORT), flannelInner);
  const unreachable = Buffer.alloc(100);
  const offender = echoRequest(63);
  const n = writeIcmpv4Error(
    unreachable,
    0,
    offender,
    0,
    offender.length,
    IcmpType.destinationUnreachable,
    IcmpCode.netUnreachable,
    parseIpv4('10.244.1.0'),
  );
  expect(n).toBe(20 + 8 + 20 + 8);
  const icmpFrame = Buffer.alloc(14 + n);
  writeEthernetHeader(icmpFrame, 0, vtepA, vtepB, EtherType.ipv4);
  unreachable.copy(icmpFrame, 14, 0, n);
  const vx6 = emitVxlanFrame(
    {
      ethernet: { src: 1, dst: 2, ethertype: EtherType.ipv6 },
      ip: {
        version: 6,
        header: {
          src: parseIpv6('fd00::1'),
          dst: parseIpv6('fd00::2'),
          nextHeader: IpProtocol.udp,
          hopLimit: 64,
          payloadLength: 0,
        },
      },
      udp: { srcPort: 40004, dstPort: VXLAN_PORT_LINUX, payloadLength: 0 },
    },
    0xabcdef,
    arpRequestFrame(),
  );
  return { frames: [vx8472, vx4789, vx4789reply, flannel, icmpFrame, vx6], unreachable: icmpFrame };
}

type Layers = Record<string, unknown>;
const layer = (l: Layers, name: string, index = 0): Record<string, unknown> => {
  const v = l[name];
  return (Array.isArray(v) ? v[index] : v) as Record<string, unknown>;
};

describe.skipIf(!canRun)('interop: tshark and scapy read what weft writes', () => {
  it('tshark dissects every field as meant, with good checksums', async () => {
    const { frames } = build();
    const out = await tsharkDissect(frames, {
      decodeAs: ['udp.port==8472,vxlan', 'udp.port==8285,ip'],
    });
    const [vx8472, vx4789, vxReply, flannel, unreachable, vx6] = out;

    // RFC 7348: flags 0x08 then 24 reserved bits, the VNI, 8 reserved bits, all reserved zero.
    for (const frame of [vx8472, vx4789, vxReply, vx6]) {
      expect(layer(frame, 'vxlan')['vxlan.flags']).toBe('0x0800');
      expect(layer(frame, 'vxlan')['vxlan.gbp']).toBe('0');
      expect(layer(frame, 'vxlan')['vxlan.reserved8']).toBe('0');
      expect(layer(frame, 'ip', 0)?.['ip.checksum.status'] ?? '1').toBe('1');
    }
    expect(layer(vx8472, 'vxlan')['vxlan.vni']).toBe('1');
    expect((layer(vx8472, 'vxlan')['vxlan.flags_tree'] as Layers)['vxlan.flag_i']).toBe('1');
    expect((layer(vx8472, 'vxlan')['vxlan.flags_tree'] as Layers)['vxlan.flags_reserved']).toBe(
      '0x0000',
    );
    expect(layer(vx8472, 'udp')['udp.dstport']).toBe('8472');
    expect(layer(vx8472, 'udp')['udp.checksum.status']).toBe('1');
    expect(layer(vx8472, 'eth', 1)['eth.src']).toBe('02:00:00:00:01:01');
    expect(layer(vx8472, 'eth', 1)['eth.dst']).toBe('02:00:00:00:02:01');
    expect(layer(vx8472, 'ip', 1)['ip.src']).toBe('10.244.1.5');
    expect(layer(vx8472, 'ip', 1)['ip.dst']).toBe('10.244.2.7');
    expect(layer(vx8472, 'ip', 1)['ip.ttl']).toBe('63');
    expect(layer(vx8472, 'ip', 1)['ip.checksum.status']).toBe('1');
    expect(layer(vx8472, 'icmp')['icmp.type']).toBe('8');
    expect(layer(vx8472, 'icmp')['icmp.checksum.status']).toBe('1');

    expect(layer(vx4789, 'udp')['udp.dstport']).toBe('4789');
    expect(layer(vx4789, 'vxlan')['vxlan.vni']).toBe('4096');
    expect(layer(vx4789, 'arp')['arp.opcode']).toBe('1');
    expect(layer(vx4789, 'arp')['arp.dst.proto_ipv4']).toBe('10.244.2.0');
    expect(layer(vx4789, 'eth', 1)['eth.dst']).toBe('ff:ff:ff:ff:ff:ff');
    expect(layer(vx4789, 'eth', 1)['eth.src']).toBe('02:00:00:00:01:01');
    expect(layer(vx4789, 'udp')['udp.checksum.status']).toBe('1');
    expect(layer(vxReply, 'arp')['arp.opcode']).toBe('2');
    expect(layer(vxReply, 'arp')['arp.src.hw_mac']).toBe('02:00:00:00:02:01');
    expect(layer(vxReply, 'arp')['arp.src.proto_ipv4']).toBe('10.244.2.0');
    expect(layer(vxReply, 'arp')['arp.dst.hw_mac']).toBe('02:00:00:00:01:01');
    expect(layer(vxReply, 'arp')['arp.dst.proto_ipv4']).toBe('10.244.1.0');
    expect(layer(vxReply, 'eth', 1)['eth.dst']).toBe('02:00:00:00:01:01');

    expect(layer(flannel, 'udp')['udp.srcport']).toBe('8285');
    expect(layer(flannel, 'udp')['udp.checksum.status']).toBe('1');
    expect(layer(flannel, 'ip', 1)['ip.ttl']).toBe('63');
    expect(layer(flannel, 'ip', 1)['ip.checksum.status']).toBe('1');
    expect(layer(flannel, 'ip', 1)['ip.src']).toBe('10.244.1.5');

    expect(layer(unreachable, 'icmp')['icmp.type']).toBe('3');
    expect(layer(unreachable, 'icmp')['icmp.code']).toBe('0');
    expect(layer(unreachable, 'icmp')['icmp.checksum.status']).toBe('1');
    expect(layer(unreachable, 'ip', 0)['ip.src']).toBe('10.244.1.0');
    expect(layer(unreachable, 'ip', 0)['ip.dst']).toBe('10.244.1.5');
    const quoted = layer(unreachable, 'icmp').ip as Layers;
    expect(quoted['ip.src']).toBe('10.244.1.5');
    expect(quoted['ip.dst']).toBe('10.244.2.7');
    expect(quoted['ip.checksum.status']).toBe('1');

    expect(layer(vx6, 'ipv6')['ipv6.src']).toBe('fd00::1');
    expect(layer(vx6, 'ipv6')['ipv6.dst']).toBe('fd00::2');
    expect(layer(vx6, 'ipv6')['ipv6.hlim']).toBe('64');
    expect(layer(vx6, 'udp')['udp.dstport']).toBe('8472');
    expect(layer(vx6, 'arp')['arp.dst.proto_ipv4']).toBe('10.244.2.0');
    expect(layer(vx6, 'udp')['udp.checksum.status']).toBe('1');
    expect(layer(vx6, 'vxlan')['vxlan.vni']).toBe(String(0xabcdef));
  });

  it('scapy dissects every field as meant, and its checksums equal ours', async () => {
    const { frames } = build();
    const report = (await scapyRun(
      frames,
      `
def csum_ok(layer):
    stored = layer.chksum
    again = layer.__class__(raw(layer))
    again.chksum = None
    return stored == layer.__class__(raw(again)).chksum
def udp_csum_ok(p):
    # The UDP checksum covers the pseudo-header, so recompute it on the whole frame.
    q = p.copy()
    del q[UDP].chksum
    return p[UDP].chksum == Ether(raw(q))[UDP].chksum
out = []
for p in packets:
    d = {}
    if IP in p:
        d["outer_ip"] = [p[IP].src, p[IP].dst, csum_ok(p[IP])]
    if IPv6 in p:
        d["outer_ip6"] = [p[IPv6].src, p[IPv6].dst, p[IPv6].hlim]
    if UDP in p:
        d["udp"] = [p[UDP].sport, p[UDP].dport, udp_csum_ok(p)]
    if VXLAN in p:
        v = p[VXLAN]
        d["vni"] = v.vni
        d["flags"] = int(v.flags)
        d["reserved"] = [v.reserved1, v.reserved2]
        inner = v.payload
        d["inner_eth"] = [inner.src, inner.dst, inner.type]
        if ARP in inner:
            a = inner[ARP]
            d["arp"] = [a.op, a.hwsrc, a.psrc, a.hwdst, a.pdst]
        if IP in inner:
            d["inner_ip"] = [inner[IP].src, inner[IP].dst, inner[IP].ttl, csum_ok(inner[IP])]
    elif UDP in p and p[UDP].dport == 8285:
        i = IP(bytes(p[UDP].payload))
        d["inner_ip"] = [i.src, i.dst, i.ttl, csum_ok(i)]
    if ICMP in p and p[ICMP].type == 3:
        d["icmp"] = [p[ICMP].type, p[ICMP].code, csum_ok(p[ICMP]), p[IPerror].src, p[IPerror].dst]
    out.append(d)
print(json.dumps(out))
`,
    )) as Record<string, unknown>[];
    const [vx8472, vx4789, vxReply, flannel, unreachable, vx6] = report;
    expect(vx8472.udp).toEqual([40001, 8472, true]);
    expect(vx8472.vni).toBe(1);
    for (const frame of [vx8472, vx4789, vxReply, vx6]) {
      expect(frame.flags).toBe(0x08);
      expect(frame.reserved).toEqual([0, 0]);
    }
    expect(vx8472.inner_eth).toEqual(['02:00:00:00:01:01', '02:00:00:00:02:01', 0x0800]);
    expect(vx8472.inner_ip).toEqual(['10.244.1.5', '10.244.2.7', 63, true]);
    expect(vx8472.outer_ip).toEqual(['198.18.0.1', '198.18.0.2', true]);
    expect(vx4789.vni).toBe(4096);
    expect(vx4789.udp).toEqual([40002, 4789, true]);
    expect(vx4789.inner_eth).toEqual(['02:00:00:00:01:01', 'ff:ff:ff:ff:ff:ff', 0x0806]);
    expect(vxReply.inner_eth).toEqual(['02:00:00:00:02:01', '02:00:00:00:01:01', 0x0806]);
    expect(vx4789.arp).toEqual([
      1,
      '02:00:00:00:01:01',
      '10.244.1.0',
      '00:00:00:00:00:00',
      '10.244.2.0',
    ]);
    expect(vxReply.arp).toEqual([
      2,
      '02:00:00:00:02:01',
      '10.244.2.0',
      '02:00:00:00:01:01',
      '10.244.1.0',
    ]);
    expect(flannel.udp).toEqual([8285, 8285, true]);
    expect(flannel.outer_ip).toEqual(['198.18.0.1', '198.18.0.2', true]);
    expect(flannel.inner_ip).toEqual(['10.244.1.5', '10.244.2.7', 63, true]);
    expect(unreachable.icmp).toEqual([3, 0, true, '10.244.1.5', '10.244.2.7']);
    expect(vx6.vni).toBe(0xabcdef);
    expect(vx6.udp).toEqual([40004, 8472, true]);
    expect(vx6.outer_ip6).toEqual(['fd00::1', 'fd00::2', 64]);
    expect((vx6.arp as unknown[])[4]).toBe('10.244.2.0');
  });
});
