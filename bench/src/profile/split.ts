/**
 * Reading `perf report --stdio` output into where the CPU went: per thread, per kind of code
 * (kernel, weft's JavaScript, the addon, Node and libc), and the kernel's softirq work that ran
 * inside a thread's system calls. Pure functions, so the parsing is tested on captured output.
 */

/** What ran: the kernel, JIT-compiled JavaScript, weft's addon, Node itself (V8, libuv), libc, else. */
export type CodeKind = 'kernel' | 'js' | 'addon' | 'node' | 'libc' | 'other';

/** One line of `--sort pid,dso`: a thread's share of the samples in one object. */
export interface DsoShare {
  /** Of the samples perf recorded (which may leave out idle CPUs). */
  percent: number;
  /** With `-n`: how many samples. */
  samples?: number;
  tid: number;
  comm: string;
  dso: string;
}

/** One line of `--sort pid,sym`. */
export interface SymbolShare {
  percent: number;
  tid: number;
  comm: string;
  kernel: boolean;
  symbol: string;
}

const LINE = /^\s*([\d.]+)%\s+(\d+):(\S+)\s+(.+?)\s*$/;
const LINE_N = /^\s*([\d.]+)%\s+(\d+)\s+(\d+):(\S+)\s+(.+?)\s*$/;

/** `--no-children -g none --sort pid,dso` lines (with or without `-n`); headers are skipped. */
export function parseDsoShares(text: string): DsoShare[] {
  const out: DsoShare[] = [];
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue;
    const n = LINE_N.exec(line);
    if (n) {
      out.push({
        percent: Number(n[1]),
        samples: Number(n[2]),
        tid: Number(n[3]),
        comm: n[4],
        dso: n[5],
      });
      continue;
    }
    const m = LINE.exec(line);
    if (m) out.push({ percent: Number(m[1]), tid: Number(m[2]), comm: m[3], dso: m[4] });
  }
  return out;
}

/**
 * How many samples perf would have taken had every CPU been sampled all along (`frequency` per
 * second per CPU): the denominator of a share of all CPU. perf may record no samples on an idle
 * CPU, so the samples it did record are not that denominator.
 */
export function possibleSamples(frequency: number, seconds: number, cpus: number): number {
  return frequency * seconds * cpus;
}

/** The sampled time from `perf report --header-only` ("sample duration : 6002.530 ms"), in s. */
export function sampleSeconds(header: string): number | undefined {
  const m = /sample duration\s*:\s*([\d.]+)\s*ms/.exec(header);
  return m ? Number(m[1]) / 1000 : undefined;
}

/** `--no-children -g none --sort pid,sym` lines (`[k]` kernel, `[.]` user space). */
export function parseSymbolShares(text: string): SymbolShare[] {
  const out: SymbolShare[] = [];
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue;
    const m = LINE.exec(line);
    if (!m) continue;
    const sym = /^\[(k|\.)\]\s+(.*)$/.exec(m[4]);
    if (!sym) continue;
    out.push({
      percent: Number(m[1]),
      tid: Number(m[2]),
      comm: m[3],
      kernel: sym[1] === 'k',
      symbol: sym[2],
    });
  }
  return out;
}

/** The kind of code an object perf names holds. */
export function codeKind(dso: string): CodeKind {
  if (dso === '[kernel.kallsyms]' || dso.startsWith('[kernel')) return 'kernel';
  if (dso.startsWith('[JIT]') || /^perf-\d+\.map$/.test(dso)) return 'js';
  if (dso === 'weft_tun.node') return 'addon';
  if (dso === 'node' || dso.startsWith('libstdc++') || dso === '[vdso]') return 'node';
  if (dso.startsWith('libc.so') || dso.startsWith('ld-linux') || dso.startsWith('libm.so'))
    return 'libc';
  return 'other';
}

/** A role's share of all CPU (percent of every CPU's samples: two CPUs fully busy is 100%). */
export interface RoleSplit {
  role: string;
  percent: number;
  byKind: Record<CodeKind, number>;
}

/**
 * Sums the shares by role (`roleOf(tid, comm)`), each split by kind of code, heaviest first. With
 * `possible` (see possibleSamples) and sample counts, each share is of all CPU; otherwise of the
 * samples recorded.
 */
export function splitByRole(
  shares: DsoShare[],
  roleOf: (tid: number, comm: string) => string,
  possible?: number,
): RoleSplit[] {
  const roles = new Map<string, RoleSplit>();
  for (const line of shares) {
    const s =
      possible && line.samples !== undefined
        ? { ...line, percent: (100 * line.samples) / possible }
        : line;
    const role = roleOf(s.tid, s.comm);
    let r = roles.get(role);
    if (!r) {
      r = {
        role,
        percent: 0,
        byKind: { kernel: 0, js: 0, addon: 0, node: 0, libc: 0, other: 0 },
      };
      roles.set(role, r);
    }
    r.percent += s.percent;
    r.byKind[codeKind(s.dso)] += s.percent;
  }
  return [...roles.values()].sort((a, b) => b.percent - a.percent);
}

/**
 * Where the kernel enters its softirq work, outermost first (`__do_softirq` on kernels before
 * 6.10; the compiler may split or rename a frame, as `do_softirq.part.0`).
 */
const SOFTIRQ_ENTRIES = ['handle_softirqs', '__do_softirq', 'do_softirq', 'net_rx_action'];

/**
 * From `--children --percentage absolute -g none --sort pid,sym`: per thread, the share of all
 * recorded samples spent in softirq work inside it (over a veth, the receiving node's kernel
 * work run in the sender's system calls). The entry points nest, so the largest is the share;
 * taking the largest also survives perf leaving one of them out of a thread's list (seen:
 * handle_softirqs missing while do_softirq and net_rx_action were there).
 */
export function softirqShares(text: string): Map<number, number> {
  const out = new Map<number, number>();
  for (const line of text.split('\n')) {
    const m = /^\s*([\d.]+)%\s+[\d.]+%\s+(\d+):\S+\s+\[k\]\s+(\S+)\s*$/.exec(line);
    if (!m) continue;
    const symbol = m[3].replace(/\.(?:part|cold|constprop|isra)\b.*$/, '');
    if (!SOFTIRQ_ENTRIES.includes(symbol)) continue;
    const tid = Number(m[2]);
    out.set(tid, Math.max(out.get(tid) ?? 0, Number(m[1])));
  }
  return out;
}
