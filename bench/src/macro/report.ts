import type { MachineInfo } from '../machine.js';

/** One case's figures; undefined where a measure does not apply (no weft process). */
export interface CaseResult {
  name: string;
  description: string;
  /** The case its ratios are to, when not the report's baseline (an L2 case's is kernel-l2). */
  baseline?: string;
  tcpBitsPerSecond: number;
  /** Each TCP run, for the spread. */
  tcpRuns: number[];
  udpPacketsPerSecond: number;
  rttMedianMs: number;
  rttP99Ms: number;
  weftCpuSecondsPerGB?: number;
  weftPeakRssBytes?: number;
  /** Set when the case could not run, with why; no figures are invented. */
  skipped?: string;
}

export interface MacroReport {
  machine: MachineInfo;
  settings: { tcpSeconds: number; tcpRuns: number; udpSeconds: number; pings: number };
  baseline: string;
  cases: CaseResult[];
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

/** A plain-text table, each figure with its ratio to its kernel baseline (VXLAN, or L2) of the same run. */
export function table(report: MacroReport): string {
  const header = [
    'case',
    'TCP',
    'vs kernel',
    'spread',
    'UDP 64B',
    'vs kernel',
    'RTT p50',
    'RTT p99',
    'weft CPU s/GB',
    'weft peak RSS',
  ];
  const rows = report.cases.map((c) => {
    if (c.skipped) return [c.name, `skipped: ${c.skipped}`, '', '', '', '', '', '', '', ''];
    const base = baselineOf(report, c);
    return [
      c.name,
      fmt.gbps(c.tcpBitsPerSecond),
      base
        ? `${fmt.ratio(c.tcpBitsPerSecond / base.tcpBitsPerSecond)}${c.baseline ? ` of ${c.baseline}` : ''}`
        : 'n/a',
      `±${(tcpSpread(c) * 50).toFixed(1)}%`,
      fmt.kpps(c.udpPacketsPerSecond),
      base
        ? `${fmt.ratio(c.udpPacketsPerSecond / base.udpPacketsPerSecond)}${c.baseline ? ` of ${c.baseline}` : ''}`
        : 'n/a',
      fmt.ms(c.rttMedianMs),
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
    label: (c: CaseResult) => string;
    lowerIsBetter?: boolean;
  }[] = [
    {
      title: 'TCP throughput, one stream',
      value: (c) => c.tcpBitsPerSecond,
      label: (c) => fmt.gbps(c.tcpBitsPerSecond),
    },
    {
      title: 'UDP packets/s delivered, 64-byte payloads',
      value: (c) => c.udpPacketsPerSecond,
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
    `<text x="20" y="30" font-size="18" font-weight="bold">weft vs the kernel, same run (ratio to kernel-vxlan, or kernel-l2 for L2 cases, = 100%)</text>`,
  );
  parts.push(
    `<text x="20" y="50" fill="#555">${xmlEscape(`${report.machine.date.slice(0, 16)} · kernel ${report.machine.kernel} · ${report.machine.cpuCount} CPUs · Node ${report.machine.node} · weft ${report.machine.weftCommit}`)}</text>`,
  );
  panels.forEach((panel, p) => {
    const top = 70 + p * (panelH + 20);
    parts.push(`<text x="20" y="${top + 18}" font-weight="bold">${xmlEscape(panel.title)}</text>`);
    const ratios = cases.map((c) => {
      const base = baselineOf(report, c);
      return base ? panel.value(c) / panel.value(base) : Number.NaN;
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
    `<text x="20" y="${height - 12}" fill="#555">pnpm bench:macro · iperf3 TCP median of ${report.settings.tcpRuns} × ${report.settings.tcpSeconds} s · UDP ${report.settings.udpSeconds} s · ${report.settings.pings} pings at 2 ms</text>`,
  );
  parts.push('</svg>');
  return `${parts.join('\n')}\n`;
}
