import { WeftError } from '@weft/core';
import { show, TunErrorCode } from './errors.js';

/**
 * Checks an options object's fields before anything reaches the addon, so a wrong type is an
 * ERR_TUN_BAD_OPTION naming the field, not a TypeError from deep inside.
 */
export class Options {
  private readonly fields: Record<string, unknown>;

  constructor(
    options: unknown,
    private readonly what: string,
  ) {
    if (options !== undefined && (typeof options !== 'object' || options === null))
      throw new WeftError(TunErrorCode.badOption, `${what} options must be an object`);
    this.fields = (options ?? {}) as Record<string, unknown>;
  }

  private bad(key: string, expected: string): WeftError {
    return new WeftError(
      TunErrorCode.badOption,
      `${this.what} option ${key} ${show(this.fields[key])} is not valid: use ${expected}`,
    );
  }

  string(key: string): string | undefined {
    const v = this.fields[key];
    if (v === undefined) return undefined;
    if (typeof v !== 'string') throw this.bad(key, 'a string');
    return v;
  }

  boolean(key: string): boolean | undefined {
    const v = this.fields[key];
    if (v === undefined) return undefined;
    if (typeof v !== 'boolean') throw this.bad(key, 'true or false');
    return v;
  }

  integer(key: string, min: number, max: number): number | undefined {
    const v = this.fields[key];
    if (v === undefined) return undefined;
    if (!Number.isInteger(v) || (v as number) < min || (v as number) > max)
      throw this.bad(key, `an integer from ${min} to ${max}`);
    return v as number;
  }

  oneOf<T extends string>(key: string, values: readonly T[]): T | undefined {
    const v = this.fields[key];
    if (v === undefined) return undefined;
    if (!values.includes(v as T)) throw this.bad(key, values.map((x) => `'${x}'`).join(' or '));
    return v as T;
  }
}
