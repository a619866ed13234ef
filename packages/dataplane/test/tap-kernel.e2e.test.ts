import {
  addContainer,
  bridgeLearned,
  type Container,
  configureKernelL2,
  createSwitchedNodes,
  createTwoNodes,
  haveTools,
  type Netns,
  privileged,
  startDataplane,
  sweepNetns,
  tcpTransfer,
  waitFor,
} from '@weft/testkit';
import { afterAll, describe, expect, it } from 'vitest';
import { totalDrops } from '../src/index.js';
import { udpBothWays } from './udp-flow.js';

/*
 * weft's TAP mode against the L2 overlay the VXLAN tutorials build by hand. Node a: bridge br1
 * with two containers' veths and the kernel's VXLAN device (`ip link add vxlan100 type vxlan id
 * 100 dstport 4789 local <a> nolearning`, master br1, `bridge fdb append 00:00:00:00:00:00 dev
 * vxlan100 dst <b>`). Node b: bridge br1 with a container's veth and weft's TAP as its port, in
 * place of the kernel's VXLAN device. One L2 segment, 10.99.0.0/24, MTU 1450 throughout.
 */

const TAG = 'dptapk';
const MB50 = 50 * 1024 * 1024;
/** Learned MACs age out after this long on both sides (the bridge's ageing_time, weft's ageingMs). */
const AGEING_S = 3;

/** Packets and bytes the kernel counted on a device (for a TAP, rx is what weft wrote to it). */
async function linkStats(
  ns: Netns,
  dev: string,
): Promise<{ rx: number; tx: number; rxBytes: number }> {
  const [link] = JSON.parse((await ns.exec(['ip', '-j', '-s', 'link', 'show', dev])).stdout) as {
    stats64: { rx: { packets: number; bytes: number }; tx: { packets: number } };
  }[];
  return {
    rx: link.stats64.rx.packets,
    tx: link.stats64.tx.packets,
    rxBytes: link.stats64.rx.bytes,
  };
}

const NO_IPV6 = 'sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1';

/** The MAC a container's kernel resolved `ip` to, or undefined. */
async function neighborMac(c: Container, ip: string): Promise<string | undefined> {
  const n = JSON.parse((await c.ns.exec(['ip', '-j', 'neigh', 'show', ip])).stdout) as {
    lladdr?: string;
  }[];
  return n[0]?.lladdr;
}

async function ping(from: Container, to: Container): Promise<void> {
  const r = await from.ns.exec(['ping', '-c', '3', '-i', '0.2', '-W', '2', to.address]);
  expect(r.stdout, `${from.address} -> ${to.address}`).toMatch(/3 packets transmitted, 3 received/);
}

/**
 * The segment with offloads on, dual stack: container c1 (10.99.0.11, fd99::11) behind node a's
 * kernel bridge + VXLAN, c3 (10.99.0.21, fd99::21) behind node b's bridge with weft's TAP.
 */
async function dualStackSegment(nodes: ReturnType<typeof createTwoNodes>, containers: Container[]) {
  await configureKernelL2({
    ns: nodes.a,
    localIp: nodes.ipA,
    vni: 100,
    port: 4789,
    peers: [nodes.ipB],
  });
  const weft = await startDataplane(nodes.b, {
    type: 'vxlan',
    mode: 'tap',
    deviceName: 'weft100',
    vni: 100,
    port: 4789,
    publicIp: nodes.ipB,
    nodes: [{ publicIp: nodes.ipA }],
  });
  expect(weft.ready.offload).toBe(true);
  await nodes.b.sh(
    ['ip link add br1 type bridge', 'ip link set weft100 master br1', 'ip link set br1 up'].join(
      '\n',
    ),
  );
  const c1 = await addContainer(nodes.a, 'br1', TAG, '10.99.0.11/24', {
    mtu: 1450,
    cidr6: 'fd99::11/64',
  });
  containers.push(c1);
  const c3 = await addContainer(nodes.b, 'br1', TAG, '10.99.0.21/24', {
    mtu: 1450,
    cidr6: 'fd99::21/64',
  });
  containers.push(c3);
  return { weft, c1, c3 };
}

describe.skipIf(
  !privileged('the TAP-mode tests against the kernel bridge + VXLAN') ||
    !haveTools('the TAP-mode tests against the kernel bridge + VXLAN', 'ethtool', 'bridge'),
)("weft's TAP mode and the tutorials' kernel bridge + VXLAN on one L2 segment", () => {
  afterAll(() => sweepNetns(TAG));

  for (const { vni, port, offload } of [
    { vni: 100, port: 4789, offload: true },
    { vni: 1, port: 8472, offload: true },
    { vni: 100, port: 4789, offload: false },
  ]) {
    it(`VNI ${vni} on port ${port}, offloads ${offload ? 'on' : 'off'}: ARP, ping and 50 MB each way, learning and ageing on both sides`, async () => {
      const nodes = createTwoNodes(TAG);
      const containers: Container[] = [];
      const container = async (node: Netns, cidr: string) => {
        const c = await addContainer(node, 'br1', TAG, cidr, { mtu: 1450 });
        containers.push(c);
        return c;
      };
      try {
        // No IPv6 chatter (router solicitations, MLD) to keep MACs fresh in the tables.
        for (const ns of [nodes.a, nodes.b])
          await ns.sh(
            'sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1',
          );
        const { device } = await configureKernelL2({
          ns: nodes.a,
          localIp: nodes.ipA,
          vni,
          port,
          peers: [nodes.ipB],
          ageingSeconds: AGEING_S,
        });
        expect(device).toBe(`vxlan${vni}`);
        const c1 = await container(nodes.a, '10.99.0.11/24');
        const c2 = await container(nodes.a, '10.99.0.12/24');

        const weft = await startDataplane(nodes.b, {
          type: 'vxlan',
          mode: 'tap',
          deviceName: `weft${vni}`,
          vni,
          port,
          offload,
          publicIp: nodes.ipB,
          ageingMs: AGEING_S * 1000,
          nodes: [{ publicIp: nodes.ipA }],
        });
        expect(weft.ready).toMatchObject({ mtu: 1450, port, offload });
        await nodes.b.sh(
          [
            `ip link add br1 type bridge ageing_time ${AGEING_S * 100}`,
            `ip link set weft${vni} master br1`,
            'ip link set br1 up',
          ].join('\n'),
        );
        const c3 = await container(nodes.b, '10.99.0.21/24');

        // ARP resolves across the overlay both ways, and ping flows both ways.
        await ping(c1, c3);
        await ping(c3, c2);
        expect(await neighborMac(c1, c3.address)).toBe(c3.mac);
        expect(await neighborMac(c3, c1.address)).toBe(c1.mac);
        expect(await neighborMac(c3, c2.address)).toBe(c2.mac);

        // Learning: weft learned node a's containers behind a; node a's bridge learned c3 on vxlanN.
        const { fdb } = await weft.tables();
        for (const c of [c1, c2])
          expect(fdb).toContainEqual(
            expect.objectContaining({ mac: c.mac, dst: nodes.ipA, port, vni, static: false }),
          );
        expect(fdb).toContainEqual(
          expect.objectContaining({ mac: '00:00:00:00:00:00', dst: nodes.ipA, static: true }),
        );
        expect(await bridgeLearned(nodes.a, 'br1')).toContainEqual({ mac: c3.mac, dev: device });

        // 50 MB each way, intact.
        const tapBefore = await linkStats(nodes.b, `weft${vni}`);
        const before = await weft.counters();
        const toB = await tcpTransfer(c3.ns, c1.ns, c3.address, 5401, MB50);
        expect(toB.receivedBytes).toBe(MB50);
        expect(toB.receivedSha256).toBe(toB.sentSha256);
        const toA = await tcpTransfer(c1.ns, c3.ns, c1.address, 5402, MB50);
        expect(toA.receivedBytes).toBe(MB50);
        expect(toA.receivedSha256).toBe(toA.sentSha256);
        const after = await weft.counters();
        expect(totalDrops(after)).toBe(0);
        // With offloads the TAP saw whole super-frames: the kernel counted far fewer frames
        // through it than weft moved segments; without, one each.
        const tap = await linkStats(nodes.b, `weft${vni}`);
        const framesIn = tap.rx - tapBefore.rx;
        const framesOut = tap.tx - tapBefore.tx;
        const segmentsIn = after.rxPackets - before.rxPackets;
        const segmentsOut = after.txPackets - before.txPackets;
        expect(segmentsIn).toBeGreaterThan(MB50 / 1450);
        expect(segmentsOut).toBeGreaterThan(MB50 / 1450);
        if (offload) {
          expect(framesIn).toBeLessThan(segmentsIn / 2);
          expect(framesOut).toBeLessThan(segmentsOut / 2);
        } else {
          expect(framesIn).toBe(segmentsIn);
          expect(framesOut).toBe(segmentsOut);
        }

        // Ageing: idle, the learned MACs leave weft's FDB and node a's bridge (static entries stay).
        await waitFor(
          async () => {
            const learned = (await weft.tables()).fdb?.filter((e) => !e.static) ?? [];
            const kernel = await bridgeLearned(nodes.a, 'br1');
            return (
              !learned.some((e) => e.mac === c1.mac || e.mac === c2.mac) &&
              !kernel.some((e) => e.mac === c3.mac)
            );
          },
          'the learned MACs to age out on both sides',
          { timeoutMs: 20_000, intervalMs: 500 },
        );
        expect((await weft.tables()).fdb).toContainEqual(
          expect.objectContaining({ mac: '00:00:00:00:00:00', dst: nodes.ipA, static: true }),
        );
        // And traffic after ageing floods, resolves and is learned again.
        await ping(c3, c1);
        expect((await weft.tables()).fdb).toContainEqual(
          expect.objectContaining({ mac: c1.mac, dst: nodes.ipA, static: false }),
        );
        await weft.stop();
      } finally {
        for (const c of containers) c.ns.delete();
        nodes.delete();
      }
    }, 120_000);
  }

  it('IPv6 inside the segment, offloads on: ping and 20 MB each way (IPv6 TCP reaches the TAP as TSO6 frames, which weft cuts)', async () => {
    const nodes = createTwoNodes(TAG);
    const containers: Container[] = [];
    try {
      const { weft, c1, c3 } = await dualStackSegment(nodes, containers);
      expect((await nodes.b.exec(['ethtool', '-k', 'weft100'])).stdout).toMatch(
        /tx-tcp6-segmentation: on/,
      );
      for (const [from, to] of [
        [c1, 'fd99::21'],
        [c3, 'fd99::11'],
      ] as const) {
        const r = await from.ns.exec(['ping', '-6', '-c', '3', '-i', '0.2', '-W', '2', to]);
        expect(r.stdout).toMatch(/3 packets transmitted, 3 received/);
      }
      const before = await weft.counters();
      for (const [server, client, address, port] of [
        [c3, c1, 'fd99::21', 5404],
        [c1, c3, 'fd99::11', 5405],
      ] as const) {
        const t = await tcpTransfer(server.ns, client.ns, address, port, 20 * 1024 * 1024);
        expect(t.receivedBytes).toBe(20 * 1024 * 1024);
        expect(t.receivedSha256).toBe(t.sentSha256);
      }
      const after = await weft.counters();
      expect(totalDrops(after)).toBe(0);
      expect(after.txPackets - before.txPackets).toBeGreaterThan((20 * 1024 * 1024) / 1450);
      await weft.stop();
    } finally {
      for (const c of containers) c.ns.delete();
      nodes.delete();
    }
  }, 120_000);

  it('UDP inside the segment, IPv4 and IPv6, offloads on: datagram for datagram both ways, coalesced into UDP GSO writes to the TAP', async () => {
    const nodes = createTwoNodes(TAG);
    const containers: Container[] = [];
    try {
      const { weft, c1, c3 } = await dualStackSegment(nodes, containers);
      for (const [from, to] of [
        [c1, c3.address],
        [c1, 'fd99::21'],
      ] as const) {
        const r = await from.ns.exec(['ping', '-c', '2', '-i', '0.2', '-W', '2', to]);
        expect(r.stdout).toMatch(/2 packets transmitted, 2 received/);
      }
      // The largest datagrams: the MTU, 1450, less IPv4 or IPv6 and UDP headers.
      for (const [address, address1, max] of [
        [c3.address, c1.address, 1422],
        ['fd99::21', 'fd99::11', 1402],
      ] as const) {
        const r = await udpBothWays(
          [c1.ns, c3.ns, address],
          [c3.ns, c1.ns, address1],
          max,
          async () => (await linkStats(nodes.b, 'weft100')).rx,
        );
        expect(r.down.received).toEqual(r.down.sent);
        expect(r.up.received).toEqual(r.up.sent);
        // The kernel counts a TAP write as one packet: fewer writes than datagrams.
        expect(r.downWrites, address).toBeLessThan(0.75 * r.datagrams);
      }
      expect(totalDrops(await weft.counters())).toBe(0);
      await weft.stop();
    } finally {
      for (const c of containers) c.ns.delete();
      nodes.delete();
    }
  }, 120_000);

  it('three nodes, weft learning nothing: every TSO frame floods, cut once, and each segment reaches both kernel nodes; 50 MB intact', async () => {
    const sw = createSwitchedNodes(TAG, 3);
    const [a, b, c] = sw.nodes;
    const [ipA, ipB, ipC] = sw.ips;
    const containers: Container[] = [];
    const container = async (node: Netns, cidr: string) => {
      const made = await addContainer(node, 'br1', TAG, cidr, { mtu: 1450 });
      containers.push(made);
      return made;
    };
    try {
      for (const ns of sw.nodes) await ns.sh(NO_IPV6);
      const l2 = { vni: 100, port: 4789 };
      await configureKernelL2({ ns: a, localIp: ipA, peers: [ipB, ipC], ...l2 });
      await configureKernelL2({ ns: c, localIp: ipC, peers: [ipA, ipB], ...l2 });
      const c1 = await container(a, '10.99.0.11/24');
      const c4 = await container(c, '10.99.0.31/24');
      const weft = await startDataplane(b, {
        type: 'vxlan',
        mode: 'tap',
        deviceName: 'weft100',
        ...l2,
        publicIp: ipB,
        learning: false,
        nodes: [{ publicIp: ipA }, { publicIp: ipC }],
      });
      expect(weft.ready.offload).toBe(true);
      await b.sh(
        [
          'ip link add br1 type bridge',
          'ip link set weft100 master br1',
          'ip link set br1 up',
        ].join('\n'),
      );
      const c3 = await container(b, '10.99.0.21/24');
      await ping(c3, c1);
      await ping(c3, c4);

      const seen = () =>
        Promise.all([
          linkStats(b, 'weft100'),
          linkStats(a, 'vxlan100'),
          linkStats(c, 'vxlan100'),
          weft.counters(),
        ]);
      const [tap0, a0, c0, w0] = await seen();
      const t = await tcpTransfer(c1.ns, c3.ns, c1.address, 5403, MB50);
      expect(t.receivedBytes).toBe(MB50);
      expect(t.receivedSha256).toBe(t.sentSha256);
      const [tap1, a1, c1Stats, w1] = await seen();
      const segments = w1.txPackets - w0.txPackets;
      // Counted once per segment, though each went to two nodes; the TAP handed over super-frames.
      expect(segments).toBeGreaterThan(MB50 / 1450);
      expect(tap1.tx - tap0.tx).toBeLessThan(segments / 2);
      // Both kernel nodes took in every segment's bytes: node a for c1, node c (which drops them).
      expect(a1.rxBytes - a0.rxBytes).toBeGreaterThan(MB50);
      expect(c1Stats.rxBytes - c0.rxBytes).toBeGreaterThan(MB50);
      expect(totalDrops(w1)).toBe(0);
      expect((await weft.tables()).fdb?.filter((e) => !e.static)).toEqual([]);
      await weft.stop();
    } finally {
      for (const made of containers) made.ns.delete();
      sw.delete();
    }
  }, 120_000);
});
