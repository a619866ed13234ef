import {
  ipv4Check,
  ipv4FillChecksum,
  Status,
  udpChecksumIpv4,
  udpChecksumIpv6,
  VIRTIO_NET_HDR_BYTES,
  VirtioFlag,
  VirtioGso,
  virtioRead16,
} from '@weft/encap';
import { expect } from 'vitest';

/**
 * What the kernel makes of a UDP GSO (USO) write, behind `link` bytes of link header (14: a
 * TAP's Ethernet header, copied onto each): the datagrams it cuts, each checksummed, over IPv4
 * the header too and the IDs counted up, over IPv6 the payload length set. The virtio_net_hdr is
 * checked on the way (a TAP's offsets count from the frame's first byte).
 */
export function cutUso(w: Buffer, link = 0): Buffer[] {
  const f = w.subarray(VIRTIO_NET_HDR_BYTES);
  const ip = link;
  const v6 = f[ip] >>> 4 === 6;
  const ihl = v6 ? 40 : 20;
  const l4 = ip + ihl;
  const hdr = l4 + 8;
  expect(w[0]).toBe(VirtioFlag.needsCsum);
  expect(w[1]).toBe(VirtioGso.udpL4);
  expect(virtioRead16(w, 2)).toBe(hdr);
  expect(virtioRead16(w, 6)).toBe(l4);
  expect(virtioRead16(w, 8)).toBe(6);
  if (v6) expect(f.readUInt16BE(ip + 4)).toBe(f.length - l4);
  else expect(ipv4Check(f, ip, f.length - ip)).toBe(Status.ok);
  expect(f.readUInt16BE(l4 + 4)).toBe(f.length - l4);
  const size = virtioRead16(w, 4);
  const id0 = v6 ? 0 : f.readUInt16BE(ip + 4);
  return Array.from({ length: Math.ceil((f.length - hdr) / size) }, (_, k) => {
    const chunk = f.subarray(hdr + k * size, Math.min(f.length, hdr + (k + 1) * size));
    const d = Buffer.concat([f.subarray(0, hdr), chunk]);
    const udpBytes = 8 + chunk.length;
    if (v6) d.writeUInt16BE(udpBytes, ip + 4);
    else {
      d.writeUInt16BE(ihl + udpBytes, ip + 2);
      d.writeUInt16BE((id0 + k) & 0xffff, ip + 4);
      ipv4FillChecksum(d, ip);
    }
    d.writeUInt16BE(udpBytes, l4 + 4);
    d.writeUInt16BE(0, l4 + 6);
    const sum = v6 ? udpChecksumIpv6(d, ip, l4, udpBytes) : udpChecksumIpv4(d, ip, l4, udpBytes);
    d.writeUInt16BE(sum, l4 + 6);
    return d;
  });
}
