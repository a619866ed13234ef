import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import {
  configureKernelVtep,
  createTwoNodes,
  haveTools,
  type Netns,
  privileged,
  startDataplane,
  sweepNetns,
  tcpTransfer,
  tempDir,
  VECTORS_DIR,
  waitFor,
} from '@weft/testkit';
import { afterAll, describe, expect, it } from 'vitest';
import { startUdpNodes } from './udp-nodes.js';

const TAG = 'dpdf';
const MB5 = 5 * 1024 * 1024;

/** The outer IPv4 DF bit of every UDP frame to `port` in a pcap, by source address. */
function dfBits(file: string, port: number): Map<string, Set<string>> {
  const out = execFileSync(
    'tshark',
    [
      '-r',
      file,
      '-Y',
      `udp.dstport == ${port}`,
      '-T',
      'fields',
      '-e',
      'ip.src',
      '-e',
      'ip.flags.df',
    ],
    { encoding: 'utf8', env: { ...process.env, HOME: '/tmp' }, maxBuffer: 64 << 20 },
  );
  const bySource = new Map<string, Set<string>>();
  for (const line of out.split('\n').filter(Boolean)) {
    // Inside VXLAN the inner header has a DF bit too: the first is the outer one.
    const [src, df] = line.split('\t').map((f) => f.split(',')[0]);
    if (!bySource.has(src)) bySource.set(src, new Set());
    bySource.get(src)!.add(df);
  }
  return bySource;
}

/** Captures UDP to `port` on node a's veth while `traffic` runs (headers only). */
async function capture(ns: Netns, port: number, dir: string, traffic: () => Promise<void>) {
  const file = join(dir, `df-${port}-${Date.now()}.pcap`);
  const dumpcap = ns.spawn([
    'dumpcap',
    '-q',
    '-P',
    '-s',
    '96',
    '-i',
    'veth0',
    '-f',
    `udp port ${port}`,
    '-w',
    file,
  ]);
  let err = '';
  dumpcap.stderr?.on('data', (d: Buffer) => {
    err += d.toString();
  });
  await waitFor(() => err.includes('Capturing on'), 'dumpcap to start');
  const exited = new Promise((r) => dumpcap.once('exit', r));
  try {
    await traffic();
    await new Promise((r) => setTimeout(r, 300));
  } finally {
    dumpcap.kill('SIGINT');
    await exited;
  }
  return file;
}

describe.skipIf(
  !privileged('the outer DF bit tests') ||
    !haveTools('the outer DF bit tests', 'dumpcap', 'tshark'),
)('the outer DF bit, on a capture', () => {
  afterAll(() => sweepNetns(TAG));

  it("flannel's proxy sets DF on every datagram (the vector)", () => {
    const bits = dfBits(join(VECTORS_DIR, 'flannel-udp-8285.pcap'), 8285);
    for (const set of bits.values()) expect([...set]).toEqual(['1']);
    const kernel = dfBits(join(VECTORS_DIR, 'kernel-vxlan-l3-8472.pcap'), 8472);
    // And the kernel's VXLAN (flannel's vxlan backend) clears it: its default, `df unset`.
    for (const set of kernel.values()) expect([...set]).toEqual(['0']);
  });

  for (const offload of [true, false]) {
    it(`udp backend, offloads ${offload ? 'on' : 'off'}: every datagram leaves with DF, as flannel's`, async () => {
      const nodes = createTwoNodes(TAG);
      const dir = tempDir('weft-df-');
      try {
        const { a, b } = await startUdpNodes(nodes, { offload });
        expect(a.ready.offload).toBe(offload);
        const file = await capture(nodes.a, 8285, dir.path, async () => {
          // Both ways: a sends the data (GSO super-packets with offloads), b the acknowledgements.
          const t = await tcpTransfer(nodes.b, nodes.a, '10.244.2.0', 5401, MB5);
          expect(t.receivedSha256).toBe(t.sentSha256);
        });
        const bits = dfBits(file, 8285);
        expect([...bits.keys()].sort()).toEqual([nodes.ipA, nodes.ipB]);
        for (const [src, set] of bits) expect([...set], src).toEqual(['1']);
        await a.stop();
        await b.stop();
      } finally {
        nodes.delete();
        dir.remove();
      }
    });

    it(`vxlan backend, offloads ${offload ? 'on' : 'off'}: DF clear on every datagram, as the kernel's VXLAN beside it`, async () => {
      const nodes = createTwoNodes(TAG);
      const dir = tempDir('weft-df-');
      try {
        await configureKernelVtep({
          ns: nodes.b,
          localIp: nodes.ipB,
          vni: 1,
          port: 8472,
          vtepMac: '02:00:00:00:02:01',
          vtepAddress: '10.244.2.0',
          remote: {
            subnet: '10.244.1.0/24',
            vtepAddress: '10.244.1.0',
            vtepMac: '02:00:00:00:01:01',
            publicIp: nodes.ipA,
          },
        });
        const a = await startDataplane(nodes.a, {
          type: 'vxlan',
          deviceName: 'weft.1',
          vtepMac: '02:00:00:00:01:01',
          vtepAddress: '10.244.1.0',
          network: '10.244.0.0/16',
          publicIp: nodes.ipA,
          offload,
          nodes: [{ subnet: '10.244.2.0/24', publicIp: nodes.ipB, vtepMac: '02:00:00:00:02:01' }],
        });
        expect(a.ready.offload).toBe(offload);
        const file = await capture(nodes.a, 8472, dir.path, async () => {
          const t = await tcpTransfer(nodes.b, nodes.a, '10.244.2.0', 5402, MB5);
          expect(t.receivedSha256).toBe(t.sentSha256);
        });
        const bits = dfBits(file, 8472);
        // weft's frames and the kernel's, in one capture: the same bit, clear.
        expect([...(bits.get(nodes.ipA) ?? [])]).toEqual(['0']);
        expect([...(bits.get(nodes.ipB) ?? [])]).toEqual(['0']);
        await a.stop();
      } finally {
        nodes.delete();
        dir.remove();
      }
    });
  }
});
