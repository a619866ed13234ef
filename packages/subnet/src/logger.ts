/** The logging the control plane does; pino's `(object, message)` signature, so a pino logger fits. */
export interface Logger {
  /** Detail for `--log-level debug`: each lease event, retry and resync. */
  debug?(obj: object, msg: string): void;
  /** Something an operator wants in the log: a lease acquired, renewed, released. */
  info(obj: object, msg: string): void;
  /** Something wrong that weft works around: a store unreachable for now, a malformed lease. */
  warn(obj: object, msg: string): void;
  /** Something that stops the control plane from doing its job. */
  error(obj: object, msg: string): void;
}

/** Writes JSON lines to stderr; what runs when no logger is given. */
export const consoleLogger: Logger = {
  info: (obj, msg) => console.error(JSON.stringify({ level: 'info', msg, ...obj })),
  warn: (obj, msg) => console.error(JSON.stringify({ level: 'warn', msg, ...obj })),
  error: (obj, msg) => console.error(JSON.stringify({ level: 'error', msg, ...obj })),
};

/** Discards everything (tests that assert on other things). */
export const silentLogger: Logger = { info() {}, warn() {}, error() {} };
