import { parseIpv4 } from '@weft/core';
import { ipv4, ipv4FillChecksum } from '@weft/encap';
import { createTwoNodes, privileged, sweepNetns, tcpTransfer } from '@weft/testkit';
import { afterAll, describe, expect, it } from 'vitest';
import { totalDrops } from '../src/index.js';
import { rxPackets, tcpFlows, udpBothWays } from './udp-flow.js';
import { startUdpNodes } from './udp-nodes.js';

const TAG = 'dpudp';

describe.skipIf(!privileged('dataplane udp end-to-end tests'))(
  'two weft udp nodes (flannel udp backend)',
  () => {
    afterAll(() => sweepNetns(TAG));

    it('two workers each: a flow stays with the pump its hash picks (eBPF steering), data intact', async () => {
      const nodes = createTwoNodes(TAG);
      try {
        const { a, b } = await startUdpNodes(nodes, { offload: true, workers: 2 });
        expect(a.ready).toMatchObject({ workers: 2 });
        const t = await tcpTransfer(nodes.b, nodes.a, '10.244.2.0', 5201, 10 * 1024 * 1024);
        expect(t.receivedSha256).toBe(t.sentSha256);
        await tcpFlows(nodes.a, nodes.b, '10.244.2.0', 32);
        await new Promise((r) => setTimeout(r, 600));
        // Without steering, a flow follows whichever queue last wrote one of its packets (its
        // ACKs), and between two weft nodes they end up in one pump.
        const c = (await a.counters()) as { workers?: { txPackets: number }[] };
        const sent = c.workers ?? [];
        expect(sent.length).toBe(2);
        for (const w of sent) expect(w.txPackets).toBeGreaterThan(1000);
        for (const n of [a, b]) expect(totalDrops(await n.counters())).toBe(0);
        await a.stop();
        await b.stop();
      } finally {
        nodes.delete();
      }
    });

    it('offloads on: UDP flows both ways, datagram for datagram, in UDP GSO sends and writes', async () => {
      const nodes = createTwoNodes(TAG);
      try {
        const { a, b } = await startUdpNodes(nodes, { offload: true });
        // 1444: the device's MTU less IPv4 and UDP headers.
        const r = await udpBothWays(
          [nodes.a, nodes.b, '10.244.2.0'],
          [nodes.b, nodes.a, '10.244.1.0'],
          1444,
          () => rxPackets(nodes.b, a.ready.device),
        );
        expect(r.down.received).toEqual(r.down.sent);
        expect(r.up.received).toEqual(r.up.sent);
        expect(r.downWrites).toBeLessThan(0.75 * r.datagrams);
        for (const n of [a, b]) expect(totalDrops(await n.counters())).toBe(0);
        await a.stop();
        await b.stop();
      } finally {
        nodes.delete();
      }
    });

    for (const offload of [true, false]) {
      it(`offloads ${offload ? 'on' : 'off'}: ping both ways, 50 MB intact over TCP, ICMP net unreachable for an unrouted address`, async () => {
        const nodes = createTwoNodes(TAG);
        try {
          const { a, b } = await startUdpNodes(nodes, { offload });
          expect(a.ready.mtu).toBe(1472);
          expect(a.ready.offload).toBe(offload);
          expect(a.ready.port).toBe(8285);

          const ab = await nodes.a.exec(['ping', '-c', '3', '-i', '0.2', '-W', '2', '10.244.2.0']);
          expect(ab.stdout).toMatch(/3 packets transmitted, 3 received/);
          // flannel's proxy decrements the TTL on each side: 64 -> 62 for a reply from the far node.
          expect(ab.stdout).toMatch(/ttl=62/);
          const ba = await nodes.b.exec(['ping', '-c', '3', '-i', '0.2', '-W', '2', '10.244.1.0']);
          expect(ba.stdout).toMatch(/3 packets transmitted, 3 received/);

          const t = await tcpTransfer(nodes.b, nodes.a, '10.244.2.0', 5201, 50 * 1024 * 1024);
          expect(t.receivedBytes).toBe(50 * 1024 * 1024);
          expect(t.receivedSha256).toBe(t.sentSha256);

          const unreachable = await nodes.a
            .exec(['ping', '-c', '1', '-W', '2', '10.244.77.1'])
            .catch((e: { stdout: string }) => e);
          expect(unreachable.stdout).toMatch(/Destination Net Unreachable/);
          // Hostile datagrams from b's address: each dropped and counted, and the pump goes on.
          const good = Buffer.alloc(28);
          ipv4.emit(
            {
              src: parseIpv4('10.244.2.9'),
              dst: parseIpv4('10.244.1.0'),
              protocol: 17,
              ttl: 1,
              payloadLength: 8,
            },
            good,
          );
          const ttlOne = Buffer.from(good);
          const badIhl = Buffer.from(good);
          badIhl[0] = 0x44;
          const lying = Buffer.from(good);
          lying.writeUInt16BE(900, 2);
          ipv4FillChecksum(lying, 0);
          const v6 = Buffer.alloc(40);
          v6[0] = 0x60;
          const hostile = [
            Buffer.alloc(0),
            Buffer.from('garbage'),
            good.subarray(0, 19),
            ttlOne,
            badIhl,
            lying,
            v6,
          ];
          await nodes.b.exec([
            process.execPath,
            '-e',
            SEND_ALL,
            nodes.ipB,
            nodes.ipA,
            '8285',
            JSON.stringify(hostile.map((h) => h.toString('hex'))),
          ]);
          const again = await nodes.a.exec([
            'ping',
            '-c',
            '2',
            '-i',
            '0.2',
            '-W',
            '2',
            '10.244.2.0',
          ]);
          expect(again.stdout).toMatch(/2 received/);
          const counters = await a.counters();
          // A total length beyond the datagram is a cut packet (truncated), as in the vxlan backend.
          expect(counters.drops).toMatchObject({ truncated: 4, ttl: 1, badHeader: 2 });
          expect(counters.drops.noRoute).toBe(1);
          expect(counters.icmpErrorsSent).toBe(1);
          expect(counters.txPackets).toBeGreaterThan(30_000);
          await a.stop();
          await b.stop();
        } finally {
          nodes.delete();
        }
      });
    }
  },
);

const SEND_ALL = `
const dgram = require('node:dgram');
const [bind, dst, port, list] = process.argv.slice(1);
const s = dgram.createSocket('udp4');
s.bind(0, bind, async () => {
  for (const h of JSON.parse(list)) await new Promise((r) => s.send(Buffer.from(h, 'hex'), Number(port), dst, r));
  s.close();
});
`;
