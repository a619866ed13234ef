import { WeftError } from '@weft/core';

/** The CNI spec's well-known error codes (SPEC.md section 5, "Error"), and libcni's catch-all. */
export const CniCode = {
  incompatibleVersion: 1,
  unsupportedField: 2,
  unknownContainer: 3,
  invalidEnvironment: 4,
  ioFailure: 5,
  decodingFailure: 6,
  invalidConfig: 7,
  tryAgainLater: 11,
  notAvailable: 50,
  limitedConnectivity: 51,
  /** libcni's ErrInternal: what skel prints for an error without a code of its own. */
  internal: 999,
} as const;

/** weft's stable string code for each numeric CNI code; a delegate's own code maps to ERR_CNI_DELEGATE. */
const weftCodes: Record<number, string> = {
  1: 'ERR_CNI_INCOMPATIBLE_VERSION',
  2: 'ERR_CNI_UNSUPPORTED_FIELD',
  3: 'ERR_CNI_UNKNOWN_CONTAINER',
  4: 'ERR_CNI_BAD_ENVIRONMENT',
  5: 'ERR_CNI_IO',
  6: 'ERR_CNI_DECODE',
  7: 'ERR_CNI_BAD_CONFIG',
  11: 'ERR_CNI_TRY_AGAIN_LATER',
  50: 'ERR_CNI_NOT_AVAILABLE',
  51: 'ERR_CNI_LIMITED_CONNECTIVITY',
  999: 'ERR_CNI_INTERNAL',
};

/** The spec's error result: what a plugin prints on stdout when it fails. */
export interface CniErrorResult {
  cniVersion: string;
  code: number;
  msg: string;
  details?: string;
}

/**
 * A CNI failure: `cniCode` and `msg` are what the runtime sees (the spec's error result),
 * `details` says what to do. `code` is weft's stable string for the same condition.
 */
export class CniError extends WeftError {
  readonly cniCode: number;
  readonly msg: string;
  readonly details: string;

  constructor(cniCode: number, msg: string, details = '', options?: { cause?: unknown }) {
    super(weftCodes[cniCode] ?? 'ERR_CNI_DELEGATE', details ? `${msg}: ${details}` : msg, options);
    this.name = 'CniError';
    this.cniCode = cniCode;
    this.msg = msg;
    this.details = details;
  }

  /** The error as the CNI result a plugin prints on stdout (SPEC.md, "Error"). */
  toResult(cniVersion: string): CniErrorResult {
    const out: CniErrorResult = { cniVersion, code: this.cniCode, msg: this.msg };
    if (this.details) out.details = this.details;
    return out;
  }
}
