import { fileURLToPath } from 'node:url';
import {
  configureKernelVtep,
  createTwoNodes,
  haveTools,
  type Netns,
  privileged,
  startDataplane,
  sweepNetns,
  tcpTransfer,
} from '@weft/testkit';
import { afterAll, describe, expect, it } from 'vitest';
import { totalDrops } from '../src/index.js';

const TAG = 'dpflood';
const MAC_A = '02:00:00:00:01:01';
const MAC_B = '02:00:00:00:02:01';
const MB50 = 50 * 1024 * 1024;
const FLOODER = fileURLToPath(new URL('./fixtures/flood.mjs', import.meta.url));

interface FloodReport {
  total: number;
  sent: Record<string, number>;
  atLeast: Record<string, number>;
}

/**
 * The kernel's UDP counters in a namespace: datagrams it handed to sockets (weft's is the only
 * one), and those it dropped before a socket saw them.
 */
async function kernelUdp(ns: Netns): Promise<{ delivered: number; dropped: number }> {
  const snmp = (await ns.exec(['cat', '/proc/net/snmp'])).stdout.split('\n');
  const [names, values] = snmp.filter((l) => l.startsWith('Udp:'));
  const field = (name: string) => Number(values.split(/\s+/)[names.split(/\s+/).indexOf(name)]);
  return { delivered: field('InDatagrams'), dropped: field('RcvbufErrors') + field('InErrors') };
}

/** Every datagram weft took in, by what became of it. */
function accounted(c: { rxPackets: number; arpReceived: number; drops: Record<string, number> }) {
  return c.rxPackets + c.arpReceived + totalDrops(c);
}

/** Packets the pod side (the kernel of node a) took from weft's device, all and from outside node b's subnet. */
async function fromDevice(ns: Netns): Promise<{ all: number; foreign: number }> {
  const out = (await ns.exec(['iptables', '-w', '-t', 'raw', '-L', 'PREROUTING', '-v', '-n', '-x']))
    .stdout;
  const packets = (comment: string) =>
    Number(
      out
        .split('\n')
        .find((l) => l.includes(comment))
        ?.trim()
        .split(/\s+/)[0] ?? Number.NaN,
    );
  return { all: packets('weft-all'), foreign: packets('weft-foreign') };
}

describe.skipIf(
  !privileged('the hostile flood test') || !haveTools('the hostile flood test', 'iptables'),
)('2M hostile datagrams during a 50 MB transfer (weft vxlan against the kernel VXLAN)', () => {
  afterAll(() => sweepNetns(TAG));

  it('process alive, transfer intact, every datagram counted under a reason, heap flat, no foreign source in a pod', async () => {
    const nodes = createTwoNodes(TAG);
    try {
      // A stranger's address beside node b's, for datagrams from no known node.
      await nodes.b.exec(['ip', 'addr', 'add', '198.18.0.3/24', 'dev', 'veth0']);
      await configureKernelVtep({
        ns: nodes.b,
        localIp: nodes.ipB,
        vni: 1,
        port: 8472,
        vtepMac: MAC_B,
        vtepAddress: '10.244.2.0',
        remote: {
          subnet: '10.244.1.0/24',
          vtepAddress: '10.244.1.0',
          vtepMac: MAC_A,
          publicIp: nodes.ipA,
        },
      });
      const a = await startDataplane(
        nodes.a,
        {
          type: 'vxlan',
          deviceName: 'weft.1',
          vtepMac: MAC_A,
          vtepAddress: '10.244.1.0',
          network: '10.244.0.0/16',
          publicIp: nodes.ipA,
          // Room for the flood while the pump is busy, so the kernel drops nothing before weft counts it.
          socketBufferBytes: 64 << 20,
          nodes: [{ subnet: '10.244.2.0/24', publicIp: nodes.ipB, vtepMac: MAC_B }],
        },
        ['--expose-gc'],
      );
      // What weft hands node a's kernel: everything, and anything not from node b's pods.
      await nodes.a.sh(
        [
          'iptables -w -t raw -A PREROUTING -i weft.1 -m comment --comment weft-all',
          'iptables -w -t raw -A PREROUTING -i weft.1 ! -s 10.244.2.0/24 -m comment --comment weft-foreign',
        ].join('\n'),
      );
      const ping = await nodes.a.exec(['ping', '-c', '2', '-i', '0.2', '-W', '2', '10.244.2.0']);
      expect(ping.stdout).toMatch(/2 received/);
      const heapBefore = (await a.memory()).heapUsed;
      const udpBefore = await kernelUdp(nodes.a);
      const before = await a.counters();

      const flood = nodes.b.exec(
        [
          process.execPath,
          FLOODER,
          JSON.stringify({
            encap: 'vxlan',
            from: nodes.ipB,
            stranger: '198.18.0.3',
            to: nodes.ipA,
            port: 8472,
            total: 2_000_000,
            vni: 1,
            ourMac: MAC_A,
            peerMac: MAC_B,
            peerSubnet: '10.244.2.0/24',
            dst: '10.244.1.0',
          }),
        ],
        { timeoutMs: 180_000 },
      );
      const transfer = tcpTransfer(nodes.a, nodes.b, '10.244.1.0', 5301, MB50, 180_000);
      const [{ stdout }, t] = await Promise.all([flood, transfer]);
      const report = JSON.parse(stdout) as FloodReport;

      // The process is alive and the transfer intact.
      expect(a.child.exitCode).toBeNull();
      expect(t.receivedBytes).toBe(MB50);
      expect(t.receivedSha256).toBe(t.sentSha256);

      // Every datagram is counted under a reason: each one the kernel handed weft is received,
      // taken as ARP or dropped by reason; and every flood datagram, all malformed or hostile by
      // construction, is one of weft's drops, or one the kernel dropped first (and says so).
      const c = await a.counters();
      const udp = await kernelUdp(nodes.a);
      const kernel = udp.dropped - udpBefore.dropped;
      expect(accounted(c) - accounted(before)).toBe(udp.delivered - udpBefore.delivered);
      expect(totalDrops(c) - totalDrops(before) + kernel).toBe(report.total);
      expect(kernel).toBeLessThan(report.total / 100);
      const delta = (reason: string) => c.drops[reason] - before.drops[reason];
      for (const [reason, n] of Object.entries(report.atLeast))
        expect(delta(reason), reason).toBeGreaterThanOrEqual(kernel === 0 ? n : n - kernel);
      if (kernel === 0) {
        expect(delta('unknownSource')).toBe(report.atLeast.unknownSource);
        expect(delta('spoofedInner')).toBe(report.atLeast.spoofedInner);
        expect(delta('vlanTagged')).toBe(report.atLeast.vlanTagged);
      }
      // Nothing a random ARP sender claimed was learned.
      const tables = await a.tables();
      expect(tables.neighbors?.filter((n) => n.learned)).toEqual([]);

      // No packet from outside node b's subnet reached node a's kernel; the counting rule does count.
      const pod = await fromDevice(nodes.a);
      expect(pod.all).toBeGreaterThan(100);
      expect(pod.foreign).toBe(0);

      // The heap is flat: what the flood left behind after a full collection.
      const heapAfter = (await a.memory()).heapUsed;
      expect(heapAfter - heapBefore).toBeLessThan(4 << 20);

      // And good traffic right after the flood is delivered.
      const again = await nodes.a.exec(['ping', '-c', '2', '-i', '0.2', '-W', '2', '10.244.2.0']);
      expect(again.stdout).toMatch(/2 received/);
      await a.stop();
    } finally {
      nodes.delete();
    }
  }, 240_000);
});
