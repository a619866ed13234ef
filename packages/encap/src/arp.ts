import { read16, read32, readMac, write16, write32, writeMac } from './bytes.js';
import { ETHERNET_HEADER_BYTES, EthernetField, EtherType, ethernetType } from './ethernet.js';
import { checkRange, malformed, Status, truncated } from './status.js';

/*
 * ARP for IPv4 over Ethernet (RFC 826), 28 bytes:
 *
 *  0                   1                   2                   3
 *  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
 * +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 * |   Hardware type (1)           |   Protocol type (0x0800)      |
 * +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 * |  HLEN (6)     |  PLEN (4)     |   Operation (1 req, 2 reply)  |
 * +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 * |  Sender hardware address (6) | Sender protocol address (4)    |
 * |  Target hardware address (6) | Target protocol address (4)    |
 * +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 */
/** Byte offsets of the ARP fields for Ethernet and IPv4 (RFC 826). */
export const ArpField = {
  hardwareType: 0,
  protocolType: 2,
  hardwareLength: 4,
  protocolLength: 5,
  operation: 6,
  senderMac: 8,
  senderIp: 14,
  targetMac: 18,
  targetIp: 24,
} as const;

/** An ARP packet for Ethernet and IPv4: 8 bytes of header and two MAC/IPv4 pairs. */
export const ARP_BYTES = 28;
export const ARP_HARDWARE_ETHERNET = 1;
/** ARP operation codes (RFC 826). */
export const ArpOperation = { request: 1, reply: 2 } as const;

/** The gate: an Ethernet/IPv4 ARP message of 28 bytes at `off`. Never throws. */
export function arpCheck(buf: Uint8Array, off: number, len: number): Status {
  if (len < ARP_BYTES) return Status.truncated;
  if (
    read16(buf, off + ArpField.hardwareType) !== ARP_HARDWARE_ETHERNET ||
    read16(buf, off + ArpField.protocolType) !== EtherType.ipv4 ||
    buf[off + ArpField.hardwareLength] !== 6 ||
    buf[off + ArpField.protocolLength] !== 4
  ) {
    return Status.unsupported;
  }
  return Status.ok;
}

/** The operation (1 request, 2 reply) of the ARP packet at `off` (after {@link arpCheck}). */
export function arpOperation(buf: Uint8Array, off: number): number {
  return read16(buf, off + ArpField.operation);
}
/** The sender's MAC, as a 48-bit number (after {@link arpCheck}). */
export function arpSenderMac(buf: Uint8Array, off: number): number {
  return readMac(buf, off + ArpField.senderMac);
}
/** The sender's IPv4 address, host order (after {@link arpCheck}). */
export function arpSenderIp(buf: Uint8Array, off: number): number {
  return read32(buf, off + ArpField.senderIp);
}
/** The target IPv4 address, host order (after {@link arpCheck}). */
export function arpTargetIp(buf: Uint8Array, off: number): number {
  return read32(buf, off + ArpField.targetIp);
}

/**
 * Hot path: turns the Ethernet frame at `ethOff` holding an ARP request into the reply that
 * `ourMac` sends for the requested address, in place (the reply is as long as the request).
 * The caller has decided we answer for the target IP. Returns `unsupported` for anything that is
 * not an untagged Ethernet/IPv4 ARP request.
 */
export function arpReplyInPlace(
  buf: Uint8Array,
  ethOff: number,
  len: number,
  ourMac: number,
): Status {
  if (ethernetType(buf, ethOff, len) !== EtherType.arp) return Status.unsupported;
  if (read16(buf, ethOff + EthernetField.ethertype) !== EtherType.arp) return Status.unsupported;
  const off = ethOff + ETHERNET_HEADER_BYTES;
  const status = arpCheck(buf, off, len - ETHERNET_HEADER_BYTES);
  if (status !== Status.ok) return status;
  if (arpOperation(buf, off) !== ArpOperation.request) return Status.unsupported;
  const askerMac = arpSenderMac(buf, off);
  const askerIp = arpSenderIp(buf, off);
  const wantedIp = arpTargetIp(buf, off);
  writeMac(buf, ethOff + EthernetField.dst, askerMac);
  writeMac(buf, ethOff + EthernetField.src, ourMac);
  write16(buf, off + ArpField.operation, ArpOperation.reply);
  writeMac(buf, off + ArpField.senderMac, ourMac);
  write32(buf, off + ArpField.senderIp, wantedIp);
  writeMac(buf, off + ArpField.targetMac, askerMac);
  write32(buf, off + ArpField.targetIp, askerIp);
  return Status.ok;
}

/** An ARP packet as plain values (MACs as numbers, IPv4 in host order). */
export interface ArpRepr {
  operation: number;
  senderMac: number;
  senderIp: number;
  targetMac: number;
  targetIp: number;
}

/** The checked ARP codec: parse into an {@link ArpRepr}, emit one. */
export const arp = {
  /**
   * Reads and checks the packet at `off`; a short or malformed one throws an EncapError naming the field.
   */
  parse(buf: Uint8Array, off = 0, len = buf.length - off): ArpRepr {
    if (len < ARP_BYTES) throw truncated('arp message', ARP_BYTES, len);
    const hardwareType = read16(buf, off + ArpField.hardwareType);
    if (hardwareType !== ARP_HARDWARE_ETHERNET)
      throw malformed('arp.hardwareType', `${hardwareType}, expected 1 (Ethernet)`);
    const protocolType = read16(buf, off + ArpField.protocolType);
    if (protocolType !== EtherType.ipv4) {
      throw malformed('arp.protocolType', `0x${protocolType.toString(16)}, expected 0x0800 (IPv4)`);
    }
    if (buf[off + ArpField.hardwareLength] !== 6)
      throw malformed('arp.hardwareLength', `${buf[off + 4]}, expected 6`);
    if (buf[off + ArpField.protocolLength] !== 4)
      throw malformed('arp.protocolLength', `${buf[off + 5]}, expected 4`);
    return {
      operation: arpOperation(buf, off),
      senderMac: arpSenderMac(buf, off),
      senderIp: arpSenderIp(buf, off),
      targetMac: readMac(buf, off + ArpField.targetMac),
      targetIp: arpTargetIp(buf, off),
    };
  },

  /** The bytes `emit` writes: {@link ARP_BYTES}. */
  bufferLength(_repr: ArpRepr): number {
    return ARP_BYTES;
  },

  /** Writes `repr` at `off` (values checked first); returns the bytes written. */
  emit(repr: ArpRepr, buf: Uint8Array, off = 0): number {
    if (buf.length - off < ARP_BYTES) throw truncated('arp output', ARP_BYTES, buf.length - off);
    checkRange('arp.operation', repr.operation, 0xffff);
    checkRange('arp.senderMac', repr.senderMac, 0xffffffffffff);
    checkRange('arp.targetMac', repr.targetMac, 0xffffffffffff);
    checkRange('arp.senderIp', repr.senderIp, 0xffffffff);
    checkRange('arp.targetIp', repr.targetIp, 0xffffffff);
    write16(buf, off + ArpField.hardwareType, ARP_HARDWARE_ETHERNET);
    write16(buf, off + ArpField.protocolType, EtherType.ipv4);
    buf[off + ArpField.hardwareLength] = 6;
    buf[off + ArpField.protocolLength] = 4;
    write16(buf, off + ArpField.operation, repr.operation);
    writeMac(buf, off + ArpField.senderMac, repr.senderMac);
    write32(buf, off + ArpField.senderIp, repr.senderIp);
    writeMac(buf, off + ArpField.targetMac, repr.targetMac);
    write32(buf, off + ArpField.targetIp, repr.targetIp);
    return ARP_BYTES;
  },
};
