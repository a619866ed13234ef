/*
 * virtio_net_hdr (linux/virtio_net.h), which a TUN device opened with IFF_VNET_HDR puts in front
 * of every packet it hands over and expects in front of every packet written to it. Fields are
 * in the host's byte order (little-endian here).
 *
 *   u8 flags; u8 gso_type; u16 hdr_len; u16 gso_size; u16 csum_start; u16 csum_offset;
 */
/** struct virtio_net_hdr, which IFF_VNET_HDR puts before every packet on a TUN/TAP fd. */
export const VIRTIO_NET_HDR_BYTES = 10;
/** Byte offsets of struct virtio_net_hdr's fields (linux/virtio_net.h). */
export const VirtioField = {
  flags: 0,
  gsoType: 1,
  hdrLen: 2,
  gsoSize: 4,
  csumStart: 6,
  csumOffset: 8,
} as const;
/** virtio_net_hdr flags (VIRTIO_NET_HDR_F_*). */
export const VirtioFlag = {
  /** The checksum at csum_start + csum_offset holds only the pseudo-header sum: finish it. */
  needsCsum: 1,
  /** The checksums were verified. */
  dataValid: 2,
} as const;
/** virtio_net_hdr GSO types (VIRTIO_NET_HDR_GSO_*). */
export const VirtioGso = { none: 0, tcpv4: 1, udp: 3, tcpv6: 4, udpL4: 5, ecn: 0x80 } as const;

/** Reads a 16-bit little-endian field (virtio's byte order for a TUN's vnet header). */
export function virtioRead16(buf: Uint8Array, off: number): number {
  return buf[off] | (buf[off + 1] << 8);
}

/** Writes a 16-bit little-endian field. */
export function virtioWrite16(buf: Uint8Array, off: number, value: number): void {
  buf[off] = value & 0xff;
  buf[off + 1] = value >>> 8;
}

/** Writes a header: no offload (all zeros) unless the fields say otherwise. */
export function writeVirtioNetHdr(
  buf: Uint8Array,
  off: number,
  flags: number,
  gsoType: number,
  hdrLen: number,
  gsoSize: number,
  csumStart: number,
  csumOffset: number,
): void {
  buf[off + VirtioField.flags] = flags;
  buf[off + VirtioField.gsoType] = gsoType;
  virtioWrite16(buf, off + VirtioField.hdrLen, hdrLen);
  virtioWrite16(buf, off + VirtioField.gsoSize, gsoSize);
  virtioWrite16(buf, off + VirtioField.csumStart, csumStart);
  virtioWrite16(buf, off + VirtioField.csumOffset, csumOffset);
}
