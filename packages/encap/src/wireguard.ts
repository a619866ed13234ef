import { copyOut } from './bytes.js';
import { checkRange, malformed, truncated } from './status.js';

/*
 * WireGuard messages (the WireGuard paper, section 5.4; wireguard-go device/noise-protocol.go).
 * Every field is little-endian; the first byte is the type, then three reserved zero bytes
 * (wireguard-go reads the four as one u32, so a non-zero reserved byte is an unknown type).
 *
 * Handshake initiation, type 1, 148 bytes:
 *   0 type+reserved | 4 sender u32 | 8 ephemeral[32] | 40 static[32+16] | 88 timestamp[12+16]
 *   | 116 mac1[16] | 132 mac2[16]
 * Handshake response, type 2, 92 bytes:
 *   0 type+reserved | 4 sender u32 | 8 receiver u32 | 12 ephemeral[32] | 44 empty[0+16]
 *   | 60 mac1[16] | 76 mac2[16]
 * Cookie reply, type 3, 64 bytes:
 *   0 type+reserved | 4 receiver u32 | 8 nonce[24] | 32 cookie[16+16]
 * Transport data, type 4, 32 bytes or more:
 *   0 type+reserved | 4 receiver u32 | 8 counter u64 | 16 packet, zero-padded to 16, sealed [n+16]
 */
/** WireGuard message types (the paper, section 5.4). */
export const WireguardType = {
  initiation: 1,
  response: 2,
  cookieReply: 3,
  transport: 4,
} as const;

/** A handshake initiation message (section 5.4.2). */
export const WG_INITIATION_BYTES = 148;
/** A handshake response message (section 5.4.3). */
export const WG_RESPONSE_BYTES = 92;
/** A cookie reply message (section 5.4.7). */
export const WG_COOKIE_REPLY_BYTES = 64;
/** A transport data message's header: type, receiver index, 64-bit counter (section 5.4.6). */
export const WG_TRANSPORT_HEADER_BYTES = 16;
/** The Poly1305 tag every sealed field ends with. */
export const WG_TAG_BYTES = 16;
/** An empty transport message: header and tag, nothing between (a keepalive). */
export const WG_KEEPALIVE_BYTES = WG_TRANSPORT_HEADER_BYTES + WG_TAG_BYTES;
/** Plaintext is padded with zeros to a multiple of 16 (the paper, section 5.4.6). */
export const WG_PADDING_MULTIPLE = 16;
/** The port flannel's wireguard backend (and the usual wg-quick setup) listens on. */
export const WIREGUARD_PORT = 51820;
/** flannel's IPv6 wireguard device (`flannel-wg-v6`) listens here in its `separate` mode. */
export const WIREGUARD_PORT_V6 = 51821;

/** Byte offsets of the WireGuard messages' fields (the paper, section 5.4). */
export const WireguardField = {
  type: 0,
  sender: 4,
  /** Initiation. */
  initiationEphemeral: 8,
  initiationStatic: 40,
  initiationTimestamp: 88,
  initiationMac1: 116,
  initiationMac2: 132,
  /** Response. */
  responseReceiver: 8,
  responseEphemeral: 12,
  responseEmpty: 44,
  responseMac1: 60,
  responseMac2: 76,
  /** Cookie reply and transport. */
  receiver: 4,
  cookieNonce: 8,
  cookie: 32,
  counter: 8,
  content: 16,
} as const;

/** The exact length of each handshake message type (transport is any length >= 32). */
export function wireguardMessageBytes(type: number): number {
  switch (type) {
    case WireguardType.initiation:
      return WG_INITIATION_BYTES;
    case WireguardType.response:
      return WG_RESPONSE_BYTES;
    case WireguardType.cookieReply:
      return WG_COOKIE_REPLY_BYTES;
    case WireguardType.transport:
      return WG_KEEPALIVE_BYTES;
    default:
      return 0;
  }
}

/**
 * Hot path: the type of the `len`-byte message at `off` when it is one WireGuard accepts (a known
 * type with zero reserved bytes, the handshake messages at their exact size, transport at 32
 * bytes or more); 0 for an unknown type; -1 when too short (or, for a handshake message, the
 * wrong size) for its type.
 */
export function wireguardMessageType(buf: Uint8Array, off: number, len: number): number {
  if (len < 4) return -1;
  const type = buf[off];
  if (buf[off + 1] !== 0 || buf[off + 2] !== 0 || buf[off + 3] !== 0) return 0;
  const size = wireguardMessageBytes(type);
  if (size === 0) return 0;
  if (type === WireguardType.transport ? len < size : len !== size) return -1;
  return type;
}

/** Little-endian u32 (WireGuard's byte order), no allocation. */
export function readLe32(buf: Uint8Array, off: number): number {
  return (buf[off] | (buf[off + 1] << 8) | (buf[off + 2] << 16) | (buf[off + 3] << 24)) >>> 0;
}

/** Writes a 32-bit little-endian integer (WireGuard's byte order for its own fields). */
export function writeLe32(buf: Uint8Array, off: number, value: number): void {
  buf[off] = value;
  buf[off + 1] = value >>> 8;
  buf[off + 2] = value >>> 16;
  buf[off + 3] = value >>> 24;
}

/** The receiver index of a response (at 8), cookie reply or transport message (at 4). */
export function wireguardReceiver(buf: Uint8Array, off: number): number {
  return buf[off] === WireguardType.response
    ? readLe32(buf, off + WireguardField.responseReceiver)
    : readLe32(buf, off + WireguardField.receiver);
}

/**
 * Hot path: a transport message's counter as a number, exact below 2^53 (2^53 messages at 10
 * million a second take 28 years; a larger counter returns -1 and the caller drops it).
 */
export function wireguardCounter(buf: Uint8Array, off: number): number {
  const lo = readLe32(buf, off + WireguardField.counter);
  const hi = readLe32(buf, off + WireguardField.counter + 4);
  if (hi >= 0x200000) return -1;
  return hi * 0x100000000 + lo;
}

/** Hot path: writes the 16-byte transport header (type 4, receiver, counter < 2^53). */
export function writeTransportHeader(
  buf: Uint8Array,
  off: number,
  receiver: number,
  counter: number,
): void {
  buf[off] = WireguardType.transport;
  buf[off + 1] = 0;
  buf[off + 2] = 0;
  buf[off + 3] = 0;
  writeLe32(buf, off + WireguardField.receiver, receiver);
  writeLe32(buf, off + WireguardField.counter, counter >>> 0);
  writeLe32(buf, off + WireguardField.counter + 4, Math.floor(counter / 0x100000000));
}

/**
 * The padded plaintext length of a `len`-byte packet on a device of `mtu` bytes: up to a multiple
 * of 16, but never past the MTU (the kernel's and wireguard-go's calculatePaddingSize).
 */
export function wireguardPaddedLength(len: number, mtu: number): number {
  let last = len;
  if (mtu > 0 && last > mtu) last %= mtu;
  let padded = (last + WG_PADDING_MULTIPLE - 1) & ~(WG_PADDING_MULTIPLE - 1);
  if (mtu > 0 && padded > mtu) padded = mtu;
  return len + (padded - last);
}

/** Outer IPv4 + UDP + transport header + tag: 20 + 8 + 16 + 16 = 60 (flannel reserves 80, for IPv6). */
export const WIREGUARD_IPV4_OVERHEAD_BYTES = 20 + 8 + WG_TRANSPORT_HEADER_BYTES + WG_TAG_BYTES;
/** Outer IPv6 + UDP + transport header + tag: 40 + 8 + 16 + 16 = 80, what flannel takes off the MTU. */
export const WIREGUARD_OVERHEAD_BYTES = 40 + 8 + WG_TRANSPORT_HEADER_BYTES + WG_TAG_BYTES;

/** A handshake initiation as plain values. */
export interface WireguardInitiationRepr {
  type: 1;
  sender: number;
  ephemeral: Uint8Array;
  /** The initiator's static public key, sealed: 32 + 16 bytes. */
  encryptedStatic: Uint8Array;
  /** A TAI64N timestamp, sealed: 12 + 16 bytes. */
  encryptedTimestamp: Uint8Array;
  mac1: Uint8Array;
  mac2: Uint8Array;
}

/** A handshake response as plain values. */
export interface WireguardResponseRepr {
  type: 2;
  sender: number;
  receiver: number;
  ephemeral: Uint8Array;
  /** Nothing, sealed: the 16-byte tag. */
  encryptedNothing: Uint8Array;
  mac1: Uint8Array;
  mac2: Uint8Array;
}

/** A cookie reply as plain values. */
export interface WireguardCookieReplyRepr {
  type: 3;
  receiver: number;
  nonce: Uint8Array;
  /** The 16-byte cookie, sealed: 16 + 16 bytes. */
  encryptedCookie: Uint8Array;
}

/** A transport data message as plain values (the ciphertext included). */
export interface WireguardTransportRepr {
  type: 4;
  receiver: number;
  counter: bigint;
  /** The sealed, padded packet and its tag (at least the 16-byte tag). */
  encryptedPacket: Uint8Array;
}

/** Any WireGuard message, by `type`. */
export type WireguardRepr =
  | WireguardInitiationRepr
  | WireguardResponseRepr
  | WireguardCookieReplyRepr
  | WireguardTransportRepr;

function bytesField(name: string, value: Uint8Array, size: number): void {
  if (!(value instanceof Uint8Array) || value.length !== size)
    throw malformed(name, `must be ${size} bytes, got ${value?.length}`);
}

/** The checked API: parse a whole message into plain values, emit one from them. */
export const wireguard = {
  /** Reads and checks a whole message at `off`; a short or unknown one throws an EncapError. */
  parse(buf: Uint8Array, off = 0, len = buf.length - off): WireguardRepr {
    const type = wireguardMessageType(buf, off, len);
    if (type === 0)
      throw malformed(
        'wireguard.type',
        `type ${buf[off]} with reserved bytes ${buf[off + 1]},${buf[off + 2]},${buf[off + 3]} is not a WireGuard message`,
      );
    if (type < 0) {
      const need = wireguardMessageBytes(buf[off]);
      throw truncated(`wireguard message of type ${buf[off]}`, need || 4, len);
    }
    const F = WireguardField;
    const at = (start: number, size: number) => copyOut(buf, off + start, off + start + size);
    switch (type) {
      case WireguardType.initiation:
        return {
          type,
          sender: readLe32(buf, off + F.sender),
          ephemeral: at(F.initiationEphemeral, 32),
          encryptedStatic: at(F.initiationStatic, 48),
          encryptedTimestamp: at(F.initiationTimestamp, 28),
          mac1: at(F.initiationMac1, 16),
          mac2: at(F.initiationMac2, 16),
        };
      case WireguardType.response:
        return {
          type,
          sender: readLe32(buf, off + F.sender),
          receiver: readLe32(buf, off + F.responseReceiver),
          ephemeral: at(F.responseEphemeral, 32),
          encryptedNothing: at(F.responseEmpty, 16),
          mac1: at(F.responseMac1, 16),
          mac2: at(F.responseMac2, 16),
        };
      case WireguardType.cookieReply:
        return {
          type,
          receiver: readLe32(buf, off + F.receiver),
          nonce: at(F.cookieNonce, 24),
          encryptedCookie: at(F.cookie, 32),
        };
      default: {
        const lo = BigInt(readLe32(buf, off + F.counter));
        const hi = BigInt(readLe32(buf, off + F.counter + 4));
        return {
          type: WireguardType.transport,
          receiver: readLe32(buf, off + F.receiver),
          counter: (hi << 32n) | lo,
          encryptedPacket: at(F.content, len - F.content),
        };
      }
    }
  },

  /** The bytes `emit` writes for `repr`. */
  bufferLength(repr: WireguardRepr): number {
    if (repr.type === WireguardType.transport)
      return WG_TRANSPORT_HEADER_BYTES + repr.encryptedPacket.length;
    return wireguardMessageBytes(repr.type);
  },

  /** Writes `repr` at `off` (values checked first); returns the bytes written. */
  emit(repr: WireguardRepr, buf: Uint8Array, off = 0): number {
    const size = wireguard.bufferLength(repr);
    if (size === 0) throw malformed('wireguard.type', `type ${repr.type} is not 1..4`);
    if (buf.length - off < size) throw truncated('wireguard output', size, buf.length - off);
    const F = WireguardField;
    buf.fill(0, off, off + 4);
    buf[off] = repr.type;
    switch (repr.type) {
      case WireguardType.initiation:
        checkRange('wireguard.sender', repr.sender, 0xffffffff);
        bytesField('wireguard.ephemeral', repr.ephemeral, 32);
        bytesField('wireguard.encryptedStatic', repr.encryptedStatic, 48);
        bytesField('wireguard.encryptedTimestamp', repr.encryptedTimestamp, 28);
        bytesField('wireguard.mac1', repr.mac1, 16);
        bytesField('wireguard.mac2', repr.mac2, 16);
        writeLe32(buf, off + F.sender, repr.sender);
        buf.set(repr.ephemeral, off + F.initiationEphemeral);
        buf.set(repr.encryptedStatic, off + F.initiationStatic);
        buf.set(repr.encryptedTimestamp, off + F.initiationTimestamp);
        buf.set(repr.mac1, off + F.initiationMac1);
        buf.set(repr.mac2, off + F.initiationMac2);
        break;
      case WireguardType.response:
        checkRange('wireguard.sender', repr.sender, 0xffffffff);
        checkRange('wireguard.receiver', repr.receiver, 0xffffffff);
        bytesField('wireguard.ephemeral', repr.ephemeral, 32);
        bytesField('wireguard.encryptedNothing', repr.encryptedNothing, 16);
        bytesField('wireguard.mac1', repr.mac1, 16);
        bytesField('wireguard.mac2', repr.mac2, 16);
        writeLe32(buf, off + F.sender, repr.sender);
        writeLe32(buf, off + F.responseReceiver, repr.receiver);
        buf.set(repr.ephemeral, off + F.responseEphemeral);
        buf.set(repr.encryptedNothing, off + F.responseEmpty);
        buf.set(repr.mac1, off + F.responseMac1);
        buf.set(repr.mac2, off + F.responseMac2);
        break;
      case WireguardType.cookieReply:
        checkRange('wireguard.receiver', repr.receiver, 0xffffffff);
        bytesField('wireguard.nonce', repr.nonce, 24);
        bytesField('wireguard.encryptedCookie', repr.encryptedCookie, 32);
        writeLe32(buf, off + F.receiver, repr.receiver);
        buf.set(repr.nonce, off + F.cookieNonce);
        buf.set(repr.encryptedCookie, off + F.cookie);
        break;
      case WireguardType.transport: {
        checkRange('wireguard.receiver', repr.receiver, 0xffffffff);
        if (typeof repr.counter !== 'bigint' || repr.counter < 0n || repr.counter >= 1n << 64n)
          throw malformed('wireguard.counter', `${repr.counter} is not a u64`);
        if (repr.encryptedPacket.length < WG_TAG_BYTES)
          throw malformed('wireguard.encryptedPacket', 'must hold at least the 16-byte tag');
        writeLe32(buf, off + F.receiver, repr.receiver);
        writeLe32(buf, off + F.counter, Number(repr.counter & 0xffffffffn));
        writeLe32(buf, off + F.counter + 4, Number(repr.counter >> 32n));
        buf.set(repr.encryptedPacket, off + F.content);
        break;
      }
    }
    return size;
  },
};
