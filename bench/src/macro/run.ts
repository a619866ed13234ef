import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { sweepNetns } from '@weft/testkit';
import { machineInfo } from '../machine.js';
import { type BenchCase, CASES, type CaseRuntime } from './cases.js';
import { percentile, pingRun, processUsage, tcpRun, udpRun } from './measure.js';
import {
  type CaseResult,
  type MacroReport,
  type Sample,
  summarize,
  svgChart,
  table,
} from './report.js';

/**
 * The macro benchmark: every case on a fresh pair of node namespaces, reported as ratios to the
 * kernel's VXLAN (the L2 cases' to the kernel's bridge + VXLAN, kernel-l2). The kernel's own speed
 * drifts on shared machines, so each baseline is measured beside its cases, interleaved: each
 * round runs kernel, case, kernel, case, ..., kernel for each baseline in turn (the
 * order of the cases reversed every other round), and each case's ratio in a round is to the mean
 * of the kernel runs just before and just after it; the report gives each ratio's median and
 * range over the rounds. Flags: --quick (one short round, for tests), --rounds N (default 3),
 * --cases a,b (a subset; a case's ratios need its baseline among them), --out DIR (default
 * bench/results).
 */
const args = process.argv.slice(2);
const flag = (name: string) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
const quick = args.includes('--quick');
const rounds = Number(flag('--rounds') ?? (quick ? 1 : 3));
if (!Number.isInteger(rounds) || rounds < 1) {
  console.error(`--rounds ${flag('--rounds')}: use a whole number of rounds, 1 or more`);
  process.exit(2);
}
const settings = quick
  ? { tcpSeconds: 1, shapeSeconds: 1, udpSeconds: 1, pings: 50, rounds }
  : { tcpSeconds: 4, shapeSeconds: 3, udpSeconds: 4, pings: 300, rounds };
const wanted = flag('--cases')?.split(',');
const outDir = flag('--out') ?? new URL('../../results/', import.meta.url).pathname;
const TAG = 'bm';
const BASELINE = 'kernel-vxlan';

const cases = wanted ? CASES.filter((c) => wanted.includes(c.name)) : CASES;
if (wanted && cases.length !== wanted.length) {
  console.error(
    `unknown case in ${wanted.join(',')}; cases: ${CASES.map((c) => c.name).join(', ')}`,
  );
  process.exit(2);
}

let active: CaseRuntime | undefined;
function cleanup(): void {
  active?.nodes.delete();
  sweepNetns(TAG);
}
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    console.log(`\n${signal}: cleaning up`);
    cleanup();
    process.exit(130);
  });
}

function progress(text: string): void {
  console.log(`[${new Date().toISOString().slice(11, 19)}] ${text}`);
}

/** One measurement of a case on fresh namespaces: every figure once. */
async function measure(c: BenchCase, round: number): Promise<Sample> {
  const at = `${c.name} (round ${round + 1}/${settings.rounds})`;
  progress(`${at}: setting up (${c.description})`);
  const rt = await c.setup(TAG);
  active = rt;
  try {
    const { a, b } = rt.nodes;
    // Warm the path (ARP, first packets) before measuring.
    await a.exec(['ping', '-c', '3', '-i', '0.1', '-W', '2', rt.serverAddress]);
    const usage = () => rt.weft.reduce((s, w) => s + processUsage(w.child.pid!).cpuSeconds, 0);
    progress(`${at}: TCP run, one stream (${settings.tcpSeconds} s)`);
    const cpu0 = usage();
    const tcp = await tcpRun(a, b, rt.serverAddress, settings.tcpSeconds);
    const cpu = usage() - cpu0;
    progress(`${at}: TCP, 4 streams and MSS 536 (${settings.shapeSeconds} s each)`);
    const tcp4 = await tcpRun(a, b, rt.serverAddress, settings.shapeSeconds, { streams: 4 });
    const tcpSmall = await tcpRun(a, b, rt.serverAddress, settings.shapeSeconds, { mss: 536 });
    progress(`${at}: UDP 64-byte flood (${settings.udpSeconds} s)`);
    const udp = await udpRun(a, b, rt.serverAddress, settings.udpSeconds);
    progress(`${at}: ${settings.pings} pings`);
    const rtts = await pingRun(a, rt.serverAddress, settings.pings);
    const sample: Sample = {
      tcpBitsPerSecond: tcp.bitsPerSecond,
      tcp4BitsPerSecond: tcp4.bitsPerSecond,
      tcpSmallBitsPerSecond: tcpSmall.bitsPerSecond,
      udpPacketsPerSecond: udp,
      rttMedianMs: percentile(rtts, 50),
      rttP99Ms: percentile(rtts, 99),
    };
    if (rt.weft.length > 0) {
      sample.weftCpuSecondsPerGB = cpu / (tcp.bytes / 1e9);
      sample.weftPeakRssBytes = Math.max(
        ...rt.weft.map((w) => processUsage(w.child.pid!).peakRssBytes),
      );
    }
    progress(
      `${at}: TCP ${(tcp.bitsPerSecond / 1e9).toFixed(2)} Gbit/s (4 streams ${(tcp4.bitsPerSecond / 1e9).toFixed(2)}, MSS 536 ${(tcpSmall.bitsPerSecond / 1e9).toFixed(2)}), UDP ${(udp / 1e3).toFixed(0)}k pps, RTT p50 ${sample.rttMedianMs} ms${sample.weftCpuSecondsPerGB === undefined ? '' : `, weft ${sample.weftCpuSecondsPerGB.toFixed(2)} CPU s/GB`}`,
    );
    for (const w of rt.weft) await w.stop();
    return sample;
  } finally {
    rt.nodes.delete();
    active = undefined;
  }
}

/** A measurement, or why it could not be made (no figure is invented). */
async function attempt(c: BenchCase, round: number): Promise<Sample | string> {
  try {
    return await measure(c, round);
  } catch (err) {
    progress(`${c.name}: failed: ${(err as Error).message}`);
    return (err as Error).message.split('\n')[0];
  }
}

/** The kernel case each case's ratios are to: its own (an L2 case's is kernel-l2) or kernel-vxlan. */
const baselineName = (c: BenchCase) => c.baseline ?? BASELINE;
const isBaseline = (c: BenchCase) => cases.some((x) => x !== c && baselineName(x) === c.name);
/** Each baseline that runs, with the cases measured beside it; cases whose baseline is not run go alone. */
const groups = cases
  .filter((c) => c.name === BASELINE || isBaseline(c))
  .map((base) => ({
    base,
    others: cases.filter((c) => c !== base && !isBaseline(c) && baselineName(c) === base.name),
  }));
const alone = cases.filter((c) => !groups.some((g) => g.base === c || g.others.includes(c)));
const samples = new Map<string, Sample[]>(cases.map((c) => [c.name, []]));
/** Per case and round, the kernel runs just before and after it. */
const neighbours = new Map<string, Sample[][]>(cases.map((c) => [c.name, []]));
const failures = new Map<string, string>();

function record(c: BenchCase, s: Sample | string): Sample | undefined {
  if (typeof s === 'string') {
    failures.set(c.name, s);
    return undefined;
  }
  samples.get(c.name)?.push(s);
  return s;
}

try {
  for (let round = 0; round < settings.rounds; round++) {
    for (const { base, others } of groups) {
      const order = round % 2 === 0 ? others : [...others].reverse();
      let before = record(base, await attempt(base, round));
      for (const c of order) {
        record(c, await attempt(c, round));
        const after = record(base, await attempt(base, round));
        neighbours.get(c.name)?.push([before, after].filter((s): s is Sample => s !== undefined));
        before = after;
      }
    }
    for (const c of alone) record(c, await attempt(c, round));
  }
} finally {
  cleanup();
}

const results: CaseResult[] = cases.map((c) => {
  const mine = samples.get(c.name) ?? [];
  if (mine.length === 0)
    return {
      name: c.name,
      description: c.description,
      baseline: c.baseline,
      tcpBitsPerSecond: 0,
      tcpRuns: [],
      udpPacketsPerSecond: 0,
      rttMedianMs: 0,
      rttP99Ms: 0,
      skipped: failures.get(c.name) ?? 'no measurement',
    };
  const result = summarize(
    c.name,
    c.description,
    mine,
    isBaseline(c) || c.name === BASELINE ? undefined : neighbours.get(c.name),
  );
  if (c.baseline) result.baseline = c.baseline;
  return result;
});

const report: MacroReport = {
  machine: machineInfo(),
  settings,
  baseline: BASELINE,
  cases: results,
};
mkdirSync(outDir, { recursive: true });
const stamp = report.machine.date.replace(/[:.]/g, '-');
const json = `${JSON.stringify(report, null, 2)}\n`;
writeFileSync(`${outDir}/macro-${stamp}.json`, json);
writeFileSync(`${outDir}/macro-latest.json`, json);
writeFileSync(`${outDir}/macro-latest.svg`, svgChart(report));
console.log(`\n${table(report)}\n`);
console.log(`wrote ${join(outDir, 'macro-latest.json')}, macro-latest.svg and macro-${stamp}.json`);
if (results.some((r) => r.skipped)) process.exitCode = 1;
