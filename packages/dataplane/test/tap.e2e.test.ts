import { createTwoNodes, privileged, startDataplane, sweepNetns, tcpTransfer } from '@weft/testkit';
import { afterAll, describe, expect, it } from 'vitest';
import { totalDrops } from '../src/index.js';

const TAG = 'dptap';

describe.skipIf(!privileged('dataplane TAP-mode end-to-end tests'))(
  'two weft vxlan nodes in TAP mode on one L2 segment',
  () => {
    afterAll(() => sweepNetns(TAG));

    it('ARP resolves by flooding, ping flows, and each FDB shows the learned entry', async () => {
      const nodes = createTwoNodes(TAG);
      try {
        const common = { type: 'vxlan', mode: 'tap', deviceName: 'vx0', vni: 42, port: 4789 };
        const a = await startDataplane(nodes.a, {
          ...common,
          vtepMac: '02:00:00:00:0a:01',
          tapAddress: '10.99.0.1/24',
          publicIp: nodes.ipA,
          nodes: [{ publicIp: nodes.ipB }],
        });
        const b = await startDataplane(nodes.b, {
          ...common,
          vtepMac: '02:00:00:00:0b:01',
          tapAddress: '10.99.0.2/24',
          publicIp: nodes.ipB,
          nodes: [{ publicIp: nodes.ipA }],
        });
        const ping = await nodes.a.exec(['ping', '-c', '3', '-i', '0.2', '-W', '2', '10.99.0.2']);
        expect(ping.stdout).toMatch(/3 packets transmitted, 3 received/);
        // The kernel on a learned b's MAC through ARP over the overlay.
        const neigh = JSON.parse(
          (await nodes.a.exec(['ip', '-j', 'neigh', 'show', '10.99.0.2'])).stdout,
        ) as { lladdr: string }[];
        expect(neigh[0].lladdr).toBe('02:00:00:00:0b:01');
        for (const [node, peerMac, peerIp] of [
          [a, '02:00:00:00:0b:01', nodes.ipB],
          [b, '02:00:00:00:0a:01', nodes.ipA],
        ] as const) {
          const { fdb } = await node.tables();
          expect(fdb).toContainEqual(
            expect.objectContaining({ mac: '00:00:00:00:00:00', dst: peerIp, static: true }),
          );
          expect(fdb).toContainEqual(
            expect.objectContaining({ mac: peerMac, dst: peerIp, static: false }),
          );
        }
        const t = await tcpTransfer(nodes.b, nodes.a, '10.99.0.2', 5204, 20 * 1024 * 1024);
        expect(t.receivedSha256).toBe(t.sentSha256);
        expect(totalDrops(await a.counters())).toBe(0);
        await a.stop();
        await b.stop();
      } finally {
        nodes.delete();
      }
    });
  },
);
