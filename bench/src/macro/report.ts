import type { MachineInfo } from '../machine.js';

/** One measurement of a case, on fresh namespaces. */
export interface Sample {
  /** iperf3, one stream. */
  tcpBitsPerSecond: number;
  /** iperf3 -P 4. */
  tcp4BitsPerSecond: number;
  /** iperf3 -M 536: small segments, many packets per byte. */
  tcpSmallBitsPerSecond: number;
  /** 64-byte datagrams delivered per second. */
  udpPacketsPerSecond: number;
  rttMedianMs: number;
  rttP99Ms: number;
  /** The weft processes' CPU seconds per GB over the one-stream TCP run. */
  weftCpuSecondsPerGB?: number;
  weftPeakRssBytes?: number;
}

/** A ratio's median and range over the rounds. */
export interface Spread {
  median: number;
  min: number;
  max: number;
  values: number[];
}

/** One case's figures (medians over its rounds); undefined where a measure does not apply. */
export interface CaseResult {
  name: string;
  description: string;
  /** The case its ratios are to, when not the report's baseline (an L2 case's is kernel-l2). */
  baseline?: string;
  tcpBitsPerSecond: number;
  /** Each round's one-stream TCP, for the spread. */
  tcpRuns: number[];
  tcp4BitsPerSecond?: number;
  tcpSmallBitsPerSecond?: number;
  udpPacketsPerSecond: number;
  rttMedianMs: number;
  rttP99Ms: number;
  weftCpuSecondsPerGB?: number;
  weftPeakRssBytes?: number;
  /**
   * Against the kernel's VXLAN measured beside it (the mean of the kernel runs just before and
   * after, per round): throughput as ratios, RTT p50 as the difference in ms.
   */
  vsKernel?: {
    tcp: Spread;
    tcp4: Spread;
    tcpSmall: Spread;
    udp: Spread;
    rttDeltaMs: Spread;
  };
  samples?: Sample[];
  /** Set when the case could not run, with why; no figures are invented. */
  skipped?: string;
}

export interface MacroReport {
  machine: MachineInfo;
  settings: {
    tcpSeconds: number;
    shapeSeconds: number;
    udpSeconds: number;
    pings: number;
    rounds: number;
  };
  baseline: string;
  cases: CaseResult[];
}

function medianOf(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const n = sorted.length;
  if (n === 0) return Number.NaN;
  return n % 2 === 1 ? sorted[(n - 1) / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
}

export function spread(values: number[]): Spread {
  return {
    median: medianOf(values),
    min: Math.min(...values),
    max: Math.max(...values),
    values,
  };
}

/**
 * A case's result from its samples, one per round; with `kernel` (per round, the baseline's
 * samples beside it), its ratios to the kernel, round by round.
 */
export function summarize(
  name: string,
  description: string,
  samples: Sample[],
  kernel?: Sample[][],
): CaseResult {
  const pick = (f: (s: Sample) => number | undefined) =>
    samples.map(f).filter((v): v is number => v !== undefined && Number.isFinite(v));
  const result: CaseResult = {
    name,
    description,
    tcpBitsPerSecond: medianOf(pick((s) => s.tcpBitsPerSecond)),
    tcpRuns: pick((s) => s.tcpBitsPerSecond),
    tcp4BitsPerSecond: medianOf(pick((s) => s.tcp4BitsPerSecond)),
    tcpSmallBitsPerSecond: medianOf(pick((s) => s.tcpSmallBitsPerSecond)),
    udpPacketsPerSecond: medianOf(pick((s) => s.udpPacketsPerSecond)),
    rttMedianMs: medianOf(pick((s) => s.rttMedianMs)),
    rttP99Ms: medianOf(pick((s) => s.rttP99Ms)),
    samples,
  };
  const cpu = pick((s) => s.weftCpuSecondsPerGB);
  if (cpu.length > 0) result.weftCpuSecondsPerGB = medianOf(cpu);
  const rss = pick((s) => s.weftPeakRssBytes);
  if (rss.length > 0) result.weftPeakRssBytes = Math.max(...rss);
  // Rounds where the case and a kernel run beside it both have figures.
  const pairs = samples
    .map((s, r) => [s, kernel?.[r] ?? []] as const)
    .filter(([, k]) => k.length > 0);
  if (pairs.length > 0) {
    const mean = (k: readonly Sample[], f: (s: Sample) => number) =>
      k.reduce((a, s) => a + f(s), 0) / k.length;
    const ratio = (f: (s: Sample) => number) => spread(pairs.map(([s, k]) => f(s) / mean(k, f)));
    result.vsKernel = {
      tcp: ratio((s) => s.tcpBitsPerSecond),
      tcp4: ratio((s) => s.tcp4BitsPerSecond),
      tcpSmall: ratio((s) => s.tcpSmallBitsPerSecond),
      udp: ratio((s) => s.udpPacketsPerSecond),
      rttDeltaMs: spread(pairs.map(([s, k]) => s.rttMedianMs - mean(k, (x) => x.rttMedianMs))),
    };
  }
  return result;
}

const fmt = {
  gbps: (b: number) => `${(b / 1e9).toFixed(2)} Gbit/s`,
  kpps: (p: number) => `${(p / 1e3).toFixed(0)}k pps`,
  ms: (v: number) => `${v.toFixed(3)} ms`,
  ratio: (v: number) => (Number.isFinite(v) ? `${(v * 100).toFixed(1)}%` : 'n/a'),
};

/** The spread of a case's TCP runs: (max - min) / median. */
export function tcpSpread(c: CaseResult): number {
  if (c.tcpRuns.length < 2) return 0;
  const sorted = [...c.tcpRuns].sort((a, b) => a - b);
  return (sorted[sorted.length - 1] - sorted[0]) / sorted[Math.floor(sorted.length / 2)];
}

/** The case `c`'s ratios are to, from the same run: its own baseline or the report's; undefined if it did not run. */
export function baselineOf(report: MacroReport, c: CaseResult): CaseResult | undefined {
  const name = c.baseline ?? report.baseline;
  return report.cases.find((x) => x.name === name && !x.skipped);
}

/** A ratio as its median, and its range over the rounds when there are several. */
function ratioText(s: Spread | undefined, fallback: number): string {
  if (!s) return fmt.ratio(fallback);
  if (s.values.length < 2) return fmt.ratio(s.median);
  return `${fmt.ratio(s.median)} (${(s.min * 100).toFixed(0)}–${(s.max * 100).toFixed(0)})`;
}

/**
 * A plain-text table: each figure with its ratio to the baseline (kernel VXLAN): for an
 * interleaved case, the median of its per-round ratios to the kernel runs beside it, and their
 * range; otherwise to the baseline's median.
 */
export function table(report: MacroReport): string {
  const header = [
    'case',
    'TCP',
    'vs kernel',
    '4 streams vs kernel',
    'MSS 536 vs kernel',
    'UDP 64B',
    'vs kernel',
    'RTT p50',
    'vs kernel',
    'RTT p99',
    'weft CPU s/GB',
    'weft peak RSS',
  ];
  const rows = report.cases.map((c) => {
    if (c.skipped) return [c.name, `skipped: ${c.skipped}`, ...Array(header.length - 2).fill('')];
    const base = baselineOf(report, c);
    const isBase = c === base || report.cases.some((x) => x.baseline === c.name);
    const of = c.baseline ? ` of ${c.baseline}` : '';
    const over = (a: number | undefined, b: number | undefined) =>
      base && a !== undefined && b !== undefined ? a / b : Number.NaN;
    const v = c.vsKernel;
    const rttDelta = v ? v.rttDeltaMs.median : base ? c.rttMedianMs - base.rttMedianMs : Number.NaN;
    return [
      c.name,
      fmt.gbps(c.tcpBitsPerSecond),
      isBase ? '100.0%' : ratioText(v?.tcp, over(c.tcpBitsPerSecond, base?.tcpBitsPerSecond)) + of,
      isBase ? '100.0%' : ratioText(v?.tcp4, over(c.tcp4BitsPerSecond, base?.tcp4BitsPerSecond)),
      isBase
        ? '100.0%'
        : ratioText(v?.tcpSmall, over(c.tcpSmallBitsPerSecond, base?.tcpSmallBitsPerSecond)),
      fmt.kpps(c.udpPacketsPerSecond),
      isBase
        ? '100.0%'
        : ratioText(v?.udp, over(c.udpPacketsPerSecond, base?.udpPacketsPerSecond)) + of,
      fmt.ms(c.rttMedianMs),
      isBase || !Number.isFinite(rttDelta)
        ? ''
        : `${rttDelta >= 0 ? '+' : ''}${rttDelta.toFixed(3)} ms`,
      fmt.ms(c.rttP99Ms),
      c.weftCpuSecondsPerGB === undefined ? '-' : c.weftCpuSecondsPerGB.toFixed(2),
      c.weftPeakRssBytes === undefined ? '-' : `${(c.weftPeakRssBytes / 2 ** 20).toFixed(0)} MiB`,
    ];
  });
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(widths[i])).join(' | ')} |`;
  return [
    line(header),
    `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`,
    ...rows.map(line),
  ].join('\n');
}

function xmlEscape(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

/**
 * A self-contained SVG: one panel per measure, a bar per case, its length the ratio to the
 * kernel VXLAN of the same run (a line marks 100%), each labelled with its value.
 */
export function svgChart(report: MacroReport): string {
  const cases = report.cases.filter((c) => !c.skipped);
  const panels: {
    title: string;
    value: (c: CaseResult) => number;
    /** The interleaved ratio, where the case has one. */
    interleaved?: (c: CaseResult) => number | undefined;
    label: (c: CaseResult) => string;
    lowerIsBetter?: boolean;
  }[] = [
    {
      title: 'TCP throughput, one stream',
      value: (c) => c.tcpBitsPerSecond,
      interleaved: (c) => c.vsKernel?.tcp.median,
      label: (c) => fmt.gbps(c.tcpBitsPerSecond),
    },
    {
      title: 'TCP throughput, 4 streams',
      value: (c) => c.tcp4BitsPerSecond ?? Number.NaN,
      interleaved: (c) => c.vsKernel?.tcp4.median,
      label: (c) => fmt.gbps(c.tcp4BitsPerSecond ?? Number.NaN),
    },
    {
      title: 'TCP throughput, one stream, MSS 536',
      value: (c) => c.tcpSmallBitsPerSecond ?? Number.NaN,
      interleaved: (c) => c.vsKernel?.tcpSmall.median,
      label: (c) => fmt.gbps(c.tcpSmallBitsPerSecond ?? Number.NaN),
    },
    {
      title: 'UDP packets/s delivered, 64-byte payloads',
      value: (c) => c.udpPacketsPerSecond,
      interleaved: (c) => c.vsKernel?.udp.median,
      label: (c) => fmt.kpps(c.udpPacketsPerSecond),
    },
    {
      title: 'Round-trip time, median (lower is better)',
      value: (c) => c.rttMedianMs,
      label: (c) => fmt.ms(c.rttMedianMs),
      lowerIsBetter: true,
    },
  ];
  const barH = 22;
  const gap = 6;
  const left = 170;
  const width = 900;
  const plotW = width - left - 190;
  const panelH = 40 + cases.length * (barH + gap);
  const height = 70 + panels.length * (panelH + 20) + 30;
  const colors: Record<string, string> = {
    veth: '#7f8c8d',
    'kernel-vxlan': '#2c3e50',
    'weft-vxlan': '#e67e22',
    'weft-vxlan-kernel': '#d35400',
    'weft-udp': '#16a085',
    'kernel-l2': '#34495e',
    'weft-tap': '#8e44ad',
    'weft-tap-kernel': '#9b59b6',
  };
  const parts: string[] = [];
  parts.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="13">`,
  );
  parts.push(`<rect width="${width}" height="${height}" fill="#ffffff"/>`);
  parts.push(
    `<text x="20" y="30" font-size="18" font-weight="bold">weft vs the kernel, interleaved in one run (ratio to kernel-vxlan, or kernel-l2 for L2 cases, = 100%)</text>`,
  );
  parts.push(
    `<text x="20" y="50" fill="#555">${xmlEscape(`${report.machine.date.slice(0, 16)} · kernel ${report.machine.kernel} · ${report.machine.cpuCount} CPUs · Node ${report.machine.node} · weft ${report.machine.weftCommit}`)}</text>`,
  );
  panels.forEach((panel, p) => {
    const top = 70 + p * (panelH + 20);
    parts.push(`<text x="20" y="${top + 18}" font-weight="bold">${xmlEscape(panel.title)}</text>`);
    const ratios = cases.map((c) => {
      const base = baselineOf(report, c);
      return panel.interleaved?.(c) ?? (base ? panel.value(c) / panel.value(base) : Number.NaN);
    });
    const maxRatio = Math.max(1, ...ratios.filter(Number.isFinite));
    const x100 = left + (plotW * 1) / maxRatio;
    cases.forEach((c, i) => {
      const y = top + 30 + i * (barH + gap);
      const ratio = ratios[i];
      const w = Number.isFinite(ratio) ? Math.max(1, (plotW * ratio) / maxRatio) : 0;
      parts.push(
        `<text x="${left - 8}" y="${y + barH * 0.7}" text-anchor="end">${xmlEscape(c.name)}</text>`,
      );
      parts.push(
        `<rect x="${left}" y="${y}" width="${w.toFixed(1)}" height="${barH}" fill="${colors[c.name] ?? '#888'}"/>`,
      );
      parts.push(
        `<text x="${left + w + 6}" y="${y + barH * 0.7}">${xmlEscape(`${panel.label(c)} (${fmt.ratio(ratio)}${c.baseline ? ` of ${c.baseline}` : ''})`)}</text>`,
      );
    });
    parts.push(
      `<line x1="${x100}" x2="${x100}" y1="${top + 24}" y2="${top + panelH}" stroke="#c0392b" stroke-dasharray="4 3"/>`,
    );
  });
  parts.push(
    `<text x="20" y="${height - 12}" fill="#555">pnpm bench:macro · ${report.settings.rounds} rounds interleaved with the kernel · iperf3 TCP ${report.settings.tcpSeconds} s · UDP ${report.settings.udpSeconds} s · ${report.settings.pings} pings at 2 ms</text>`,
  );
  parts.push('</svg>');
  return `${parts.join('\n')}\n`;
}
