import { mkdirSync, writeFileSync } from 'node:fs';
import { Bench } from 'tinybench';
import { machineInfo } from '../machine.js';
import { suites } from './suites.js';

/**
 * Runs every micro suite (or those named on the command line, e.g. `encap fdb`) and prints
 * ns/op and ops/s with the 95% relative margin of error and p99, then writes JSON to
 * bench/results/micro.json.
 */
interface Row {
  suite: string;
  case: string;
  nsPerOp: number;
  opsPerSecond: number;
  rmePercent: number;
  p99NsPerOp: number;
  samples: number;
}

const timeMs = Number(process.env.WEFT_BENCH_TIME_MS ?? 500);
const wanted = process.argv.slice(2);
const rows: Row[] = [];

for (const suite of suites) {
  if (wanted.length > 0 && !wanted.includes(suite.name)) continue;
  const bench = new Bench({ name: suite.name, time: timeMs, warmupTime: 100 });
  for (const c of suite.cases) bench.add(c.name, c.fn);
  await bench.run();
  for (const task of bench.tasks) {
    const c = suite.cases.find((x) => x.name === task.name)!;
    const result = task.result;
    if (result.state !== 'completed') {
      throw new Error(
        `micro ${suite.name}/${task.name}: ${result.state}${'error' in result ? `: ${String(result.error)}` : ''}`,
      );
    }
    const ops = c.opsPerCall ?? 1;
    const nsPerOp = (result.latency.mean * 1e6) / ops;
    const row: Row = {
      suite: suite.name,
      case: c.name,
      nsPerOp,
      opsPerSecond: 1e9 / nsPerOp,
      rmePercent: result.latency.rme,
      p99NsPerOp: (result.latency.p99 * 1e6) / ops,
      samples: result.latency.samplesCount,
    };
    rows.push(row);
    console.log(
      `${`${row.suite}/${row.case}`.padEnd(64)} ${row.nsPerOp.toFixed(1).padStart(10)} ns/op ` +
        `±${row.rmePercent.toFixed(1).padStart(4)}%  ${formatOps(row.opsPerSecond).padStart(9)} ops/s  ` +
        `p99 ${row.p99NsPerOp.toFixed(1)} ns`,
    );
  }
}

function formatOps(n: number): string {
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)}M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)}k`;
  return n.toFixed(0);
}

const dir = new URL('../../results/', import.meta.url);
mkdirSync(dir, { recursive: true });
writeFileSync(
  new URL('micro.json', dir),
  `${JSON.stringify({ machine: machineInfo(), timeMs, rows }, null, 2)}\n`,
);
console.log(`\nwrote bench/results/micro.json (${rows.length} cases, ${timeMs} ms each)`);
