import { WeftError } from '@weft/core';

/**
 * Results of the hot-path checks. `ok` is 0 and every other value is a reason to drop, small
 * enough to index a counter array (see `STATUS_COUNT`), so callers count drops without branching
 * on strings.
 */
export const Status = {
  ok: 0,
  /** The buffer ends before the header (or the length a header claims) does. */
  truncated: 1,
  /** IPv4 version field is not 4 (or IPv6's is not 6). */
  badVersion: 2,
  /** IPv4 IHL below 5 (a header shorter than 20 bytes). */
  badHeaderLength: 3,
  /** IPv4 total length below the header length (one above the bytes received is `truncated`). */
  badTotalLength: 4,
  badChecksum: 5,
  /** TTL (hop limit) would reach zero at this hop. */
  ttlExpired: 6,
  /** VXLAN header without the I flag (RFC 7348 section 5: the VNI is not valid). */
  vxlanNoIFlag: 7,
  vxlanWrongVni: 8,
  /** Inner Ethernet destination is neither our MAC nor a group address. */
  wrongDstMac: 9,
  /** An Ethernet type (or IP protocol) this path does not carry. */
  unsupported: 10,
  /** An ICMP error must not be sent (RFC 1812 4.3.2.7: reply to an error, a non-first fragment, a group address). */
  icmpNotAllowed: 11,
  /** The output buffer has no room. */
  noRoom: 12,
} as const;

export type Status = (typeof Status)[keyof typeof Status];

/** How many `Status` values there are: the length of a drop-counter array indexed by them. */
export const STATUS_COUNT = 13;

const names: string[] = [];
for (const [name, value] of Object.entries(Status)) names[value] = name;

/** The name of a status, for logs and counter labels (not for the hot path). */
export function statusName(status: number): string {
  return names[status] ?? `unknown(${status})`;
}

/** Stable codes of the checked (throwing) API. */
export const EncapErrorCode = {
  truncated: 'ERR_ENCAP_TRUNCATED',
  malformed: 'ERR_ENCAP_MALFORMED',
  checksum: 'ERR_ENCAP_CHECKSUM',
  unsupported: 'ERR_ENCAP_UNSUPPORTED',
  badValue: 'ERR_ENCAP_BAD_VALUE',
} as const;

/** Thrown by the checked parse/emit API; `field` names the header field at fault. */
export class EncapError extends WeftError {
  readonly field: string;

  constructor(code: string, field: string, message: string) {
    super(code, message);
    this.name = 'EncapError';
    this.field = field;
  }
}

export function truncated(what: string, needBytes: number, haveBytes: number): EncapError {
  return new EncapError(
    EncapErrorCode.truncated,
    what,
    `${what}: need ${needBytes} bytes, have ${haveBytes}`,
  );
}

export function malformed(field: string, message: string): EncapError {
  return new EncapError(EncapErrorCode.malformed, field, `${field}: ${message}`);
}

/** Checks a number written by emit fits its field; the checked API never truncates silently. */
export function checkRange(field: string, value: number, max: number): void {
  if (!Number.isInteger(value) || value < 0 || value > max) {
    throw new EncapError(
      EncapErrorCode.badValue,
      field,
      `${field}: ${value} is out of range (0..${max})`,
    );
  }
}
