import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { privileged } from '@weft/testkit';
import { describe, expect, it } from 'vitest';

const demo = fileURLToPath(new URL('../dist/demo.js', import.meta.url));

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
    expect(Object.values(summary.throughput).every((bps) => bps > 1e6)).toBe(true);
    expect(out).toMatch(/a udp node reaches only udp nodes, as in flannel/);
    expect(execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })).not.toMatch(/weft-demo-/);
  }, 150_000);
});
