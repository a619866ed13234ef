import { isWeftError } from '@weft/core';

/** The error `fn` throws, which must be a WeftError: its code and message. */
export function failure(fn: () => unknown): { code: string; message: string } {
  try {
    fn();
  } catch (err) {
    if (!isWeftError(err)) throw new Error(`expected a WeftError, got ${String(err)}`);
    return { code: err.code, message: err.message };
  }
  throw new Error('expected a WeftError, but nothing was thrown');
}
