import { read16, readMac, write16, writeMac } from './bytes.js';
import { checkRange, malformed, truncated } from './status.js';

/*
 * Ethernet II (IEEE 802.3 with an EtherType), optionally with one IEEE 802.1Q tag:
 *
 *  0                   1                   2                   3
 *  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
 * +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 * |                  Destination MAC (6 octets)                   |
 * +                               +-------------------------------+
 * |                               |                               |
 * +-------------------------------+                               +
 * |                     Source MAC (6 octets)                     |
 * +-------------------------------+-------------------------------+
 * |   EtherType (or TPID 0x8100)  |  [PCP|DEI|VID if tagged]      |
 * +-------------------------------+-------------------------------+
 */
/** Byte offsets of the Ethernet II header's fields (and of an 802.1Q tag's). */
export const EthernetField = {
  dst: 0,
  src: 6,
  ethertype: 12,
  /** With an 802.1Q tag: the TCI, then the real EtherType. */
  tci: 14,
  innerEthertype: 16,
} as const;

/** An Ethernet II header: destination, source, EtherType. */
export const ETHERNET_HEADER_BYTES = 14;
/** An Ethernet header with one 802.1Q tag. */
export const ETHERNET_VLAN_HEADER_BYTES = 18;

/** EtherTypes weft meets (IEEE 802 numbers). */
export const EtherType = {
  ipv4: 0x0800,
  arp: 0x0806,
  vlan: 0x8100,
  /** 802.1ad service tag, seen in front of an 802.1Q tag (QinQ). */
  qinq: 0x88a8,
  ipv6: 0x86dd,
} as const;

/** Hot path: the EtherType after at most one VLAN tag, or -1 when the frame is too short. */
export function ethernetType(buf: Uint8Array, off: number, len: number): number {
  if (len < ETHERNET_HEADER_BYTES) return -1;
  const type = read16(buf, off + EthernetField.ethertype);
  if (type !== EtherType.vlan && type !== EtherType.qinq) return type;
  if (len < ETHERNET_VLAN_HEADER_BYTES) return -1;
  return read16(buf, off + EthernetField.innerEthertype);
}

/** Hot path: bytes of Ethernet header before the payload (14, or 18 with a tag), or -1. */
export function ethernetHeaderLength(buf: Uint8Array, off: number, len: number): number {
  if (len < ETHERNET_HEADER_BYTES) return -1;
  const type = read16(buf, off + EthernetField.ethertype);
  if (type !== EtherType.vlan && type !== EtherType.qinq) return ETHERNET_HEADER_BYTES;
  return len < ETHERNET_VLAN_HEADER_BYTES ? -1 : ETHERNET_VLAN_HEADER_BYTES;
}

/** Hot path: writes an untagged Ethernet II header at `off`. */
export function writeEthernetHeader(
  buf: Uint8Array,
  off: number,
  dstMac: number,
  srcMac: number,
  ethertype: number,
): void {
  writeMac(buf, off + EthernetField.dst, dstMac);
  writeMac(buf, off + EthernetField.src, srcMac);
  write16(buf, off + EthernetField.ethertype, ethertype);
}

/** An 802.1Q tag's fields. */
export interface VlanTag {
  /** Priority code point, 0..7. */
  pcp: number;
  /** Drop eligible indicator, 0 or 1. */
  dei: number;
  /** VLAN identifier, 0..4095. */
  vid: number;
}

/** An Ethernet header as a plain value. `ethertype` is the payload's type, after any tag. */
export interface EthernetRepr {
  dst: number;
  src: number;
  ethertype: number;
  vlan?: VlanTag;
}

/** The checked Ethernet codec: parse into an {@link EthernetRepr}, emit one. */
export const ethernet = {
  /** Reads the header at `off` (one VLAN tag understood); a short one throws an EncapError. */
  parse(buf: Uint8Array, off = 0, len = buf.length - off): EthernetRepr {
    if (len < ETHERNET_HEADER_BYTES) throw truncated('ethernet header', ETHERNET_HEADER_BYTES, len);
    const outerType = read16(buf, off + EthernetField.ethertype);
    const repr: EthernetRepr = {
      dst: readMac(buf, off + EthernetField.dst),
      src: readMac(buf, off + EthernetField.src),
      ethertype: outerType,
    };
    if (outerType === EtherType.vlan) {
      if (len < ETHERNET_VLAN_HEADER_BYTES)
        throw truncated('ethernet 802.1Q tag', ETHERNET_VLAN_HEADER_BYTES, len);
      const tci = read16(buf, off + EthernetField.tci);
      repr.vlan = { pcp: tci >>> 13, dei: (tci >>> 12) & 1, vid: tci & 0xfff };
      repr.ethertype = read16(buf, off + EthernetField.innerEthertype);
    } else if (outerType < 0x0600) {
      // Values up to 1500 are an 802.3 length, not a type: not Ethernet II.
      throw malformed(
        'ethernet.ethertype',
        `0x${outerType.toString(16)} is an 802.3 length, not an EtherType`,
      );
    }
    return repr;
  },

  /** The bytes `emit` writes: 14, or 18 with a VLAN tag. */
  bufferLength(repr: EthernetRepr): number {
    return repr.vlan ? ETHERNET_VLAN_HEADER_BYTES : ETHERNET_HEADER_BYTES;
  },

  /** Writes the header at `off` and returns its length. */
  emit(repr: EthernetRepr, buf: Uint8Array, off = 0): number {
    const need = ethernet.bufferLength(repr);
    if (buf.length - off < need) throw truncated('ethernet output', need, buf.length - off);
    checkRange('ethernet.dst', repr.dst, 0xffffffffffff);
    checkRange('ethernet.src', repr.src, 0xffffffffffff);
    checkRange('ethernet.ethertype', repr.ethertype, 0xffff);
    writeMac(buf, off + EthernetField.dst, repr.dst);
    writeMac(buf, off + EthernetField.src, repr.src);
    if (repr.vlan) {
      checkRange('ethernet.vlan.pcp', repr.vlan.pcp, 7);
      checkRange('ethernet.vlan.dei', repr.vlan.dei, 1);
      checkRange('ethernet.vlan.vid', repr.vlan.vid, 0xfff);
      write16(buf, off + EthernetField.ethertype, EtherType.vlan);
      write16(
        buf,
        off + EthernetField.tci,
        (repr.vlan.pcp << 13) | (repr.vlan.dei << 12) | repr.vlan.vid,
      );
      write16(buf, off + EthernetField.innerEthertype, repr.ethertype);
    } else {
      write16(buf, off + EthernetField.ethertype, repr.ethertype);
    }
    return need;
  },
};
