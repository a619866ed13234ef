import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { haveTools, privileged } from '@weft/testkit';
import { describe, expect, it } from 'vitest';
import {
  codeKind,
  parseDsoShares,
  parseSymbolShares,
  softirqShares,
  splitByRole,
} from '../src/profile/split.js';

const RUN = fileURLToPath(new URL('../dist/profile/run.js', import.meta.url));

// Trimmed from `perf report --stdio` of a weft-vxlan-kernel TCP run on this kind of VM.
const DSO = `# Samples: 47K of event 'cpu-clock:ppp'
#
# Overhead      Pid:Command          Shared Object
# ........  .......................  ...................................
#
    44.76%    23416:node             [kernel.kallsyms]
    31.71%        0:swapper          [kernel.kallsyms]
    10.86%    23430:iperf3           [kernel.kallsyms]
     6.46%    23431:iperf3           [kernel.kallsyms]
     2.34%    23416:node             [JIT] tid 23416
     1.31%    23416:node             weft_tun.node
     1.16%    23416:node             node
     0.30%    23416:node             libc.so.6
     0.09%    23418:node             node
`;

const SYMBOLS = `#
    27.64%        0:swapper          [k] pv_native_safe_halt
     4.85%    23416:node             [k] _copy_from_iter
     1.12%    23416:node             [.] JS:*cut file:///work/main/packages/dataplane/dist/offload.js:312:8
     0.98%    23416:node             [.] weft::(anonymous namespace)::SumWords
`;

// `--children --percentage absolute -g none --sort pid,sym`, captured; iperf3's handle_softirqs
// line left out, as perf once left it out of weft's thread.
const CHILDREN = `# Children      Self      Pid:Command          Symbol
    39.20%     0.00%    25503:node             [.] __libc_start_call_main
    35.20%     0.10%    25503:node             [k] do_syscall_64
    24.27%     0.28%    25503:node             [k] handle_softirqs
    23.99%     0.13%    25503:node             [k] do_softirq.part.0
    23.64%     0.03%    25503:node             [k] net_rx_action
     0.69%     0.03%    25564:iperf3           [k] do_softirq.part.0
     0.61%     0.59%    25570:iperf3           [k] handle_softirqs
     0.61%     0.00%    25564:iperf3           [k] net_rx_action
     0.51%     0.36%        0:swapper          [k] handle_softirqs
`;

describe('bench:profile reading perf report', () => {
  it('splits every sample by thread and kind of code, and names JavaScript functions', () => {
    const shares = parseDsoShares(DSO);
    expect(shares).toHaveLength(9);
    expect(shares[4]).toEqual({ percent: 2.34, tid: 23416, comm: 'node', dso: '[JIT] tid 23416' });
    expect(
      [
        '[kernel.kallsyms]',
        '[JIT] tid 9',
        'weft_tun.node',
        'node',
        'libc.so.6',
        'libiperf.so.0',
      ].map(codeKind),
    ).toEqual(['kernel', 'js', 'addon', 'node', 'libc', 'other']);
    const roles = splitByRole(shares, (tid, comm) =>
      tid === 23416
        ? 'weft'
        : tid === 23418
          ? 'weft, other threads'
          : comm === 'swapper'
            ? 'idle'
            : comm,
    );
    expect(roles.map((r) => r.role)).toEqual(['weft', 'idle', 'iperf3', 'weft, other threads']);
    const weft = roles[0];
    expect(weft.percent).toBeCloseTo(49.87, 2);
    expect(weft.byKind).toEqual({
      kernel: 44.76,
      js: 2.34,
      addon: 1.31,
      node: 1.16,
      libc: 0.3,
      other: 0,
    });
    expect(roles[2].percent).toBeCloseTo(17.32, 2);
    const symbols = parseSymbolShares(SYMBOLS);
    expect(symbols.map((s) => [s.tid, s.kernel, s.symbol])).toEqual([
      [0, true, 'pv_native_safe_halt'],
      [23416, true, '_copy_from_iter'],
      [23416, false, 'JS:*cut file:///work/main/packages/dataplane/dist/offload.js:312:8'],
      [23416, false, 'weft::(anonymous namespace)::SumWords'],
    ]);
    expect([...softirqShares(CHILDREN)]).toEqual([
      [25503, 24.27],
      [25564, 0.69],
      [25570, 0.61],
      [0, 0.51],
    ]);
  });

  describe.skipIf(!privileged('bench:profile') || !haveTools('bench:profile', 'perf', 'iperf3'))(
    'on a live case',
    () => {
      it("profiles weft-vxlan-kernel under TCP: weft's thread, its JavaScript by name, and the peer kernel's receive run in its send calls", () => {
        const out = execFileSync(
          process.execPath,
          [RUN, 'weft-vxlan-kernel', 'tcp', '--seconds', '4', '--json'],
          { encoding: 'utf8', timeout: 90_000 },
        );
        const report = JSON.parse(out) as {
          result: string;
          roles: {
            role: string;
            percent: number;
            byKind: Record<string, number>;
            softirqPercent?: number;
          }[];
          weftSymbols: { role: string; symbol: string }[];
        };
        expect(report.result).toMatch(/^[\d.]+ Gbit\/s TCP \(one stream\)$/);
        const weft = report.roles.find((r) => r.role === 'weft (node a)');
        // One busy thread of two CPUs: a large share, but at most half of all CPU.
        expect(weft?.percent).toBeGreaterThan(10);
        expect(weft?.percent).toBeLessThanOrEqual(51);
        expect(weft?.byKind.kernel).toBeGreaterThan(0);
        // JavaScript is attributed (perf map files) rather than lost as unknown addresses.
        expect(weft?.byKind.js).toBeGreaterThan(0);
        // Over a veth the receiving kernel's work runs in the sender's send calls.
        expect(weft?.softirqPercent).toBeGreaterThan(0);
        expect(weft?.softirqPercent).toBeLessThanOrEqual(weft?.percent ?? 0);
        expect(report.roles.some((r) => r.role === 'iperf3')).toBe(true);
        expect(report.weftSymbols.length).toBeGreaterThan(0);
        expect(report.weftSymbols.every((s) => s.role.startsWith('weft (node a)'))).toBe(true);
        const left = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })
          .split('\n')
          .filter((l) => l.startsWith('weft-pf-'));
        expect(left).toEqual([]);
      }, 120_000);
    },
  );
});
