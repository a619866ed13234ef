import { WeftError } from '@weft/core';

/** Stable codes of the forwarding tables (address parsing errors come from @weft/core). */
export const FdbErrorCode = {
  familyMismatch: 'ERR_FDB_FAMILY_MISMATCH',
  badPort: 'ERR_FDB_BAD_PORT',
  badVni: 'ERR_FDB_BAD_VNI',
  badEntry: 'ERR_FDB_BAD_ENTRY',
  duplicate: 'ERR_FDB_DUPLICATE',
  badOption: 'ERR_FDB_BAD_OPTION',
} as const;

/** Checks a table option is a whole number at least `min`; a NaN would silently disable ageing. */
export function checkOption(name: string, value: number, min: number): number {
  if (!Number.isSafeInteger(value) || value < min) {
    throw fdbError(
      FdbErrorCode.badOption,
      `${name} ${value} must be a whole number of at least ${min}`,
    );
  }
  return value;
}

export function fdbError(code: string, message: string, cause?: unknown): WeftError {
  return new WeftError(code, message, cause === undefined ? undefined : { cause });
}

/**
 * Runs `fn` for each item of a batch, and rethrows the first failure as a WeftError that names
 * the entry, so a control plane can say which of a thousand lines was bad.
 */
export function validateEach<T, R>(
  what: string,
  items: readonly T[],
  describe: (item: T) => string,
  fn: (item: T) => R,
): R[] {
  return items.map((item, i) => {
    try {
      return fn(item);
    } catch (err) {
      const code = err instanceof WeftError ? err.code : FdbErrorCode.badEntry;
      const reason = err instanceof Error ? err.message : String(err);
      throw fdbError(
        code,
        `${what} entry ${i} (${describe(item)}): ${reason}; nothing in this batch was applied`,
        err,
      );
    }
  });
}
