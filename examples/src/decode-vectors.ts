import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { formatIpv4, formatIpv6, formatMac } from '@weft/core';
import {
  ARP_BYTES,
  arp,
  EtherType,
  FLANNEL_UDP_PORT,
  IpProtocol,
  ipv4,
  ipv6,
  parseFlannelFrame,
  parseUdpFrame,
  parseVxlanFrame,
} from '@weft/encap';
import { pcapFrames } from './pcap.js';

/** The captured frames beside the repository (`../shared/vectors`, see its README). */
export const VECTORS_DIR = fileURLToPath(new URL('../../../shared/vectors/', import.meta.url));

/**
 * Decodes the captured golden frames (kernel VXLAN on 8472 and 4789, flannel's UDP proxy on
 * 8285) through @weft/encap's public API and prints one line per frame.
 */
export const VECTOR_FILES = [
  'kernel-vxlan-l3-8472.pcap',
  'kernel-vxlan-l2-4789.pcap',
  'flannel-udp-8285.pcap',
];

const protocolNames: Record<number, string> = {
  [IpProtocol.icmp]: 'ICMP',
  [IpProtocol.tcp]: 'TCP',
  [IpProtocol.udp]: 'UDP',
};

function describeInnerIpv4(buf: Uint8Array, off: number, len: number): string {
  const ip = ipv4.parse(buf, off, len);
  const proto = protocolNames[ip.protocol] ?? `proto ${ip.protocol}`;
  const headerBytes = ipv4.bufferLength(ip);
  let detail = '';
  if (ip.protocol === IpProtocol.icmp) {
    const type = buf[off + headerBytes];
    detail = type === 8 ? ' echo request' : type === 0 ? ' echo reply' : ` type ${type}`;
  } else if (ip.protocol === IpProtocol.tcp || ip.protocol === IpProtocol.udp) {
    const ports = (buf[off + headerBytes] << 8) | buf[off + headerBytes + 1];
    const dport = (buf[off + headerBytes + 2] << 8) | buf[off + headerBytes + 3];
    detail = ` ${ports} -> ${dport}`;
  }
  return `${formatIpv4(ip.src)} -> ${formatIpv4(ip.dst)} ${proto}${detail} ttl ${ip.ttl} len ${ip.payloadLength + headerBytes}`;
}

export function describeFrame(data: Uint8Array): string {
  const outer = parseUdpFrame(data);
  const outerIp =
    outer.ip.version === 4
      ? `${formatIpv4(outer.ip.header.src)}:${outer.udp.srcPort} -> ${formatIpv4(outer.ip.header.dst)}:${outer.udp.dstPort}`
      : `[${formatIpv6(outer.ip.header.src)}]:${outer.udp.srcPort} -> [${formatIpv6(outer.ip.header.dst)}]:${outer.udp.dstPort}`;
  if (outer.udp.dstPort === FLANNEL_UDP_PORT) {
    const f = parseFlannelFrame(data);
    return `${outerIp} flannel-udp | ${describeInnerIpv4(data, f.payloadOffset, f.payloadLength)}`;
  }
  const f = parseVxlanFrame(data);
  const innerOff = f.innerOffset + 14;
  const innerLen = f.innerLength - 14;
  let inner: string;
  if (f.inner.ethertype === EtherType.ipv4) inner = describeInnerIpv4(data, innerOff, innerLen);
  else if (f.inner.ethertype === EtherType.arp) {
    const a = arp.parse(data, innerOff, ARP_BYTES);
    inner =
      a.operation === 1
        ? `ARP who has ${formatIpv4(a.targetIp)}? tell ${formatIpv4(a.senderIp)}`
        : `ARP ${formatIpv4(a.senderIp)} is at ${formatMac(a.senderMac)}`;
  } else if (f.inner.ethertype === EtherType.ipv6) {
    const h = ipv6.parse(data, innerOff, innerLen);
    inner = `${formatIpv6(h.src)} -> ${formatIpv6(h.dst)} next header ${h.nextHeader} hop limit ${h.hopLimit}`;
  } else inner = `ethertype 0x${f.inner.ethertype.toString(16)}`;
  return `${outerIp} vxlan vni ${f.vxlan.vni} | ${formatMac(f.inner.src)} -> ${formatMac(f.inner.dst)} | ${inner}`;
}

export function decodeVectors(
  print: (line: string) => void,
  maxFramesPerFile = 12,
  dir = VECTORS_DIR,
): void {
  for (const file of VECTOR_FILES) {
    const records = pcapFrames(readFileSync(join(dir, file))).map((data) => ({ data }));
    print(
      `\n${file}: ${records.length} frames${records.length > maxFramesPerFile ? ` (first ${maxFramesPerFile})` : ''}`,
    );
    for (const [i, record] of records.slice(0, maxFramesPerFile).entries()) {
      print(`  ${String(i + 1).padStart(3)}  ${describeFrame(record.data)}`);
    }
  }
}

// node examples/dist/decode-vectors.js [directory of the .pcap files]
if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href)
  decodeVectors((line) => console.log(line), 12, process.argv[2]);
