import { execFileSync, spawn } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';
import { privileged } from '@weft/testkit';
import { describe, expect, it } from 'vitest';

const demo = fileURLToPath(new URL('../dist/demo.js', import.meta.url));

/** What a demo run left: its namespaces (named weft-demo-<pid>-<n>) and temp dirs. */
const leftovers = (pid: number) => ({
  namespaces: execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })
    .split('\n')
    .filter((l) => l.startsWith(`weft-demo-${pid}-`)),
  tempDirs: readdirSync(tmpdir()).filter((d) => d.startsWith('weft-demo-')).length,
});

describe.skipIf(!privileged('the three-node demo'))('pnpm demo', () => {
  it('builds the three-node cluster, and its reachability matrix is complete for every pair that should connect', () => {
    const out = execFileSync(process.execPath, [demo, '--json'], {
      encoding: 'utf8',
      timeout: 120_000,
      env: { ...process.env, WEFT_DEMO_IPERF_SECONDS: '1' },
    });
    const summary = JSON.parse(
      out
        .split('\n')
        .find((l) => l.startsWith('summary '))!
        .slice(8),
    ) as {
      leases: number;
      matrix: Record<string, Record<string, boolean>>;
      expected: Record<string, boolean>;
      failures: number;
      throughput: Record<string, number>;
      doctor: Record<string, { status: number; ok: number; warn: number; fail: number }>;
    };
    expect(summary.leases).toBe(3);
    let pairs = 0;
    for (const [pair, expected] of Object.entries(summary.expected)) {
      const [a, b] = pair.split('>');
      expect(summary.matrix[a][b], pair).toBe(expected);
      pairs++;
    }
    expect(pairs).toBe(30);
    // The four vxlan pods reach each other (12 ordered pairs), the two udp pods each other (2); udp <-> vxlan do not.
    expect(Object.values(summary.expected).filter(Boolean).length).toBe(12 + 2);
    expect(summary.failures).toBe(0);
    expect(Object.keys(summary.throughput).length).toBe(3);
    expect(Object.values(summary.throughput).every((bps) => bps > 1e6)).toBe(true);
    expect(out).toMatch(/a udp node reaches only udp nodes, as in flannel/);
    // Every pod came from the plugin: host-local's first two addresses after the bridge's.
    const podLines = out.match(/^ {4}pods (\S+), (\S+): CNI ADD through weft-cni/gm) ?? [];
    expect(podLines.length).toBe(3);
    for (const line of podLines) expect(line).toMatch(/pods 10\.244\.\d+\.2, 10\.244\.\d+\.3:/);
    expect(out).toMatch(/^ {2}10\.244\.\d+\.0\/24 +198\.18\.0\.11 +udp /m);
    expect(out).toMatch(
      /^ {2}10\.244\.\d+\.0\/24 +198\.18\.0\.12 +vxlan +([0-9a-f]{2}:){5}[0-9a-f]{2} /m,
    );
    // weftd doctor on every node of the healthy cluster: every check ✓, and the vxlan nodes' rows
    // (kernel VXLAN to userspace and back) ✓ on underlay, overlay and path MTU.
    expect(Object.keys(summary.doctor).sort()).toEqual(['n1', 'n2', 'n3']);
    for (const d of Object.values(summary.doctor)) {
      expect(d).toMatchObject({ status: 0, warn: 0, fail: 0 });
      expect(d.ok).toBeGreaterThan(15);
    }
    const rows = out.match(
      /^ {4}10\.244\.\d+\.0\/24 +198\.18\.0\.1[23] +✓ [\d.]+ ms +✓ answers +✓ 1450 +[\d.]+ ms$/gm,
    );
    expect(rows?.length).toBe(2);
    expect(out).toMatch(/^ {2}n1 \(198\.18\.0\.11\): \d+ checks ✓\n {4}no peer of this backend/m);
    expect(out).toMatch(/tearing down\n$/);
    expect(execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })).not.toMatch(/weft-demo-/);
  }, 150_000);

  it('--ipv6: a dual-stack cluster (kernel and userspace VXLAN), both matrices complete', () => {
    const out = execFileSync(process.execPath, [demo, '--ipv6', '--json'], {
      encoding: 'utf8',
      timeout: 150_000,
      env: { ...process.env, WEFT_DEMO_IPERF_SECONDS: '1' },
    });
    const summary = JSON.parse(
      out
        .split('\n')
        .find((l) => l.startsWith('summary '))!
        .slice(8),
    ) as {
      leases: number;
      matrix: Record<string, Record<string, boolean>>;
      matrix6: Record<string, Record<string, boolean>>;
      expected: Record<string, boolean>;
      failures: number;
      throughput: Record<string, number>;
      doctor: Record<string, { status: number; ok: number; warn: number; fail: number }>;
    };
    expect(summary.leases).toBe(3);
    // weftd doctor (its IPv4 checks) finds nothing wrong on a dual-stack node either.
    for (const d of Object.values(summary.doctor)) expect(d).toMatchObject({ status: 0, fail: 0 });
    // Every vxlan pod reaches every other, in each family: 30 ordered pairs twice.
    expect(Object.values(summary.expected).filter(Boolean).length).toBe(30);
    for (const m of [summary.matrix, summary.matrix6])
      for (const pair of Object.keys(summary.expected)) {
        const [a, b] = pair.split('>');
        expect(m[a][b], pair).toBe(true);
      }
    expect(summary.failures).toBe(0);
    expect(Object.keys(summary.throughput).length).toBe(4);
    expect(Object.values(summary.throughput).every((bps) => bps > 1e6)).toBe(true);
    expect(out).toMatch(/pod-to-pod reachability over IPv4/);
    expect(out).toMatch(/pod-to-pod reachability over IPv6/);
    // Each node's lease has both subnets, both public addresses and a VTEP MAC per family.
    expect(out).toMatch(
      /^ {2}10\.244\.\d+\.0\/24 +fd00:10:244:[0-9a-f]+::\/64 +198\.18\.0\.11 +2001:2::11 +vxlan +([0-9a-f]{2}:){5}[0-9a-f]{2} +([0-9a-f]{2}:){5}[0-9a-f]{2} /m,
    );
    const podLines = out.match(/^ {4}pods .*: CNI ADD through weft-cni/gm) ?? [];
    expect(podLines.length).toBe(3);
    for (const line of podLines)
      expect(line).toMatch(
        /pods 10\.244\.\d+\.2 fd00:10:244:[0-9a-f]+::2, 10\.244\.\d+\.3 fd00:10:244:[0-9a-f]+::3:/,
      );
    expect(out).toMatch(/tearing down\n$/);
    expect(execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })).not.toMatch(/weft-demo-/);
  }, 180_000);

  it('tears everything down on Ctrl-C (SIGINT to its process group, as a terminal sends it)', async () => {
    const tempDirsBefore = leftovers(0).tempDirs;
    const child = spawn(process.execPath, [demo], {
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
    });
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    const deadline = Date.now() + 60_000;
    while (!/n2 \(198\.18\.0\.12\) up/.test(out)) {
      if (Date.now() > deadline || child.exitCode !== null)
        throw new Error(`demo did not get going: ${out}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(leftovers(child.pid!).namespaces.length).toBeGreaterThan(0);
    process.kill(-child.pid!, 'SIGINT');
    expect(await exited).toBe(130);
    expect(out).toMatch(/Ctrl-C: tearing down\ntorn down\n$/);
    expect(leftovers(child.pid!)).toEqual({ namespaces: [], tempDirs: tempDirsBefore });
    expect(() => process.kill(-child.pid!, 0)).toThrow(); // nothing of its group still runs
  }, 90_000);
});
