import { WeftError } from '@weft/core';
import { NLMSG_HDRLEN, NLMSGERR_ATTR_MSG, NlmFlag, NlmsgType } from './constants.js';

/**
 * Netlink messages and their attributes (rtattr), built and parsed in TypeScript.
 * Integers are host order (little-endian on every Linux weft runs on) unless a field says
 * otherwise; every attribute and message is padded to 4 bytes.
 */
export const align4 = (n: number) => (n + 3) & ~3;

export const NLA_F_NESTED = 0x8000;
const NLA_TYPE_MASK = ~(0x8000 | 0x4000) & 0xffff;

/** An attribute to build: a type and a payload, or nested attributes. */
export type Attr = { type: number; value: Uint8Array } | { type: number; nested: Attr[] };

/** Builders of attributes, by payload type (integers in host order unless named otherwise). */
export const attr = {
  /** Raw bytes. */
  bytes: (type: number, value: Uint8Array): Attr => ({ type, value }),
  /** An 8-bit integer. */
  u8: (type: number, v: number): Attr => ({ type, value: Uint8Array.of(v) }),
  /** A 16-bit integer, host order. */
  u16: (type: number, v: number): Attr => {
    const b = Buffer.alloc(2);
    b.writeUInt16LE(v);
    return { type, value: b };
  },
  /** A 16-bit value in network byte order (IFLA_VXLAN_PORT). */
  be16: (type: number, v: number): Attr => {
    const b = Buffer.alloc(2);
    b.writeUInt16BE(v);
    return { type, value: b };
  },
  /** A 32-bit integer, host order. */
  u32: (type: number, v: number): Attr => {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(v >>> 0);
    return { type, value: b };
  },
  /** A NUL-terminated string. */
  string: (type: number, s: string): Attr => ({ type, value: Buffer.from(`${s}\0`) }),
  /** A string without the NUL, as iproute2 sends IFLA_INFO_KIND (the kernel compares by length). */
  bareString: (type: number, s: string): Attr => ({ type, value: Buffer.from(s) }),
  /** A flag attribute: present, empty. */
  flag: (type: number): Attr => ({ type, value: new Uint8Array(0) }),
  /** Attributes nested in this one (NLA_F_NESTED is set). */
  nested: (type: number, nested: Attr[]): Attr => ({ type, nested }),
};

function attrLength(a: Attr): number {
  const payload =
    'nested' in a ? a.nested.reduce((n, x) => n + align4(attrLength(x)), 0) : a.value.length;
  return 4 + payload;
}

function writeAttrs(buf: Buffer, off: number, attrs: Attr[]): number {
  for (const a of attrs) {
    const len = attrLength(a);
    buf.writeUInt16LE(len, off);
    buf.writeUInt16LE('nested' in a ? a.type | NLA_F_NESTED : a.type, off + 2);
    if ('nested' in a) writeAttrs(buf, off + 4, a.nested);
    else buf.set(a.value, off + 4);
    off += align4(len);
  }
  return off;
}

/** One request: header fields, the family-specific fixed header, attributes. */
export function buildMessage(
  type: number,
  flags: number,
  seq: number,
  header: Uint8Array,
  attrs: Attr[],
): Buffer {
  const attrsLen = attrs.reduce((n, a) => n + align4(attrLength(a)), 0);
  const len = NLMSG_HDRLEN + align4(header.length) + attrsLen;
  const buf = Buffer.alloc(len);
  buf.writeUInt32LE(len, 0);
  buf.writeUInt16LE(type, 4);
  buf.writeUInt16LE(flags, 6);
  buf.writeUInt32LE(seq >>> 0, 8);
  buf.writeUInt32LE(0, 12);
  buf.set(header, NLMSG_HDRLEN);
  writeAttrs(buf, NLMSG_HDRLEN + align4(header.length), attrs);
  return buf;
}

/** A received message: its header and its payload (a view into the datagram). */
export interface Message {
  type: number;
  flags: number;
  seq: number;
  pid: number;
  payload: Buffer;
}

/** Splits a datagram into messages; a length that lies ends the walk with an error. */
export function parseMessages(datagram: Buffer): Message[] {
  const out: Message[] = [];
  let off = 0;
  while (off + NLMSG_HDRLEN <= datagram.length) {
    const len = datagram.readUInt32LE(off);
    if (len < NLMSG_HDRLEN || off + len > datagram.length) {
      throw new WeftError(
        'ERR_NETLINK_MALFORMED',
        `netlink message at byte ${off} claims ${len} bytes; ${datagram.length - off} remain`,
      );
    }
    out.push({
      type: datagram.readUInt16LE(off + 4),
      flags: datagram.readUInt16LE(off + 6),
      seq: datagram.readUInt32LE(off + 8),
      pid: datagram.readUInt32LE(off + 12),
      payload: datagram.subarray(off + NLMSG_HDRLEN, off + len),
    });
    off += align4(len);
  }
  return out;
}

/** The gate before a fixed header is read: a reply too short for it is malformed, not a RangeError. */
export function requirePayload(msg: Message, bytes: number, what: string): void {
  if (msg.payload.length < bytes)
    throw new WeftError(
      'ERR_NETLINK_MALFORMED',
      `${what} reply of ${msg.payload.length} bytes is shorter than its ${bytes}-byte header`,
    );
}

/** Parsed attributes: by type, the last value of each, plus every value in order. */
export class Attrs {
  readonly list: { type: number; nested: boolean; value: Buffer }[] = [];

  constructor(buf: Buffer, off = 0, end = buf.length) {
    while (off + 4 <= end) {
      const len = buf.readUInt16LE(off);
      const rawType = buf.readUInt16LE(off + 2);
      if (len < 4 || off + len > end) break;
      this.list.push({
        type: rawType & NLA_TYPE_MASK,
        nested: (rawType & NLA_F_NESTED) !== 0,
        value: buf.subarray(off + 4, off + len),
      });
      off += align4(len);
    }
  }

  /** The payload of the attribute of that type, or undefined. */
  get(type: number): Buffer | undefined {
    let found: Buffer | undefined;
    for (const a of this.list) if (a.type === type) found = a.value;
    return found;
  }

  /** Whether an attribute of that type is present. */
  has(type: number): boolean {
    return this.list.some((a) => a.type === type);
  }

  /** A NUL-terminated string attribute (the NUL dropped). */
  string(type: number): string | undefined {
    const v = this.get(type);
    if (!v) return undefined;
    const nul = v.indexOf(0);
    return v.subarray(0, nul < 0 ? v.length : nul).toString();
  }

  /** An 8-bit integer attribute. */
  u8(type: number): number | undefined {
    const v = this.get(type);
    return v && v.length >= 1 ? v[0] : undefined;
  }

  /** A 16-bit host-order integer attribute. */
  u16(type: number): number | undefined {
    const v = this.get(type);
    return v && v.length >= 2 ? v.readUInt16LE(0) : undefined;
  }

  /** A 16-bit network-order integer attribute (a port). */
  be16(type: number): number | undefined {
    const v = this.get(type);
    return v && v.length >= 2 ? v.readUInt16BE(0) : undefined;
  }

  /** A 32-bit host-order integer attribute. */
  u32(type: number): number | undefined {
    const v = this.get(type);
    return v && v.length >= 4 ? v.readUInt32LE(0) : undefined;
  }

  /** The attributes nested in the attribute of that type. */
  nested(type: number): Attrs | undefined {
    const v = this.get(type);
    return v ? new Attrs(v) : undefined;
  }
}

/** The errno an NLMSG_ERROR carries (0 is an ACK), and the kernel's extended-ack text. */
export function parseError(msg: Message): { errno: number; text?: string } {
  requirePayload(msg, 4, 'NLMSG_ERROR');
  const errno = -msg.payload.readInt32LE(0);
  let text: string | undefined;
  if (msg.flags & NlmFlag.ackTlvs && msg.payload.length >= 8) {
    // The original request follows: its header only when capped, else all of it.
    const requestLen = msg.flags & NlmFlag.capped ? NLMSG_HDRLEN : msg.payload.readUInt32LE(4);
    text = new Attrs(msg.payload, 4 + align4(requestLen)).string(NLMSGERR_ATTR_MSG);
  }
  return { errno, text };
}

export function isDone(msg: Message): boolean {
  return msg.type === NlmsgType.done;
}

export function isError(msg: Message): boolean {
  return msg.type === NlmsgType.error;
}
