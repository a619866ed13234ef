import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  createTwoNodes,
  privileged,
  readPcap,
  sweepNetns,
  VECTORS_DIR,
  writePcap,
} from '../src/index.js';

describe('pcap', () => {
  it('reads every captured vector and writes it back byte for byte', () => {
    for (const name of [
      'kernel-vxlan-l3-8472.pcap',
      'kernel-vxlan-l2-4789.pcap',
      'flannel-udp-8285.pcap',
    ]) {
      const file = readFileSync(join(VECTORS_DIR, name));
      const pcap = readPcap(file);
      expect(pcap.linkType, name).toBe(1);
      expect(pcap.records.length, name).toBeGreaterThan(4);
      const again = readPcap(writePcap(pcap.records.map((r) => r.data)));
      expect(again.records.map((r) => r.data)).toEqual(pcap.records.map((r) => r.data));
    }
  });

  it('refuses a truncated file with the byte offset', () => {
    const file = writePcap([Buffer.alloc(60, 1)]);
    expect(() => readPcap(file.subarray(0, file.length - 1))).toThrow(
      /truncated record data at byte 40/,
    );
    expect(() =>
      readPcap(Buffer.from('0a0d0d0a00000000000000000000000000000000000000000000', 'hex')),
    ).toThrow(/bad magic/);
  });
});

describe.skipIf(!privileged('testkit namespace tests'))('namespaces', () => {
  afterAll(() => sweepNetns('tk'));

  it('joins two nodes over a veth and removes them', async () => {
    const nodes = createTwoNodes('tk');
    try {
      const { stdout } = await nodes.a.exec(['ping', '-c', '1', '-W', '2', nodes.ipB]);
      expect(stdout).toMatch(/1 received/);
    } finally {
      nodes.delete();
    }
    const { stdout } = await import('node:child_process').then((cp) => ({
      stdout: cp.execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' }),
    }));
    expect(stdout).not.toContain(nodes.a.name);
  });

  it("a sweep leaves namespaces it did not name alone, e.g. the example's weft-example-a-<pid>", async () => {
    const cp = await import('node:child_process');
    const other = `weft-example-a-${process.pid}`;
    cp.execFileSync('ip', ['netns', 'add', other]);
    try {
      sweepNetns();
      expect(cp.execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })).toContain(other);
    } finally {
      cp.execFileSync('ip', ['netns', 'del', other]);
    }
  });
});
