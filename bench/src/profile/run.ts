import { execFileSync, spawn } from 'node:child_process';
import { readdirSync, rmSync } from 'node:fs';
import { cpus } from 'node:os';
import { sweepNetns } from '@weft/testkit';
import { machineInfo } from '../machine.js';
import type { CaseRuntime } from '../macro/cases.js';
import { pingRun, tcpRun, udpRun } from '../macro/measure.js';
import {
  parseDsoShares,
  parseSymbolShares,
  possibleSamples,
  type RoleSplit,
  sampleSeconds,
  softirqShares,
  splitByRole,
} from './split.js';

/**
 * Where the CPU goes while one macro case carries one load: the case is built as the macro
 * benchmark builds it, the load runs, and `perf record -a -g` samples every CPU in the middle of
 * it. The report splits all CPU time by who used it (each weft process's main thread and its other
 * threads, iperf3, ping, idle) and by what ran (the kernel, weft's JavaScript, the addon, Node,
 * libc), says how much of each weft thread's time was the kernel's network receive work run
 * inside its system calls (softirqs: over a veth, the receiving node's kernel does its work in the
 * sender's send call), and lists the heaviest functions in weft's processes by name.
 *
 *   node bench/dist/profile/run.js <case> [tcp|tcp4|tcp536|udp|ping] [--seconds N] [--json] [--keep FILE]
 *
 * `--keep FILE` keeps perf's data (and the JavaScript symbol maps) for `perf report -i FILE`.
 * Needs root and perf (Debian: linux-perf). These VMs have no hardware counters: perf samples
 * with the cpu-clock timer.
 */
const args = process.argv.slice(2);
const flag = (name: string) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
const positional = args.filter(
  (a, i) => !a.startsWith('--') && !['--seconds', '--keep'].includes(args[i - 1] ?? ''),
);
const [caseName, load = 'tcp'] = positional;
const seconds = Number(flag('--seconds') ?? 8);
const json = args.includes('--json');
const LOADS = ['tcp', 'tcp4', 'tcp536', 'udp', 'ping'];

function fail(message: string): never {
  console.error(`bench:profile: ${message}`);
  process.exit(2);
}

if (!caseName) fail('name a case: node bench/dist/profile/run.js <case> [load]');
if (!LOADS.includes(load)) fail(`load ${load}: one of ${LOADS.join(', ')}`);
if (!Number.isFinite(seconds) || seconds < 3 || seconds > 120)
  fail(`--seconds ${flag('--seconds')}: from 3 to 120`);
if (process.getuid?.() !== 0) fail('needs root (namespaces, perf -a)');
try {
  execFileSync('perf', ['--version'], { stdio: 'ignore' });
} catch {
  fail('perf is not installed (Debian: apt-get install linux-perf)');
}

// weft's processes write /tmp/perf-<pid>.map, so perf names their JavaScript functions.
process.env.WEFT_BENCH_PERF_MAP = '1';
const { CASES } = await import('../macro/cases.js');
const c = CASES.find((x) => x.name === caseName);
if (!c) fail(`unknown case ${caseName}; cases: ${CASES.map((x) => x.name).join(', ')}`);

const TAG = 'pf';
/** Samples per second per CPU. */
const FREQUENCY = 999;
const keep = flag('--keep');
const dataFile = keep ?? `/tmp/weft-profile-${process.pid}.data`;
let rt: CaseRuntime | undefined;
const cleanup = () => {
  rt?.nodes.delete();
  sweepNetns(TAG);
};
for (const signal of ['SIGINT', 'SIGTERM'] as const)
  process.once(signal, () => {
    cleanup();
    process.exit(130);
  });

/** Runs the load; what it measured, in words. */
async function runLoad(r: CaseRuntime): Promise<string> {
  const { a, b } = r.nodes;
  switch (load) {
    case 'udp':
      return `${((await udpRun(a, b, r.serverAddress, seconds)) / 1e3).toFixed(0)}k packets/s delivered (64-byte UDP)`;
    case 'ping': {
      // One ping every 2 ms: the load lasts `seconds`, as the others do, around perf's window.
      const rtts = await pingRun(a, r.serverAddress, seconds * 500);
      return `RTT p50 ${rtts[Math.floor(rtts.length / 2)]} ms over ${rtts.length} pings`;
    }
    default: {
      const shape = load === 'tcp4' ? { streams: 4 } : load === 'tcp536' ? { mss: 536 } : {};
      const t = await tcpRun(a, b, r.serverAddress, seconds, shape);
      return `${(t.bitsPerSecond / 1e9).toFixed(2)} Gbit/s TCP (${load === 'tcp' ? 'one stream' : load === 'tcp4' ? '4 streams' : 'MSS 536'})`;
    }
  }
}

function perfReport(extra: string[]): string {
  return execFileSync('perf', ['report', '-i', dataFile, '--stdio', ...extra], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'ignore'],
    maxBuffer: 256 * 2 ** 20,
  });
}

interface ProfileReport {
  case: string;
  load: string;
  result: string;
  machine: ReturnType<typeof machineInfo>;
  roles: (RoleSplit & { softirqPercent?: number })[];
  weftSymbols: { role: string; percent: number; symbol: string }[];
}

async function profile(): Promise<ProfileReport> {
  rt = await c!.setup(TAG);
  const { a, b } = rt.nodes;
  await a.exec(['ping', '-c', '3', '-i', '0.1', '-W', '2', rt.serverAddress]);
  // Warm: the throughput paths are compiled before anything is measured, as in bench:macro.
  await tcpRun(a, b, rt.serverAddress, 1);
  const window = Math.max(1, seconds - 2);
  let perf: ReturnType<typeof spawn> | undefined;
  const started = new Promise<void>((resolve) =>
    setTimeout(() => {
      perf = spawn(
        'perf',
        [
          'record',
          '-a',
          '-g',
          '-F',
          String(FREQUENCY),
          '-o',
          dataFile,
          '--',
          'sleep',
          String(window),
        ],
        { stdio: 'ignore' },
      );
      resolve();
    }, 1000),
  );
  const result = await runLoad(rt);
  await started;
  if (perf && perf.exitCode === null) await new Promise((r) => perf!.once('exit', r));
  // Threads by role, read before the case is torn down.
  const roleByTid = new Map<number, string>();
  const mainTids: [number, string][] = [];
  for (const [i, w] of rt.weft.entries()) {
    const pid = w.child.pid!;
    const name = `weft (node ${'ab'[i] ?? i})`;
    for (const t of readdirSync(`/proc/${pid}/task`)) {
      const tid = Number(t);
      roleByTid.set(tid, tid === pid ? name : `${name}, other threads`);
    }
    mainTids.push([pid, name]);
  }
  const roleOf = (tid: number, comm: string) =>
    roleByTid.get(tid) ??
    (comm === 'swapper' ? 'idle' : comm === 'iperf3' || comm === 'ping' ? comm : 'other');
  // Shares of all CPU: perf may record nothing on an idle CPU, so idle is what no one used.
  const sampled = sampleSeconds(perfReport(['--header-only'])) ?? window;
  const possible = possibleSamples(FREQUENCY, sampled, cpus().length);
  const shares = parseDsoShares(
    perfReport(['--no-children', '-n', '-g', 'none', '--sort', 'pid,dso']),
  );
  const recorded = shares.reduce((sum, s) => sum + (s.samples ?? 0), 0);
  const busy = splitByRole(shares, roleOf, possible).filter((r) => r.role !== 'idle');
  const used = busy.reduce((sum, r) => sum + r.percent, 0);
  const roles: ProfileReport['roles'] = [
    ...busy,
    {
      role: 'idle',
      percent: Math.max(0, 100 - used),
      byKind: { kernel: 0, js: 0, addon: 0, node: 0, libc: 0, other: 0 },
    },
  ];
  const softirq = softirqShares(
    perfReport(['--children', '--percentage', 'absolute', '-g', 'none', '--sort', 'pid,sym']),
  );
  for (const [tid, name] of mainTids) {
    const row = roles.find((r) => r.role === name);
    // Its children share is of the samples recorded: scaled to all CPU like the rest.
    if (row) row.softirqPercent = (recorded / possible) * (softirq.get(tid) ?? 0);
  }
  const weftSymbols = parseSymbolShares(
    perfReport(['--no-children', '-g', 'none', '--sort', 'pid,sym']),
  )
    .filter((s) => roleByTid.has(s.tid))
    .slice(0, 15)
    .map((s) => ({
      role: roleByTid.get(s.tid)!,
      percent: (recorded / possible) * s.percent,
      symbol: `${s.kernel ? '[kernel] ' : ''}${s.symbol.replace(/ file:\/\/\S*\/packages\//, ' ')}`,
    }));
  // The maps name JavaScript in the kept data; without --keep, neither is needed after this.
  if (!keep) {
    for (const [pid] of mainTids) rmSync(`/tmp/perf-${pid}.map`, { force: true });
    rmSync(dataFile, { force: true });
  }
  return {
    case: c!.name,
    load,
    result,
    machine: machineInfo(),
    roles,
    weftSymbols,
  };
}

const pct = (n: number) => `${n.toFixed(1)}%`.padStart(7);

try {
  const report = await profile();
  if (json) console.log(JSON.stringify(report, null, 2));
  else {
    const cpuCount = report.machine.cpuCount;
    console.log(`${report.case}, ${report.load}: ${report.result}`);
    console.log(
      `CPU while it ran (perf -a, ${cpuCount} CPUs; 100% = every CPU busy), by who and by what ran:`,
    );
    console.log(
      `  ${'who'.padEnd(34)}${'all'.padStart(7)}${'kernel'.padStart(8)}${'JS'.padStart(7)}${'addon'.padStart(7)}${'node'.padStart(7)}${'libc'.padStart(7)}  softirq in its calls`,
    );
    for (const r of report.roles) {
      if (r.percent < 0.5) continue;
      const k = r.byKind;
      const soft =
        r.softirqPercent === undefined
          ? ''
          : `  ${r.softirqPercent.toFixed(1)}% (${((100 * r.softirqPercent) / r.percent).toFixed(0)}% of its time)`;
      console.log(
        `  ${r.role.padEnd(34)}${pct(r.percent)}${pct(k.kernel).padStart(8)}${pct(k.js)}${pct(k.addon)}${pct(k.node)}${pct(k.libc)}${soft}`,
      );
    }
    console.log("Heaviest functions in weft's processes (share of all CPU):");
    for (const s of report.weftSymbols)
      console.log(`  ${pct(s.percent)}  ${s.role.padEnd(30)} ${s.symbol}`);
    if (keep) console.log(`perf data: ${keep} (perf report -i ${keep})`);
  }
} finally {
  cleanup();
}
