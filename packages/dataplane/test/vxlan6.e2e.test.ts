import {
  createTwoNodes,
  haveTools,
  privileged,
  startDataplane,
  sweepNetns,
  tcpTransfer,
  waitFor,
} from '@weft/testkit';
import { afterAll, describe, expect, it } from 'vitest';
import { totalDrops, VxlanBackend } from '../src/index.js';
import { standInBackendIo } from '../src/testing.js';
import { kernelVtep6, weftVtep6 } from './kernel-vtep6.js';
import { rxPackets, udpBothWays } from './udp-flow.js';

/** weft's IPv6 VTEP against the kernel's flannel-v6.1, as flannel programs it (kernelVtep6). Node a runs weft, node b the kernel. */
const TAG = 'dpvx6';
const MAC_A = '02:00:00:00:01:06';
const MAC_B = '02:00:00:00:02:06';
const MB50 = 50 * 1024 * 1024;

describe('an IPv6 VTEP: options and nodes', () => {
  it('takes vtepAddress6 alone (no IPv4); refuses an address of the wrong family and a node without subnet6', () => {
    expect(() => VxlanBackend.open({ vtepAddress6: '10.244.1.0', publicIp: 'fd00::1' })).toThrow(
      expect.objectContaining({
        code: 'ERR_DATAPLANE_BAD_OPTION',
        message: 'vtepAddress6 10.244.1.0 must be an IPv6 address',
      }),
    );
    expect(() => VxlanBackend.open({ publicIp: 'fd00::1' })).toThrow(
      /needs vtepAddress .* or vtepAddress6/,
    );
    const backend = VxlanBackend.overIo(standInBackendIo().io, {
      vtepAddress6: 'fd00:10:244:1::',
      network6: 'fd00:10:244::/48',
      vtepMac: MAC_A,
    });
    try {
      const good = { subnet6: 'fd00:10:244:2::/64', publicIp: 'fd00::2', vtepMac: MAC_B };
      backend.setNodes([good]);
      expect(() =>
        backend.setNodes([good, { subnet: '10.244.3.0/24', publicIp: 'fd00::3', vtepMac: MAC_B }]),
      ).toThrow(
        expect.objectContaining({
          code: 'ERR_DATAPLANE_BAD_NODE',
          message: expect.stringMatching(/subnet6 is required: this VTEP carries IPv6/),
        }),
      );
      // Refused as a whole: the node set is what it was.
      expect(backend.nodes()).toEqual([good]);
      const { routes, neighbors } = backend.dumpTables();
      expect(routes).toEqual([
        expect.objectContaining({ dst: 'fd00:10:244:2::/64', via: 'fd00:10:244:2::' }),
      ]);
      expect(neighbors).toContainEqual(
        expect.objectContaining({ ip: 'fd00:10:244:2::', mac: MAC_B }),
      );
    } finally {
      backend.close();
    }
  });
});

describe.skipIf(
  !privileged('the IPv6 VTEP against the kernel') ||
    !haveTools('the IPv6 VTEP against the kernel', 'tshark'),
)('weft vxlan over IPv6 against the kernel flannel-v6.1', () => {
  afterAll(() => sweepNetns(TAG));

  for (const offload of [true, false])
    it(`offloads ${offload ? 'on' : 'off'}: ping and 50 MB intact both ways; on the wire, IPv6 outside and inside, the UDP checksum set and good`, async () => {
      const nodes = createTwoNodes(TAG);
      let weft: Awaited<ReturnType<typeof startDataplane>> | undefined;
      try {
        await kernelVtep6(nodes, MAC_A, MAC_B);
        weft = await startDataplane(nodes.a, { ...weftVtep6(MAC_A, MAC_B), offload });
        // IPv6's outer header is 20 bytes longer than IPv4's: the device is the underlay's less 70.
        expect(weft.ready.mtu).toBe(1430);
        const capture = nodes.b.spawn([
          'tshark',
          '-l',
          '-n',
          '-i',
          'veth0',
          '-f',
          'ip6 and udp dst port 8472',
          '-d',
          'udp.port==8472,vxlan',
          '-o',
          'udp.check_checksum:TRUE',
          '-T',
          'fields',
          '-E',
          'separator=|',
          '-e',
          'ipv6.src',
          '-e',
          'udp.checksum',
          '-e',
          'udp.checksum.status',
          '-e',
          'vxlan.vni',
          '-e',
          'eth.dst',
          '-e',
          'eth.type',
          '-e',
          'icmpv6.type',
        ]);
        let lines = '';
        capture.stdout?.on('data', (d: Buffer) => {
          lines += d.toString();
        });
        const ping = (ns: typeof nodes.a, ip: string) =>
          ns.exec(['ping', '-6', '-c', '1', '-W', '1', ip]).then(
            () => true,
            () => false,
          );
        await waitFor(
          async () => (await ping(nodes.a, 'fd00:10:244:2::')) && /\|128$/m.test(lines),
          'weft to the kernel over IPv6, in the capture',
          { timeoutMs: 20_000, intervalMs: 200 },
        );
        expect(await ping(nodes.b, 'fd00:10:244:1::')).toBe(true);
        capture.kill('SIGINT');
        const echoes = lines
          .split('\n')
          .filter((l) => l.endsWith('|128'))
          .map((l) => l.split('|'));
        expect(echoes.length).toBeGreaterThan(0);
        for (const [src, checksum, status, vni, ethDst, ethType] of echoes) {
          expect(src.split(',')).toEqual(['fd00::1', 'fd00:10:244:1::']);
          expect(checksum).not.toBe('0x0000');
          expect(status).toBe('1');
          expect(vni).toBe('1');
          // Outer Ethernet, then the inner frame: to the kernel VTEP's MAC, an IPv6 packet.
          expect(ethDst.split(',')[1]).toBe(MAC_B);
          expect(ethType.split(',')).toEqual(['0x86dd', '0x86dd']);
        }
        // With offloads the TUN takes IPv6 TCP as TSO6 super-packets, which weft cuts itself.
        const features = (await nodes.a.exec(['ethtool', '-k', 'flannel-v6.1'])).stdout;
        expect(features).toMatch(
          offload ? /tx-tcp6-segmentation: on/ : /tx-tcp6-segmentation: off/,
        );
        for (const [server, client, address, port] of [
          [nodes.b, nodes.a, 'fd00:10:244:2::', 6101],
          [nodes.a, nodes.b, 'fd00:10:244:1::', 6102],
        ] as const) {
          const r = await tcpTransfer(server, client, address, port, MB50);
          expect(r.receivedBytes).toBe(MB50);
          expect(r.receivedSha256).toBe(r.sentSha256);
        }
        const c = await weft.counters();
        expect(c.rxPackets).toBeGreaterThan(1000);
        expect(c.txPackets).toBeGreaterThan(1000);
        expect(c.drops.wrongVni ?? 0).toBe(0);
        expect(c.drops.wrongDstMac ?? 0).toBe(0);
        // A super-packet weft could not cut would be a bad header or unsupported.
        expect(c.drops.badHeader ?? 0).toBe(0);
        expect(c.drops.unsupported ?? 0).toBe(0);
      } finally {
        await weft?.stop().catch(() => undefined);
        nodes.delete();
      }
    }, 90_000);

  it('UDP over IPv6 flows both ways, datagram for datagram, coalesced into UDP GSO writes to the TUN', async () => {
    const nodes = createTwoNodes(TAG);
    let weft: Awaited<ReturnType<typeof startDataplane>> | undefined;
    try {
      await kernelVtep6(nodes, MAC_A, MAC_B);
      weft = await startDataplane(nodes.a, { ...weftVtep6(MAC_A, MAC_B), offload: true });
      // 1382: the device's MTU less IPv6 and UDP headers.
      const r = await udpBothWays(
        [nodes.b, nodes.a, 'fd00:10:244:1::'],
        [nodes.a, nodes.b, 'fd00:10:244:2::'],
        1382,
        () => rxPackets(nodes.a, 'flannel-v6.1'),
      );
      expect(r.down.received).toEqual(r.down.sent);
      expect(r.up.received).toEqual(r.up.sent);
      // The kernel counts a TUN write as one packet: fewer writes than datagrams.
      expect(r.downWrites).toBeLessThan(0.75 * r.datagrams);
      // Nothing dropped but what the kernel itself sends from the device's link-local address
      // (MLD reports, router solicitations): no route for those in the overlay.
      const c = await weft.counters();
      expect(totalDrops(c) - c.drops.noRoute).toBe(0);
    } finally {
      await weft?.stop().catch(() => undefined);
      nodes.delete();
    }
  }, 90_000);
});
