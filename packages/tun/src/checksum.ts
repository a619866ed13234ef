import { toWeftError } from './errors.js';
import { native } from './native.js';

interface ChecksumAddon {
  sumRanges(buf: Uint8Array, ops: Int32Array, count: number): void;
}

/** Words per sum op: the range's offset and length in the buffer, then the result. */
export const SumOp = { offset: 0, length: 1, result: 2, words: 3 } as const;

let addon: ChecksumAddon | undefined;

/**
 * Ones' complement sums (RFC 1071) of `count` byte ranges of `buf`, one native call for a batch:
 * op k is ops[k*3 + SumOp.offset] and ops[k*3 + SumOp.length]; its result, the 16-bit sum of those
 * bytes as big-endian words (an odd last byte padded with zero), folded and not complemented, goes
 * to ops[k*3 + SumOp.result]. The arithmetic of the IP, TCP and UDP checksums over payloads,
 * several times faster than JavaScript can do it; which bytes to sum, and what to add to them
 * (headers, pseudo-headers), stays the caller's. A wrong argument, or an op whose range lies
 * outside `buf`, is a WeftError (ERR_TUN_BAD_OPTION) naming it, before any result is written.
 */
export function sumRanges(buf: Uint8Array, ops: Int32Array, count: number): void {
  addon ??= native() as unknown as ChecksumAddon;
  try {
    addon.sumRanges(buf, ops, count);
  } catch (err) {
    throw toWeftError(err, 'sumRanges');
  }
}
