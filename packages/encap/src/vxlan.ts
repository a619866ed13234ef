import { macAtIsGroup, readInt32, readMac, write32 } from './bytes.js';
import { ETHERNET_HEADER_BYTES, writeEthernetHeader } from './ethernet.js';
import { checkRange, malformed, Status, truncated } from './status.js';

/*
 * VXLAN header (RFC 7348 section 5), carried in UDP:
 *
 *  0                   1                   2                   3
 *  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
 * +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 * |R|R|R|R|I|R|R|R|            Reserved                           |
 * +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 * |                VXLAN Network Identifier (VNI) |   Reserved    |
 * +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *
 * followed by the inner Ethernet frame (without FCS).
 */
/** Byte offsets of the VXLAN header's fields (RFC 7348 section 5). */
export const VxlanField = { flags: 0, vni: 4 } as const;
/** The VXLAN header: flags, reserved, 24-bit VNI, reserved (RFC 7348 section 5). */
export const VXLAN_HEADER_BYTES = 8;
/** The I flag: "the VNI is valid" (RFC 7348 section 5); a frame without it is dropped. */
export const VXLAN_FLAG_I = 0x08;
/** The largest 24-bit VNI. */
export const VXLAN_MAX_VNI = 0xffffff;
/** The port Linux and flannel use by default (it predates the IANA assignment). */
export const VXLAN_PORT_LINUX = 8472;
/** The IANA-assigned port (RFC 7348 section 5). */
export const VXLAN_PORT_IANA = 4789;
/**
 * Bytes weft writes in front of an inner IP packet when it sends through a UDP socket: the VXLAN
 * header and the inner Ethernet header (the kernel writes the outer IP and UDP).
 */
export const VXLAN_ENCAP_HEADROOM = VXLAN_HEADER_BYTES + ETHERNET_HEADER_BYTES;

/** The 24-bit VNI of the VXLAN header at `off`. */
export function vxlanVni(buf: Uint8Array, off: number): number {
  return readInt32(buf, off + VxlanField.vni) >>> 8;
}

/** Hot path: writes a VXLAN header with the I flag and `vni`, every reserved bit zero. */
export function writeVxlanHeader(buf: Uint8Array, off: number, vni: number): void {
  write32(buf, off, VXLAN_FLAG_I << 24);
  write32(buf, off + VxlanField.vni, vni << 8);
}

/**
 * Hot path: encapsulates the packet that starts at `payloadOff` without moving it, by writing the
 * inner Ethernet header and the VXLAN header into the headroom in front of it. Returns where the
 * UDP payload now starts (payloadOff - 22). The caller guarantees 22 bytes of headroom.
 */
export function vxlanEncapInPlace(
  buf: Uint8Array,
  payloadOff: number,
  vni: number,
  dstMac: number,
  srcMac: number,
  ethertype: number,
): number {
  const start = payloadOff - VXLAN_ENCAP_HEADROOM;
  writeVxlanHeader(buf, start, vni);
  writeEthernetHeader(buf, start + VXLAN_HEADER_BYTES, dstMac, srcMac, ethertype);
  return start;
}

/**
 * Hot path: checks a received VXLAN UDP payload of `len` bytes at `off`: long enough for the
 * header and an inner Ethernet header, the I flag set, the VNI equal to `vni`. Reserved bits are
 * ignored on receive (RFC 7348 section 5). The inner frame starts at off + 8.
 */
export function vxlanCheck(buf: Uint8Array, off: number, len: number, vni: number): Status {
  if (len < VXLAN_HEADER_BYTES + ETHERNET_HEADER_BYTES) return Status.truncated;
  if ((buf[off] & VXLAN_FLAG_I) === 0) return Status.vxlanNoIFlag;
  if (vxlanVni(buf, off) !== vni) return Status.vxlanWrongVni;
  return Status.ok;
}

/**
 * Hot path: vxlanCheck, then the inner destination MAC must be `ourMac` or a group address
 * (broadcast, multicast), as a VTEP in L3 mode accepts.
 */
export function vxlanDecapCheck(
  buf: Uint8Array,
  off: number,
  len: number,
  vni: number,
  ourMac: number,
): Status {
  const status = vxlanCheck(buf, off, len, vni);
  if (status !== Status.ok) return status;
  const inner = off + VXLAN_HEADER_BYTES;
  if (!macAtIsGroup(buf, inner) && readMac(buf, inner) !== ourMac) return Status.wrongDstMac;
  return Status.ok;
}

/** A VXLAN header as plain values. */
export interface VxlanRepr {
  vni: number;
  /** The first octet as found; emit always writes only the I flag. */
  flags?: number;
}

/** The checked VXLAN codec: parse into a {@link VxlanRepr}, emit one. */
export const vxlan = {
  /** Reads the header at `off`; a short one, or one without the I flag, throws an EncapError. */
  parse(buf: Uint8Array, off = 0, len = buf.length - off): VxlanRepr {
    if (len < VXLAN_HEADER_BYTES) throw truncated('vxlan header', VXLAN_HEADER_BYTES, len);
    const flags = buf[off + VxlanField.flags];
    if ((flags & VXLAN_FLAG_I) === 0)
      throw malformed(
        'vxlan.flags',
        'the I flag is not set, so the VNI is not valid (RFC 7348 section 5)',
      );
    return { vni: vxlanVni(buf, off), flags };
  },

  /** The bytes `emit` writes: {@link VXLAN_HEADER_BYTES}. */
  bufferLength(_repr: VxlanRepr): number {
    return VXLAN_HEADER_BYTES;
  },

  /** Writes the header (the I flag and the VNI) at `off`; returns the bytes written. */
  emit(repr: VxlanRepr, buf: Uint8Array, off = 0): number {
    if (buf.length - off < VXLAN_HEADER_BYTES)
      throw truncated('vxlan output', VXLAN_HEADER_BYTES, buf.length - off);
    checkRange('vxlan.vni', repr.vni, VXLAN_MAX_VNI);
    writeVxlanHeader(buf, off, repr.vni);
    return VXLAN_HEADER_BYTES;
  },
};
