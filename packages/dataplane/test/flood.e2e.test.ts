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
import { kernelVtep6, V6, weftVtep6 } from './kernel-vtep6.js';

const TAG = 'dpflood';
const MAC_A = '02:00:00:00:01:01';
const MAC_B = '02:00:00:00:02:01';

/**
 * Each family end to end: weft's VTEP on node a, the kernel's on node b (flannel's programming),
 * a stranger's address beside node b's, and the addresses the flood and the transfer use.
 */
const FAMILIES = {
  4: {
    device: 'weft.1',
    pod: '10.244.1.0',
    peerPod: '10.244.2.0',
    peerSubnet: '10.244.2.0/24',
    underlay: { a: '', b: '', stranger: '198.18.0.3' },
  },
  6: {
    device: 'flannel-v6.1',
    pod: V6.vtepA,
    peerPod: V6.vtepB,
    peerSubnet: V6.subnetB,
    underlay: { a: V6.a, b: V6.b, stranger: 'fd00::3' },
  },
} as const;
const MB50 = 50 * 1024 * 1024;
const FLOODER = fileURLToPath(new URL('./fixtures/flood.mjs', import.meta.url));

interface FloodReport {
  total: number;
  sent: Record<string, number>;
  atLeast: Record<string, number>;
}

/**
 * The kernel's UDP counters in a namespace, over IPv4 or IPv6: datagrams it handed to sockets
 * (weft's is the only one), and those it dropped before a socket saw them.
 */
async function kernelUdp(
  ns: Netns,
  family: 4 | 6,
): Promise<{ delivered: number; dropped: number }> {
  let field: (name: string) => number;
  if (family === 4) {
    const snmp = (await ns.exec(['cat', '/proc/net/snmp'])).stdout.split('\n');
    const [names, values] = snmp.filter((l) => l.startsWith('Udp:'));
    field = (name) => Number(values.split(/\s+/)[names.split(/\s+/).indexOf(name)]);
  } else {
    const snmp6 = (await ns.exec(['cat', '/proc/net/snmp6'])).stdout;
    field = (name) => Number(new RegExp(`^Udp6${name}\\s+(\\d+)$`, 'm').exec(snmp6)?.[1]);
  }
  return { delivered: field('InDatagrams'), dropped: field('RcvbufErrors') + field('InErrors') };
}

type Counts = { rxPackets: number; arpReceived: number; drops: Record<string, number> };

/**
 * Drops of what came in from the underlay: all but those of packets from the device (no route,
 * neighbor or FDB entry), where the kernel's own link-local multicast goes (IPv6: MLD reports,
 * router solicitations).
 */
function dropsIn(c: Counts) {
  return totalDrops(c) - c.drops.noRoute - c.drops.noNeighbor - c.drops.noFdb;
}

/** Every datagram weft took in, by what became of it. */
function accounted(c: Counts) {
  return c.rxPackets + c.arpReceived + dropsIn(c);
}

/** Packets the pod side (the kernel of node a) took from weft's device, all and from outside node b's subnet. */
async function fromDevice(ns: Netns, family: 4 | 6): Promise<{ all: number; foreign: number }> {
  const tables = family === 4 ? 'iptables' : 'ip6tables';
  const out = (await ns.exec([tables, '-w', '-t', 'raw', '-L', 'PREROUTING', '-v', '-n', '-x']))
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
  !privileged('the hostile flood test') ||
    !haveTools('the hostile flood test', 'iptables', 'ip6tables', 'ethtool'),
)('2M hostile datagrams during a 50 MB transfer (weft vxlan against the kernel VXLAN)', () => {
  afterAll(() => sweepNetns(TAG));

  for (const family of [4, 6] as const)
    it(`IPv${family}: process alive, transfer intact, every datagram counted under a reason, heap flat, no foreign source in a pod`, async () => {
      const f = FAMILIES[family];
      const nodes = createTwoNodes(TAG);
      try {
        let a: Awaited<ReturnType<typeof startDataplane>>;
        // Room for the flood while the pump is busy, so the kernel drops nothing before weft counts it.
        const room = { socketBufferBytes: 64 << 20 };
        if (family === 4) {
          await nodes.b.exec(['ip', 'addr', 'add', `${f.underlay.stranger}/24`, 'dev', 'veth0']);
          await configureKernelVtep({
            ns: nodes.b,
            localIp: nodes.ipB,
            vni: 1,
            port: 8472,
            vtepMac: MAC_B,
            vtepAddress: f.peerPod,
            remote: {
              subnet: '10.244.1.0/24',
              vtepAddress: f.pod,
              vtepMac: MAC_A,
              publicIp: nodes.ipA,
            },
          });
          a = await startDataplane(
            nodes.a,
            {
              type: 'vxlan',
              deviceName: f.device,
              vni: 1,
              port: 8472,
              vtepMac: MAC_A,
              ...room,
              vtepAddress: f.pod,
              network: '10.244.0.0/16',
              publicIp: nodes.ipA,
              nodes: [{ subnet: f.peerSubnet, publicIp: nodes.ipB, vtepMac: MAC_B }],
            },
            ['--expose-gc'],
          );
        } else {
          await kernelVtep6(nodes, MAC_A, MAC_B);
          await nodes.b.exec([
            'ip',
            'addr',
            'add',
            `${f.underlay.stranger}/64`,
            'dev',
            'veth0',
            'nodad',
          ]);
          a = await startDataplane(nodes.a, { ...weftVtep6(MAC_A, MAC_B), ...room }, [
            '--expose-gc',
          ]);
        }
        // What weft hands node a's kernel: everything, and anything not from node b's pods.
        const tables = family === 4 ? 'iptables' : 'ip6tables';
        await nodes.a.sh(
          [
            `${tables} -w -t raw -A PREROUTING -i ${f.device} -m comment --comment weft-all`,
            `${tables} -w -t raw -A PREROUTING -i ${f.device} ! -s ${f.peerSubnet} -m comment --comment weft-foreign`,
          ].join('\n'),
        );
        const ping = () =>
          nodes.a.exec(['ping', `-${family}`, '-c', '2', '-i', '0.2', '-W', '2', f.peerPod]);
        expect((await ping()).stdout).toMatch(/2 received/);
        const heapBefore = (await a.memory()).heapUsed;
        const udpBefore = await kernelUdp(nodes.a, family);
        const before = await a.counters();

        const flood = nodes.b.exec(
          [
            process.execPath,
            FLOODER,
            JSON.stringify({
              encap: 'vxlan',
              from: family === 4 ? nodes.ipB : f.underlay.b,
              stranger: f.underlay.stranger,
              to: family === 4 ? nodes.ipA : f.underlay.a,
              port: 8472,
              total: 2_000_000,
              vni: 1,
              ourMac: MAC_A,
              peerMac: MAC_B,
              peerSubnet: f.peerSubnet,
              dst: f.pod,
            }),
          ],
          { timeoutMs: 180_000 },
        );
        const transfer = tcpTransfer(nodes.a, nodes.b, f.pod, 5301, MB50, 180_000);
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
        const udp = await kernelUdp(nodes.a, family);
        const kernel = udp.dropped - udpBefore.dropped;
        expect(accounted(c) - accounted(before)).toBe(udp.delivered - udpBefore.delivered);
        expect(dropsIn(c) - dropsIn(before) + kernel).toBe(report.total);
        expect(kernel).toBeLessThan(report.total / 100);
        const delta = (reason: string) => c.drops[reason] - before.drops[reason];
        for (const [reason, n] of Object.entries(report.atLeast))
          expect(delta(reason), reason).toBeGreaterThanOrEqual(kernel === 0 ? n : n - kernel);
        if (kernel === 0) {
          // Nothing else can land under these: each is exactly what the flood sent of its kinds.
          // IPv6 has no header checksum, so there badChecksum is only TCP segments that passed
          // every header check and were dropped by the coalescer (over IPv4, header flips too).
          const exact = ['unknownSource', 'spoofedInner', 'vlanTagged'];
          for (const reason of family === 6 ? [...exact, 'badChecksum'] : exact)
            expect(delta(reason), reason).toBe(report.atLeast[reason]);
        }
        // Nothing a random ARP sender claimed was learned.
        const learned = await a.tables();
        expect(learned.neighbors?.filter((n) => n.learned)).toEqual([]);

        // No packet from outside node b's subnet reached node a's kernel; the counting rule does count.
        const pod = await fromDevice(nodes.a, family);
        expect(pod.all).toBeGreaterThan(100);
        expect(pod.foreign).toBe(0);

        // The heap is flat: what the flood left behind after a full collection.
        const heapAfter = (await a.memory()).heapUsed;
        expect(heapAfter - heapBefore).toBeLessThan(4 << 20);

        // And good traffic right after the flood is delivered.
        expect((await ping()).stdout).toMatch(/2 received/);
        await a.stop();
      } finally {
        nodes.delete();
      }
    }, 240_000);
});
