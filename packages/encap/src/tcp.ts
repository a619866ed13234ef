import { read32, write16, write32 } from './bytes.js';
import { finish, fold, sum16 } from './checksum.js';
import { Ipv4Field } from './ipv4.js';

/*
 * TCP header (RFC 9293 section 3.1), as far as segmentation and coalescing need it:
 *
 *  0                   1                   2                   3
 *  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
 * +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 * |          Source Port          |       Destination Port        |
 * +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 * |                        Sequence Number                        |
 * +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 * |                    Acknowledgment Number                      |
 * +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 * |  Data |       |C|E|U|A|P|R|S|F|                               |
 * | Offset| Rsrvd |W|C|R|C|S|S|Y|I|            Window             |
 * +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 * |           Checksum            |         Urgent Pointer        |
 * +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 */
/** Byte offsets of the TCP header's fields (RFC 9293 section 3.1). */
export const TcpField = {
  srcPort: 0,
  dstPort: 2,
  seq: 4,
  ack: 8,
  dataOffset: 12,
  flags: 13,
  window: 14,
  checksum: 16,
  urgent: 18,
} as const;
/** A TCP header without options (RFC 9293 section 3.1). */
export const TCP_HEADER_BYTES = 20;

/** TCP flag bits in the flags byte. */
export const TcpFlag = {
  fin: 0x01,
  syn: 0x02,
  rst: 0x04,
  psh: 0x08,
  ack: 0x10,
  urg: 0x20,
  ece: 0x40,
  cwr: 0x80,
} as const;

/** The header length in bytes (Data Offset x 4). */
export function tcpHeaderLength(buf: Uint8Array, off: number): number {
  return (buf[off + TcpField.dataOffset] >>> 4) << 2;
}
/** The Sequence Number of the TCP header at `off`. */
export function tcpSeq(buf: Uint8Array, off: number): number {
  return read32(buf, off + TcpField.seq);
}
/** The Acknowledgment Number. */
export function tcpAck(buf: Uint8Array, off: number): number {
  return read32(buf, off + TcpField.ack);
}
/** The flags byte (see {@link TcpFlag}). */
export function tcpFlags(buf: Uint8Array, off: number): number {
  return buf[off + TcpField.flags];
}
/** Writes the Sequence Number. */
export function writeTcpSeq(buf: Uint8Array, off: number, seq: number): void {
  write32(buf, off + TcpField.seq, seq >>> 0);
}

/** The sum of the IPv4 pseudo-header (RFC 9293 3.1) for a TCP segment of `tcpBytes`. */
export function tcpPseudoSum4(buf: Uint8Array, ipOff: number, tcpBytes: number): number {
  return sum16(buf, ipOff + Ipv4Field.src, 8, 6 + tcpBytes);
}

/**
 * The TCP checksum of a segment whose header is `tcpHeaderBytes` at tcpOff and whose payload of
 * `payloadBytes` starts at payloadOff (possibly in another buffer): the header's own checksum
 * field is taken as zero.
 */
export function tcpChecksum4(
  ipBuf: Uint8Array,
  ipOff: number,
  tcpOff: number,
  tcpHeaderBytes: number,
  payload: Uint8Array,
  payloadOff: number,
  payloadBytes: number,
): number {
  let sum = tcpPseudoSum4(ipBuf, ipOff, tcpHeaderBytes + payloadBytes);
  sum = sum16(ipBuf, tcpOff, TcpField.checksum, sum);
  sum = sum16(ipBuf, tcpOff + TcpField.checksum + 2, tcpHeaderBytes - TcpField.checksum - 2, sum);
  // The payload starts at an even offset within the segment: the header length is a multiple of 4.
  sum = sum16(payload, payloadOff, payloadBytes, sum);
  return finish(sum);
}

/** True when a whole segment (header and payload at tcpOff) carries a correct checksum. */
export function tcpChecksumOk4(
  buf: Uint8Array,
  ipOff: number,
  tcpOff: number,
  tcpBytes: number,
): boolean {
  return finish(sum16(buf, tcpOff, tcpBytes, tcpPseudoSum4(buf, ipOff, tcpBytes))) === 0;
}

/** Writes the pseudo-header sum (folded, not complemented) where a NEEDS_CSUM checksum starts from. */
export function writeTcpPartialChecksum4(
  buf: Uint8Array,
  ipOff: number,
  tcpOff: number,
  tcpBytes: number,
): void {
  write16(buf, tcpOff + TcpField.checksum, fold(tcpPseudoSum4(buf, ipOff, tcpBytes)));
}
