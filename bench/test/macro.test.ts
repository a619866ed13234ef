import { execFileSync, spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { privileged, tempDir, waitFor } from '@weft/testkit';
import { describe, expect, it } from 'vitest';

const RUN = fileURLToPath(new URL('../dist/macro/run.js', import.meta.url));

function weftNamespaces(): string[] {
  return execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })
    .split('\n')
    .filter((l) => l.startsWith('weft-bm-'));
}

/** Live iperf3 processes (pgrep exits 1 when there are none). */
function iperfProcesses(): number {
  try {
    return Number(execFileSync('pgrep', ['-c', '-r', 'R,S,D', 'iperf3'], { encoding: 'utf8' }));
  } catch {
    return 0;
  }
}

describe.skipIf(!privileged('the macro benchmark harness'))('bench:macro', () => {
  it('runs the veth and kernel-vxlan cases in quick mode and writes sane JSON and an SVG', () => {
    const out = tempDir('weft-bench-');
    try {
      const stdout = execFileSync(
        process.execPath,
        [RUN, '--quick', '--cases', 'veth,kernel-vxlan,weft-udp', '--out', `${out.path}/`],
        { encoding: 'utf8', timeout: 120_000 },
      );
      expect(stdout).toMatch(/\| kernel-vxlan +\| [\d.]+ Gbit\/s +\| 100\.0%/);
      const report = JSON.parse(readFileSync(`${out.path}/macro-latest.json`, 'utf8'));
      expect(report.machine.cpuCount).toBeGreaterThan(0);
      expect(report.machine.weftCommit).toMatch(/^[0-9a-f]{7}/);
      expect(report.cases.map((c: { name: string }) => c.name)).toEqual([
        'veth',
        'kernel-vxlan',
        'weft-udp',
      ]);
      for (const c of report.cases) {
        expect(c.skipped).toBeUndefined();
        expect(c.tcpBitsPerSecond).toBeGreaterThan(1e7);
        expect(c.udpPacketsPerSecond).toBeGreaterThan(1000);
        expect(c.rttMedianMs).toBeGreaterThan(0);
      }
      const weft = report.cases[2];
      expect(weft.weftCpuSecondsPerGB).toBeGreaterThan(0);
      expect(weft.weftPeakRssBytes).toBeGreaterThan(10 * 2 ** 20);
      expect(weft.tcp4BitsPerSecond).toBeGreaterThan(1e7);
      expect(weft.tcpSmallBitsPerSecond).toBeGreaterThan(1e7);
      // Interleaved: kernel, veth, kernel, weft-udp, kernel; each ratio to the kernel runs beside it.
      const order = [...stdout.matchAll(/\] ([\w-]+) \(round 1\/1\): setting up/g)].map(
        (m) => m[1],
      );
      expect(order).toEqual(['kernel-vxlan', 'veth', 'kernel-vxlan', 'weft-udp', 'kernel-vxlan']);
      const kernel = report.cases[1].samples;
      expect(kernel.length).toBe(3);
      const mean = (a: number, b: number) => (a + b) / 2;
      expect(weft.vsKernel.tcp.median).toBeCloseTo(
        weft.tcpBitsPerSecond / mean(kernel[1].tcpBitsPerSecond, kernel[2].tcpBitsPerSecond),
        6,
      );
      expect(weft.vsKernel.udp.values.length).toBe(1);
      const svg = readFileSync(`${out.path}/macro-latest.svg`, 'utf8');
      expect(svg).toMatch(/^<svg xmlns="http:\/\/www.w3.org\/2000\/svg"/);
      expect(svg).toContain('kernel-vxlan');
      expect(weftNamespaces()).toEqual([]);
    } finally {
      out.remove();
    }
  }, 150_000);

  it('runs the weft-wireguard and wireguard-go cases in quick mode (both carry traffic)', () => {
    const out = tempDir('weft-bench-');
    try {
      execFileSync(
        process.execPath,
        [RUN, '--quick', '--cases', 'weft-wireguard,wireguard-go', '--out', `${out.path}/`],
        { encoding: 'utf8', timeout: 120_000 },
      );
      const report = JSON.parse(readFileSync(`${out.path}/macro-latest.json`, 'utf8'));
      expect(report.cases.map((c: { name: string }) => c.name)).toEqual([
        'weft-wireguard',
        'wireguard-go',
      ]);
      for (const c of report.cases) {
        expect(c.skipped).toBeUndefined();
        expect(c.tcpBitsPerSecond).toBeGreaterThan(1e7);
        expect(c.udpPacketsPerSecond).toBeGreaterThan(1000);
      }
      expect(report.cases[0].weftCpuSecondsPerGB).toBeGreaterThan(0);
      expect(weftNamespaces()).toEqual([]);
    } finally {
      out.remove();
    }
  }, 150_000);

  for (const [baseline, weft, what] of [
    ['kernel-l2', 'weft-tap', 'the L2 cases'],
    ['kernel-vxlan6', 'weft-vxlan6', 'the IPv6 cases (IPv6 over IPv6)'],
  ] as const)
    it(`runs ${what} in quick mode: both carry traffic, ${weft} measured against ${baseline}`, () => {
      const out = tempDir('weft-bench-');
      try {
        const stdout = execFileSync(
          process.execPath,
          [RUN, '--quick', '--cases', `${baseline},${weft}`, '--out', `${out.path}/`],
          { encoding: 'utf8', timeout: 120_000 },
        );
        expect(stdout).toMatch(
          new RegExp(`\\| ${weft} +\\| [\\d.]+ Gbit/s +\\| [\\d.]+% of ${baseline}`),
        );
        const report = JSON.parse(readFileSync(`${out.path}/macro-latest.json`, 'utf8'));
        expect(
          report.cases.map((c: { name: string; baseline?: string }) => [c.name, c.baseline]),
        ).toEqual([
          [baseline, undefined],
          [weft, baseline],
        ]);
        for (const c of report.cases) {
          expect(c.skipped).toBeUndefined();
          expect(c.tcpBitsPerSecond).toBeGreaterThan(1e7);
          expect(c.udpPacketsPerSecond).toBeGreaterThan(1000);
          expect(c.rttMedianMs).toBeGreaterThan(0);
        }
        expect(report.cases[1].weftCpuSecondsPerGB).toBeGreaterThan(0);
        expect(readFileSync(`${out.path}/macro-latest.svg`, 'utf8')).toContain(`of ${baseline}`);
        expect(weftNamespaces()).toEqual([]);
      } finally {
        out.remove();
      }
    }, 150_000);

  it('cleans up every namespace and child on Ctrl-C in the middle of a case', async () => {
    const out = tempDir('weft-bench-');
    try {
      const child = spawn(
        process.execPath,
        [RUN, '--quick', '--cases', 'kernel-vxlan', '--out', `${out.path}/`],
        { stdio: 'pipe' },
      );
      let text = '';
      child.stdout.on('data', (d: Buffer) => {
        text += d.toString();
      });
      await new Promise<void>((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`no TCP run started: ${text}`)), 30_000);
        child.stdout.on('data', () => {
          if (text.includes('TCP run')) {
            clearTimeout(t);
            resolve();
          }
        });
      });
      expect(weftNamespaces().length).toBe(2);
      child.kill('SIGINT');
      const code = await new Promise((r) => child.once('exit', r));
      expect(code).toBe(130);
      expect(text).toContain('SIGINT: cleaning up');
      expect(weftNamespaces()).toEqual([]);
      await waitFor(() => iperfProcesses() === 0, 'iperf3 to be gone', { timeoutMs: 3000 });
      expect(existsSync(`${out.path}/macro-latest.json`)).toBe(false);
    } finally {
      out.remove();
    }
  }, 60_000);
});
