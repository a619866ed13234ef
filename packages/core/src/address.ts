import { randomBytes } from 'node:crypto';
import { ErrorCode, WeftError } from './errors.js';

/**
 * Addresses are numbers inside weft and strings only at its edges:
 * - IPv4: an unsigned 32-bit integer in host order (`10.244.1.0` is 0x0af40100);
 * - MAC: an unsigned 48-bit integer (exact in a double), usable as a Map key;
 * - IPv6: 16 bytes in network order.
 */
/** An IPv4 address: an unsigned 32-bit integer in host order (`10.244.1.0` is 0x0af40100). */
export type Ipv4 = number;
/** A MAC address: an unsigned 48-bit integer, exact in a double and usable as a Map key. */
export type Mac = number;
/** An IPv6 address: 16 bytes in network order. */
export type Ipv6 = Uint8Array;

/** An IPv4 or IPv6 address, tagged with its family. */
export type IpAddress = { family: 4; address: Ipv4 } | { family: 6; address: Ipv6 };
/** A network or interface address with its prefix length (`10.244.1.0/24`, `fd00::/64`). */
export type Cidr =
  | { family: 4; address: Ipv4; prefixLength: number }
  | { family: 6; address: Ipv6; prefixLength: number };
/** An IPv4 {@link Cidr}. */
export type Cidr4 = Extract<Cidr, { family: 4 }>;
/** An IPv6 {@link Cidr}. */
export type Cidr6 = Extract<Cidr, { family: 6 }>;

const IPV4_RE = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;
const MAC_RE =
  /^([0-9a-fA-F]{2})([:-])([0-9a-fA-F]{2})\2([0-9a-fA-F]{2})\2([0-9a-fA-F]{2})\2([0-9a-fA-F]{2})\2([0-9a-fA-F]{2})$/;

function octet(text: string): number {
  // Leading zeros are refused: "010" means 8 to some parsers and 10 to others (Go refuses them too).
  if (text.length > 1 && text[0] === '0') return -1;
  const n = Number(text);
  return n <= 255 ? n : -1;
}

/** Parses dotted-quad IPv4, or returns undefined. */
export function tryParseIpv4(text: string): Ipv4 | undefined {
  const m = IPV4_RE.exec(text);
  if (m === null) return undefined;
  const a = octet(m[1]);
  const b = octet(m[2]);
  const c = octet(m[3]);
  const d = octet(m[4]);
  if (a < 0 || b < 0 || c < 0 || d < 0) return undefined;
  return ((a << 24) | (b << 16) | (c << 8) | d) >>> 0;
}

/** Parses dotted-quad IPv4; throws `ERR_BAD_IP` for anything else (leading zeros included). */
export function parseIpv4(text: string): Ipv4 {
  const ip = tryParseIpv4(text);
  if (ip === undefined) {
    throw new WeftError(
      ErrorCode.badIp,
      `not an IPv4 address: ${JSON.stringify(text)} (expected a.b.c.d)`,
    );
  }
  return ip;
}

/** Formats an IPv4 address as a dotted quad. */
export function formatIpv4(ip: Ipv4): string {
  return `${ip >>> 24}.${(ip >>> 16) & 0xff}.${(ip >>> 8) & 0xff}.${ip & 0xff}`;
}

/** Parses IPv6 text (RFC 4291 section 2.2, with `::` and an embedded dotted quad), or undefined. */
export function tryParseIpv6(text: string): Ipv6 | undefined {
  if (text.length < 2 || text.length > 45) return undefined;
  const out = new Uint8Array(16);
  const halves = text.split('::');
  if (halves.length > 2) return undefined;
  const head = halves[0] === '' ? [] : halves[0].split(':');
  const tail = halves.length === 2 && halves[1] !== '' ? halves[1].split(':') : [];
  const groups: number[] = [];
  const parseGroups = (parts: string[], isLast: boolean): number[] | undefined => {
    const words: number[] = [];
    for (let i = 0; i < parts.length; i++) {
      const part = parts[i];
      if (isLast && i === parts.length - 1 && part.includes('.')) {
        const v4 = tryParseIpv4(part);
        if (v4 === undefined) return undefined;
        words.push(v4 >>> 16, v4 & 0xffff);
      } else {
        if (!/^[0-9a-fA-F]{1,4}$/.test(part)) return undefined;
        words.push(Number.parseInt(part, 16));
      }
    }
    return words;
  };
  const headWords = parseGroups(head, halves.length === 1);
  const tailWords = parseGroups(tail, true);
  if (headWords === undefined || tailWords === undefined) return undefined;
  if (halves.length === 1) {
    if (headWords.length !== 8) return undefined;
    groups.push(...headWords);
  } else {
    const zeros = 8 - headWords.length - tailWords.length;
    if (zeros < 1) return undefined;
    groups.push(...headWords, ...new Array<number>(zeros).fill(0), ...tailWords);
  }
  for (let i = 0; i < 8; i++) {
    out[i * 2] = groups[i] >>> 8;
    out[i * 2 + 1] = groups[i] & 0xff;
  }
  return out;
}

/** Parses IPv6 text (RFC 4291 section 2.2); throws `ERR_BAD_IP` for anything else. */
export function parseIpv6(text: string): Ipv6 {
  const ip = tryParseIpv6(text);
  if (ip === undefined) {
    throw new WeftError(ErrorCode.badIp, `not an IPv6 address: ${JSON.stringify(text)}`);
  }
  return ip;
}

/** Formats 16 bytes at `offset` in the canonical text form of RFC 5952. */
export function formatIpv6(bytes: Uint8Array, offset = 0): string {
  const words: number[] = [];
  for (let i = 0; i < 8; i++) words.push((bytes[offset + i * 2] << 8) | bytes[offset + i * 2 + 1]);
  // RFC 5952 4.2: compress the longest run of two or more zero groups, the first one on a tie.
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (words[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && words[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (ws: number[]) => ws.map((w) => w.toString(16)).join(':');
  // RFC 5952 5: IPv4-mapped addresses keep their dotted quad.
  if (bestStart === 0 && bestLen === 5 && words[5] === 0xffff) {
    return `::ffff:${formatIpv4(((words[6] << 16) | words[7]) >>> 0)}`;
  }
  if (bestStart < 0) return hex(words);
  return `${hex(words.slice(0, bestStart))}::${hex(words.slice(bestStart + bestLen))}`;
}

/** Parses IPv4 or IPv6 text, or returns undefined. */
export function tryParseIp(text: string): IpAddress | undefined {
  const v4 = tryParseIpv4(text);
  if (v4 !== undefined) return { family: 4, address: v4 };
  const v6 = tryParseIpv6(text);
  if (v6 !== undefined) return { family: 6, address: v6 };
  return undefined;
}

/** Parses IPv4 or IPv6 text; throws `ERR_BAD_IP` for anything else. */
export function parseIp(text: string): IpAddress {
  const ip = tryParseIp(text);
  if (ip === undefined) {
    throw new WeftError(ErrorCode.badIp, `not an IP address: ${JSON.stringify(text)}`);
  }
  return ip;
}

/** Formats an address of either family (IPv6 in RFC 5952's canonical form). */
export function formatIp(ip: IpAddress): string {
  return ip.family === 4 ? formatIpv4(ip.address) : formatIpv6(ip.address);
}

/** True when both are the same family and address. */
export function ipEquals(a: IpAddress, b: IpAddress): boolean {
  if (a.family === 4 || b.family === 4) return a.family === b.family && a.address === b.address;
  for (let i = 0; i < 16; i++) if (a.address[i] !== b.address[i]) return false;
  return true;
}

/** The netmask of an IPv4 prefix length, as a number (`/24` is 0xffffff00). */
export function ipv4Mask(prefixLength: number): number {
  return prefixLength === 0 ? 0 : (0xffffffff << (32 - prefixLength)) >>> 0;
}

/** True when `ip` is inside the network `cidr` (which must have no host bits set). */
export function ipv4InCidr(ip: Ipv4, cidr: Cidr4): boolean {
  const mask = ipv4Mask(cidr.prefixLength);
  return (ip & mask) >>> 0 === cidr.address;
}

/** Options for parseCidr. */
export interface ParseCidrOptions {
  /** Accept `10.244.1.1/24` (an interface address) instead of refusing the set host bits. */
  allowHostBits?: boolean;
}

/**
 * Parses `a.b.c.d/n` or `x::/n`. Host bits set are an error unless allowed, because a route or a
 * subnet written with them is almost always a typo for something else.
 */
export function parseCidr(text: string, options: ParseCidrOptions = {}): Cidr {
  const slash = text.indexOf('/');
  if (slash < 0) {
    throw new WeftError(
      ErrorCode.badCidr,
      `not a CIDR: ${JSON.stringify(text)} (expected address/prefix-length)`,
    );
  }
  const ip = tryParseIp(text.slice(0, slash));
  if (ip === undefined) {
    throw new WeftError(
      ErrorCode.badCidr,
      `not a CIDR: ${JSON.stringify(text)} (the address part is not an IP address)`,
    );
  }
  const lenText = text.slice(slash + 1);
  const max = ip.family === 4 ? 32 : 128;
  const prefixLength = /^\d{1,3}$/.test(lenText) ? Number(lenText) : Number.NaN;
  if (!(prefixLength >= 0 && prefixLength <= max)) {
    throw new WeftError(
      ErrorCode.badPrefixLength,
      `prefix length out of range in ${JSON.stringify(text)}: must be 0..${max} for IPv${ip.family}`,
    );
  }
  const cidr: Cidr =
    ip.family === 4
      ? { family: 4, address: ip.address, prefixLength }
      : { family: 6, address: ip.address, prefixLength };
  if (!options.allowHostBits && !cidrIsNetwork(cidr)) {
    const network = formatCidr(cidrNetwork(cidr));
    throw new WeftError(
      ErrorCode.hostBitsSet,
      `host bits set in ${JSON.stringify(text)}: did you mean ${network}?`,
    );
  }
  return cidr;
}

/** The network of a CIDR: host bits cleared. */
export function cidrNetwork(cidr: Cidr): Cidr {
  if (cidr.family === 4) {
    return {
      family: 4,
      address: (cidr.address & ipv4Mask(cidr.prefixLength)) >>> 0,
      prefixLength: cidr.prefixLength,
    };
  }
  const address = new Uint8Array(16);
  for (let i = 0; i < 16; i++) {
    const bits = Math.min(8, Math.max(0, cidr.prefixLength - i * 8));
    address[i] = cidr.address[i] & ((0xff00 >> bits) & 0xff);
  }
  return { family: 6, address, prefixLength: cidr.prefixLength };
}

/** True when no host bits are set: `10.244.1.0/24` is a network, `10.244.1.1/24` is not. */
export function cidrIsNetwork(cidr: Cidr): boolean {
  const network = cidrNetwork(cidr);
  if (cidr.family === 4) return network.address === cidr.address;
  return ipEquals(
    { family: 6, address: network.address as Ipv6 },
    { family: 6, address: cidr.address },
  );
}

/** Formats `address/prefix-length`. */
export function formatCidr(cidr: Cidr): string {
  const ip = cidr.family === 4 ? formatIpv4(cidr.address) : formatIpv6(cidr.address);
  return `${ip}/${cidr.prefixLength}`;
}

/** Parses six hex pairs separated by `:` or `-`, or returns undefined. */
export function tryParseMac(text: string): Mac | undefined {
  const m = MAC_RE.exec(text);
  if (m === null) return undefined;
  let mac = 0;
  for (const i of [1, 3, 4, 5, 6, 7]) mac = mac * 256 + Number.parseInt(m[i], 16);
  return mac;
}

/** Parses six hex pairs separated by `:` or `-`; throws `ERR_BAD_MAC` for anything else. */
export function parseMac(text: string): Mac {
  const mac = tryParseMac(text);
  if (mac === undefined) {
    throw new WeftError(
      ErrorCode.badMac,
      `not a MAC address: ${JSON.stringify(text)} (expected six hex pairs, e.g. 02:00:00:00:01:01)`,
    );
  }
  return mac;
}

/** Formats a MAC as six lower-case hex pairs separated by `:`. */
export function formatMac(mac: Mac): string {
  let out = '';
  for (let shift = 40; shift >= 0; shift -= 8) {
    const byte = Math.floor(mac / 2 ** shift) % 256;
    out += (shift === 40 ? '' : ':') + byte.toString(16).padStart(2, '0');
  }
  return out;
}

/** `ff:ff:ff:ff:ff:ff`. */
export const MAC_BROADCAST: Mac = 0xffffffffffff;
/** `00:00:00:00:00:00`: in the FDB, the default destination list (as the kernel's). */
export const MAC_ZERO: Mac = 0;

/** True for group (multicast and broadcast) MACs: the I/G bit, the low bit of the first octet. */
export function macIsMulticast(mac: Mac): boolean {
  return Math.floor(mac / 2 ** 40) % 2 === 1;
}

/** A random locally administered unicast MAC, as the kernel picks for a new VXLAN device. */
export function randomMac(): Mac {
  const b = randomBytes(6);
  b[0] = (b[0] & 0xfe) | 0x02;
  return b.readUIntBE(0, 6);
}
