import { parseIpv4, parseMac } from '@weft/core';
import {
  EtherType,
  IpProtocol,
  ipv4,
  udp,
  VXLAN_HEADER_BYTES,
  vxlan,
  writeEthernetHeader,
} from '@weft/encap';
import {
  configureKernelVtep,
  createTwoNodes,
  privileged,
  startDataplane,
  sweepNetns,
  type TwoNodes,
  tcpTransfer,
  waitFor,
} from '@weft/testkit';
import { afterAll, describe, expect, it } from 'vitest';
import { totalDrops } from '../src/index.js';
import { rxPackets, tcpFlows, udpBothWays } from './udp-flow.js';

const TAG = 'dpvx';
const MAC_A = '02:00:00:00:01:01';
const MAC_B = '02:00:00:00:02:01';
const MB50 = 50 * 1024 * 1024;

/** weft on node a, the kernel's VXLAN (as flannel configures it) on node b. */
async function weftAndKernel(
  nodes: TwoNodes,
  vni: number,
  port: number,
  extra: {
    withoutNeighbor?: boolean;
    defaultFdb?: boolean;
    dropUnknownSources?: boolean;
    offload?: boolean;
    workers?: number;
  } = {},
) {
  await configureKernelVtep({
    ns: nodes.b,
    localIp: nodes.ipB,
    vni,
    port,
    vtepMac: MAC_B,
    vtepAddress: '10.244.2.0',
    remote: {
      subnet: '10.244.1.0/24',
      vtepAddress: '10.244.1.0',
      vtepMac: MAC_A,
      publicIp: nodes.ipA,
    },
    ...extra,
  });
  return startDataplane(nodes.a, {
    type: 'vxlan',
    deviceName: 'weft.1',
    vni,
    port,
    vtepMac: MAC_A,
    vtepAddress: '10.244.1.0',
    network: '10.244.0.0/16',
    publicIp: nodes.ipA,
    dropUnknownSources: extra.dropUnknownSources,
    offload: extra.offload,
    workers: extra.workers,
    nodes: [{ subnet: '10.244.2.0/24', publicIp: nodes.ipB, vtepMac: MAC_B }],
  });
}

describe.skipIf(!privileged('dataplane vxlan end-to-end tests'))(
  'weft vxlan against the kernel VXLAN',
  () => {
    afterAll(() => sweepNetns(TAG));

    for (const { vni, port, offload } of [
      { vni: 1, port: 8472, offload: true },
      { vni: 4096, port: 4789, offload: false },
    ]) {
      it(`VNI ${vni} on port ${port}, offloads ${offload ? 'on' : 'off'}: ping and 50 MB intact over TCP, both directions`, async () => {
        const nodes = createTwoNodes(TAG);
        try {
          const a = await weftAndKernel(nodes, vni, port, { offload });
          expect(a.ready.mtu).toBe(1450);
          expect(a.ready.offload).toBe(offload);
          const ab = await nodes.a.exec(['ping', '-c', '3', '-i', '0.2', '-W', '2', '10.244.2.0']);
          expect(ab.stdout).toMatch(/3 packets transmitted, 3 received/);
          const ba = await nodes.b.exec([
            'ping',
            '-c',
            '3',
            '-i',
            '0.2',
            '-W',
            '2',
            '-s',
            '1400',
            '10.244.1.0',
          ]);
          expect(ba.stdout).toMatch(/3 packets transmitted, 3 received/);
          const up = await tcpTransfer(nodes.b, nodes.a, '10.244.2.0', 5201, MB50);
          expect(up.receivedBytes).toBe(MB50);
          expect(up.receivedSha256).toBe(up.sentSha256);
          const down = await tcpTransfer(nodes.a, nodes.b, '10.244.1.0', 5202, MB50);
          expect(down.receivedBytes).toBe(MB50);
          expect(down.receivedSha256).toBe(down.sentSha256);
          const c = await a.counters();
          expect(totalDrops(c)).toBe(0);
          await a.stop();
        } finally {
          nodes.delete();
        }
      });
    }

    it('UDP flows both ways, datagram for datagram, coalesced into UDP GSO writes to the TUN', async () => {
      const nodes = createTwoNodes(TAG);
      try {
        const a = await weftAndKernel(nodes, 1, 8472, { offload: true });
        // 1422: the device's MTU less IPv4 and UDP headers.
        const r = await udpBothWays(
          [nodes.b, nodes.a, '10.244.1.0'],
          [nodes.a, nodes.b, '10.244.2.0'],
          1422,
          () => rxPackets(nodes.a, 'weft.1'),
        );
        expect(r.down.received).toEqual(r.down.sent);
        expect(r.up.received).toEqual(r.up.sent);
        // The kernel counts a TUN write as one packet: fewer writes than datagrams.
        expect(r.downWrites).toBeLessThan(0.75 * r.datagrams);
        expect(totalDrops(await a.counters())).toBe(0);
        await a.stop();
      } finally {
        nodes.delete();
      }
    });

    it('two workers: a multi-queue TUN and a socket each; flows spread over both, data intact', async () => {
      const nodes = createTwoNodes(TAG);
      try {
        const a = await weftAndKernel(nodes, 1, 8472, { offload: true, workers: 2 });
        expect(a.ready).toMatchObject({ workers: 2 });
        const queues = await nodes.a.exec(['ls', '/sys/class/net/weft.1/queues']);
        expect(queues.stdout.split('\n').filter((q) => q.startsWith('tx-')).length).toBe(2);
        const t = await tcpTransfer(nodes.b, nodes.a, '10.244.2.0', 5201, MB50 / 5);
        expect(t.receivedSha256).toBe(t.sentSha256);
        // 32 connections each way: each pump carries some (all on one: a chance of 2^-31).
        await tcpFlows(nodes.a, nodes.b, '10.244.2.0', 32);
        // Counters from the worker thread come every 250 ms.
        await new Promise((r) => setTimeout(r, 600));
        const c = await a.counters();
        const workers = (c as { workers?: { txPackets: number; rxPackets: number }[] }).workers;
        expect(workers?.length).toBe(2);
        for (const w of workers ?? []) {
          expect(w.txPackets).toBeGreaterThan(100);
          expect(w.rxPackets).toBeGreaterThan(100);
        }
        expect(totalDrops(c)).toBe(0);
        await a.stop();
      } finally {
        nodes.delete();
      }
    });

    it('a kernel peer with no neighbor entry for our VTEP ARPs over VXLAN; weft answers and learns', async () => {
      const nodes = createTwoNodes(TAG);
      try {
        const a = await weftAndKernel(nodes, 1, 8472, { withoutNeighbor: true, defaultFdb: true });
        const ping = await nodes.b.exec(['ping', '-c', '3', '-i', '0.2', '-W', '2', '10.244.1.0']);
        expect(ping.stdout).toMatch(/3 packets transmitted, 3 received/);
        const neigh = await nodes.b.exec(['ip', '-j', 'neigh', 'show', 'dev', 'flannel.1']);
        const entries = JSON.parse(neigh.stdout) as {
          dst: string;
          lladdr: string;
          state: string[];
        }[];
        expect(entries.find((e) => e.dst === '10.244.1.0')?.lladdr).toBe(MAC_A);
        const c = await a.counters();
        expect(c.arpReplies).toBeGreaterThanOrEqual(1);
        const tables = await a.tables();
        expect(tables.neighbors?.find((n) => n.ip === '10.244.2.0')).toMatchObject({ mac: MAC_B });
        await a.stop();
      } finally {
        nodes.delete();
      }
    });

    it('a flood of malformed datagrams during a TCP transfer: intact transfer, every one counted', async () => {
      const nodes = createTwoNodes(TAG);
      try {
        const a = await weftAndKernel(nodes, 1, 8472);
        const garbage = malformedDatagrams();
        // From node b's underlay address (a known node), so only the header checks stop them.
        const flooder = nodes.b.spawn([
          process.execPath,
          '-e',
          FLOODER,
          nodes.ipB,
          nodes.ipA,
          '8472',
          JSON.stringify(garbage.map((g) => g.toString('hex'))),
        ]);
        const transfer = tcpTransfer(nodes.b, nodes.a, '10.244.2.0', 5203, MB50);
        const [t] = await Promise.all([transfer, new Promise((r) => flooder.once('exit', r))]);
        expect(t.receivedSha256).toBe(t.sentSha256);
        expect(t.receivedBytes).toBe(MB50);
        const c = await a.counters();
        expect(totalDrops(c)).toBe(garbage.length * ROUNDS);
        expect(c.drops.noRoute).toBe(0);
        expect(c.drops.wrongVni).toBe(ROUNDS);
        expect(c.drops.wrongDstMac).toBe(ROUNDS);
        expect(c.drops.truncated).toBeGreaterThan(0);
        expect(c.drops.badHeader).toBeGreaterThan(0);
        // And good traffic right after the flood is delivered.
        const ping = await nodes.a.exec(['ping', '-c', '2', '-i', '0.2', '-W', '2', '10.244.2.0']);
        expect(ping.stdout).toMatch(/2 received/);
        await a.stop();
      } finally {
        nodes.delete();
      }
    });

    for (const dropUnknownSources of [true, false]) {
      it(`well-formed VXLAN from an unknown underlay address is ${dropUnknownSources ? 'dropped and counted' : 'delivered when the option is off'}`, async () => {
        const nodes = createTwoNodes(TAG);
        try {
          await nodes.b.exec(['ip', 'addr', 'add', '198.18.0.3/24', 'dev', 'veth0']);
          const a = await weftAndKernel(nodes, 1, 8472, { dropUnknownSources });
          // A listener behind weft, on node a's VTEP address.
          const listener = nodes.a.spawn([process.execPath, '-e', LISTENER, '10.244.1.0', '7777']);
          let heard = '';
          listener.stdout?.on('data', (d: Buffer) => {
            heard += d.toString();
          });
          await waitFor(() => heard.includes('listening'), 'the listener');
          const frame = vxlanUdpFrame(parseMac(MAC_A), 'hello from a stranger');
          await nodes.b.exec([
            process.execPath,
            '-e',
            SEND_ONCE,
            '198.18.0.3',
            nodes.ipA,
            '8472',
            frame.toString('hex'),
          ]);
          await new Promise((r) => setTimeout(r, 300));
          const c = await a.counters();
          if (dropUnknownSources) {
            expect(c.drops.unknownSource).toBe(1);
            expect(heard).not.toContain('hello from a stranger');
          } else {
            expect(c.drops.unknownSource).toBe(0);
            await waitFor(
              () => heard.includes('hello from a stranger'),
              'the datagram at the listener',
            );
          }
          listener.kill();
          await a.stop();
        } finally {
          nodes.delete();
        }
      });
    }
  },
);

const ROUNDS = 200;

/** VXLAN + inner Ethernet + IPv4/UDP from 10.244.2.7 to 10.244.1.0:7777 carrying `text`. */
function vxlanUdpFrame(dstMac: number, text: string, vni = 1): Buffer {
  const body = Buffer.from(text);
  const frame = Buffer.alloc(VXLAN_HEADER_BYTES + 14 + 28 + body.length);
  vxlan.emit({ vni }, frame);
  writeEthernetHeader(frame, 8, dstMac, parseMac(MAC_B), EtherType.ipv4);
  ipv4.emit(
    {
      src: parseIpv4('10.244.2.7'),
      dst: parseIpv4('10.244.1.0'),
      protocol: IpProtocol.udp,
      ttl: 64,
      payloadLength: 8 + body.length,
    },
    frame,
    22,
  );
  body.copy(frame, 22 + 28);
  udp.emit({ srcPort: 40000, dstPort: 7777, payloadLength: body.length }, frame, 42, {
    ipVersion: 4,
    ipOffset: 22,
  });
  return frame;
}

/** One of each kind of bad datagram; the flooder sends the set ROUNDS times. */
function malformedDatagrams(): Buffer[] {
  const good = vxlanUdpFrame(parseMac(MAC_A), 'x'.repeat(40));
  const noIFlag = Buffer.from(good);
  noIFlag[0] = 0;
  const wrongVni = vxlanUdpFrame(parseMac(MAC_A), 'x', 2);
  const wrongMac = vxlanUdpFrame(parseMac('02:00:00:00:09:09'), 'x');
  const lyingLength = Buffer.from(good);
  lyingLength.writeUInt16BE(1400, 22 + 2); // inner total length far beyond the datagram
  const badIhl = Buffer.from(good);
  badIhl[22] = 0x43;
  const badChecksum = Buffer.from(good);
  badChecksum[22 + 10] ^= 0xff;
  return [
    Buffer.alloc(0),
    Buffer.from([0x08]),
    good.subarray(0, 7),
    good.subarray(0, 20),
    good.subarray(0, 30),
    Buffer.from('definitely not a vxlan header, just text'),
    noIFlag,
    wrongVni,
    wrongMac,
    lyingLength,
    badIhl,
    badChecksum,
  ];
}

const FLOODER = `
const dgram = require('node:dgram');
const [bind, dst, port, list] = process.argv.slice(1);
const frames = JSON.parse(list).map((h) => Buffer.from(h, 'hex'));
const s = dgram.createSocket('udp4');
s.bind(0, bind, async () => {
  for (let r = 0; r < ${ROUNDS}; r++) {
    for (const f of frames) await new Promise((res) => s.send(f, Number(port), dst, res));
    await new Promise((res) => setTimeout(res, 2));
  }
  s.close();
});
`;

const SEND_ONCE = `
const dgram = require('node:dgram');
const [bind, dst, port, hex] = process.argv.slice(1);
const s = dgram.createSocket('udp4');
s.bind(0, bind, () => s.send(Buffer.from(hex, 'hex'), Number(port), dst, () => s.close()));
`;

const LISTENER = `
const dgram = require('node:dgram');
const [addr, port] = process.argv.slice(1);
const s = dgram.createSocket('udp4');
s.on('message', (m) => console.log(m.toString()));
s.bind(Number(port), addr, () => console.log('listening'));
`;
