import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { sweepNetns } from '@weft/testkit';
import { machineInfo } from '../machine.js';
import { type BenchCase, CASES, type CaseRuntime } from './cases.js';
import { median, percentile, pingRun, processUsage, tcpRun, udpRun } from './measure.js';
import { type CaseResult, type MacroReport, svgChart, table } from './report.js';

/**
 * The macro benchmark: every case on a fresh pair of node namespaces, measured side by side in
 * one run and reported as ratios to the kernel's VXLAN. Flags: --quick (short runs, for tests),
 * --cases a,b (a subset), --out DIR (default bench/results).
 */
const args = process.argv.slice(2);
const flag = (name: string) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
const quick = args.includes('--quick');
const settings = quick
  ? { tcpSeconds: 1, tcpRuns: 1, udpSeconds: 1, pings: 50 }
  : { tcpSeconds: 4, tcpRuns: 3, udpSeconds: 4, pings: 300 };
const wanted = flag('--cases')?.split(',');
const outDir = flag('--out') ?? new URL('../../results/', import.meta.url).pathname;
const TAG = 'bm';

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

async function runCase(c: BenchCase): Promise<CaseResult> {
  progress(`${c.name}: setting up (${c.description})`);
  const rt = await c.setup(TAG);
  active = rt;
  try {
    const { a, b } = rt.nodes;
    // Warm the path (ARP, first packets) before measuring.
    await a.exec(['ping', '-c', '3', '-i', '0.1', '-W', '2', rt.serverAddress]);
    const before = rt.weft.map((w) => processUsage(w.child.pid!));
    const tcpRuns: number[] = [];
    let tcpBytes = 0;
    for (let r = 0; r < settings.tcpRuns; r++) {
      progress(`${c.name}: TCP run ${r + 1}/${settings.tcpRuns} (${settings.tcpSeconds} s)`);
      const run = await tcpRun(a, b, rt.serverAddress, settings.tcpSeconds);
      tcpRuns.push(run.bitsPerSecond);
      tcpBytes += run.bytes;
    }
    const after = rt.weft.map((w) => processUsage(w.child.pid!));
    progress(`${c.name}: UDP 64-byte flood (${settings.udpSeconds} s)`);
    const udp = await udpRun(a, b, rt.serverAddress, settings.udpSeconds);
    progress(`${c.name}: ${settings.pings} pings`);
    const rtts = await pingRun(a, rt.serverAddress, settings.pings);
    const peak = rt.weft.map((w) => processUsage(w.child.pid!).peakRssBytes);
    const cpu = after.reduce((s, u, i) => s + u.cpuSeconds - before[i].cpuSeconds, 0);
    const result: CaseResult = {
      name: c.name,
      description: c.description,
      baseline: c.baseline,
      tcpBitsPerSecond: median(tcpRuns),
      tcpRuns,
      udpPacketsPerSecond: udp,
      rttMedianMs: percentile(rtts, 50),
      rttP99Ms: percentile(rtts, 99),
    };
    if (rt.weft.length > 0) {
      result.weftCpuSecondsPerGB = cpu / (tcpBytes / 1e9);
      result.weftPeakRssBytes = Math.max(...peak);
    }
    progress(
      `${c.name}: TCP ${(result.tcpBitsPerSecond / 1e9).toFixed(2)} Gbit/s, UDP ${(udp / 1e3).toFixed(0)}k pps, RTT p50 ${result.rttMedianMs} ms`,
    );
    for (const w of rt.weft) await w.stop();
    return result;
  } finally {
    rt.nodes.delete();
    active = undefined;
  }
}

const results: CaseResult[] = [];
try {
  for (const c of cases) {
    try {
      results.push(await runCase(c));
    } catch (err) {
      progress(`${c.name}: failed: ${(err as Error).message}`);
      results.push({
        name: c.name,
        description: c.description,
        baseline: c.baseline,
        tcpBitsPerSecond: 0,
        tcpRuns: [],
        udpPacketsPerSecond: 0,
        rttMedianMs: 0,
        rttP99Ms: 0,
        skipped: (err as Error).message.split('\n')[0],
      });
    }
  }
} finally {
  cleanup();
}

const report: MacroReport = {
  machine: machineInfo(),
  settings,
  baseline: 'kernel-vxlan',
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
