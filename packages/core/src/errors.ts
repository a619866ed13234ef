/**
 * The one error base of weft. Every checked public API throws a WeftError (or a subclass) with a
 * stable `code` that programs can switch on, and a message a person can act on.
 */
export class WeftError extends Error {
  readonly code: string;

  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'WeftError';
    this.code = code;
  }
}

/** Stable codes for malformed addresses; each package adds its own. */
export const ErrorCode = {
  badIp: 'ERR_BAD_IP',
  badMac: 'ERR_BAD_MAC',
  badCidr: 'ERR_BAD_CIDR',
  badPrefixLength: 'ERR_BAD_PREFIX_LENGTH',
  hostBitsSet: 'ERR_CIDR_HOST_BITS',
} as const;

/** True when `err` is a {@link WeftError}, and when `code` is given, one with that code. */
export function isWeftError(err: unknown, code?: string): err is WeftError {
  return err instanceof WeftError && (code === undefined || err.code === code);
}
