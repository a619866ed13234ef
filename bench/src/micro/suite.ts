/**
 * One micro-benchmark suite per package. A case's `fn` runs `opsPerCall` operations per call, so
 * that operations of a few nanoseconds are not drowned in the timer's own cost; the harness
 * divides by it.
 */
export interface MicroCase {
  name: string;
  fn: () => void;
  /** Operations one call of fn performs (default 1). */
  opsPerCall?: number;
}

export interface MicroSuite {
  /** The package or area, e.g. `encap`. */
  name: string;
  cases: MicroCase[];
}

/** Keeps results alive so the JIT cannot prove a benchmarked computation is dead. */
export let blackhole = 0;
export function consume(value: number): void {
  blackhole = (blackhole + value) | 0;
}
