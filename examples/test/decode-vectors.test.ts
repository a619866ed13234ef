import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { decodeVectors } from '../src/decode-vectors.js';

describe('decode-vectors example', () => {
  it('prints every captured frame file with its VNI, ports and inner addresses', () => {
    const lines: string[] = [];
    decodeVectors((l) => lines.push(l), 1000);
    const text = lines.join('\n');
    expect(text).toMatch(/kernel-vxlan-l3-8472\.pcap: 145 frames/);
    expect(text).toMatch(
      /198\.18\.0\.1:\d+ -> 198\.18\.0\.2:8472 vxlan vni 1 \| 02:00:00:00:01:01 -> 02:00:00:00:02:01 \| 10\.244\.1\.0 -> 10\.244\.2\.0 ICMP echo request ttl 64/,
    );
    expect(text).toMatch(/vxlan vni 42 .* ARP who has 10\.99\.0\.2\? tell 10\.99\.0\.1/);
    expect(text).toMatch(
      /198\.18\.0\.1:8285 -> 198\.18\.0\.2:8285 flannel-udp \| 10\.244\.1\.0 -> 10\.244\.2\.0 ICMP echo request ttl 63/,
    );
    expect(lines.filter((l) => /^\s+\d+\s/.test(l)).length).toBe(145 + 20 + 215);
  });

  it('runs as a program (node examples/dist/decode-vectors.js)', () => {
    const out = execFileSync(
      process.execPath,
      [fileURLToPath(new URL('../dist/decode-vectors.js', import.meta.url))],
      { encoding: 'utf8' },
    );
    expect(out).toMatch(/kernel-vxlan-l3-8472\.pcap: 145 frames \(first 12\)/);
    expect(out.split('\n').filter((l) => /^\s+\d+\s/.test(l)).length).toBe(12 * 3);
  });
});
