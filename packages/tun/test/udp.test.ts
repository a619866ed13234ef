import { execFileSync } from 'node:child_process';
import { createSocket, type Socket } from 'node:dgram';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { formatIpv4, formatIpv6, parseIpv4, parseIpv6 } from '@weft/core';
import { createTwoNodes, haveTools, privileged, sweepNetns, waitFor } from '@weft/testkit';
import { afterAll, describe, expect, it } from 'vitest';
import { allocSlab, PacketRing, SendTable, UdpSocket } from '../src/index.js';
import { openFdCount } from './fds.js';
import { startDgramPeer } from './peer.js';

/** Datagram i of a batch: recognisable contents of varying length. */
/** A UdpSocket on loopback and a node:dgram peer collecting the datagrams it receives. */
async function loopbackPair(): Promise<{ sock: UdpSocket; peer: Socket; got: Buffer[] }> {
  const sock = UdpSocket.open({ address: '127.0.0.1' });
  const peer = createSocket('udp4');
  const got: Buffer[] = [];
  peer.on('message', (m) => got.push(m));
  peer.bind(0, '127.0.0.1');
  await once(peer, 'listening');
  return { sock, peer, got };
}

function payload(batch: number, i: number): Buffer {
  const b = Buffer.alloc(20 + ((i * 37) % 1200), i & 0xff);
  b.write(`batch ${batch} datagram ${i}`);
  return b;
}

for (const family of [4, 6] as const) {
  const loopback = family === 4 ? '127.0.0.1' : '::1';

  describe(`UDP over IPv${family} loopback, with a plain dgram socket as the peer`, () => {
    it('receives batches of 1 to 64 datagrams, each batch in one JS call, with contents and sources', async () => {
      const sock = UdpSocket.open({ address: loopback, receiveBufferBytes: 4 << 20 });
      const peer: Socket = createSocket(family === 4 ? 'udp4' : 'udp6');
      peer.bind(0, loopback);
      await once(peer, 'listening');
      const ring = new PacketRing({ slots: 64 });
      const received: { data: string; addr: string; port: number; family: number }[] = [];
      const batches: number[] = [];
      sock.startReading(ring, (count) => {
        batches.push(count);
        for (let i = 0; i < count; i++) {
          const off = ring.slotOffset(i);
          const a = ring.addrs;
          received.push({
            data: ring.slab.subarray(off, off + ring.lengths[i]).toString('hex'),
            addr:
              ring.families[i] === 4
                ? formatIpv4(a[i * 4])
                : [0, 1, 2, 3].map((w) => a[i * 4 + w].toString(16)).join(','),
            port: ring.ports[i],
            family: ring.families[i],
          });
        }
      });
      try {
        // 100 > 64 slots: a batch never outgrows the ring.
        for (const size of [1, 8, 32, 64, 100]) {
          received.length = 0;
          batches.length = 0;
          const sent = Array.from({ length: size }, (_, i) => payload(size, i));
          // Paused, the kernel queues the whole batch; resumed, recvmmsg takes it in one call.
          sock.pause();
          await Promise.all(
            sent.map((p) => new Promise((r) => peer.send(p, sock.port, loopback, r))),
          );
          await new Promise((r) => setTimeout(r, 30));
          expect(received.length).toBe(0);
          sock.resume();
          await waitFor(() => received.length === size, `${size} datagrams`);
          expect(batches).toEqual(size > 64 ? [64, size - 64] : [size]);
          expect(received.map((r) => r.data)).toEqual(sent.map((p) => p.toString('hex')));
          for (const r of received) {
            expect(r.port).toBe(peer.address().port);
            expect(r.family).toBe(family);
            expect(r.addr).toBe(family === 4 ? '127.0.0.1' : '0,0,0,1');
          }
        }
      } finally {
        sock.close();
        peer.close();
      }
    });

    it('sends batches of 1 to 64 datagrams from slot ranges, headroom included', async () => {
      const sock = UdpSocket.open({ address: loopback });
      const peer: Socket = createSocket(family === 4 ? 'udp4' : 'udp6');
      const got: { msg: Buffer; port: number; address: string }[] = [];
      peer.on('message', (msg, rinfo) =>
        got.push({ msg, port: rinfo.port, address: rinfo.address }),
      );
      peer.bind(0, loopback);
      await once(peer, 'listening');
      const ring = new PacketRing({ slots: 64 });
      const table = new SendTable(64);
      sock.attachSlab(0, ring.slab);
      sock.setSendTable(table);
      try {
        for (const size of [1, 8, 32, 64]) {
          got.length = 0;
          const expected: Buffer[] = [];
          for (let i = 0; i < size; i++) {
            const body = payload(size, i);
            const off = ring.slotOffset(i);
            body.copy(ring.slab, off);
            // A 6-byte "header" written into the headroom goes out in front of the body.
            ring.slab.write('HDR:', off - 6);
            ring.slab.writeUInt16BE(i, off - 2);
            expected.push(Buffer.concat([ring.slab.subarray(off - 6, off), body]));
            if (family === 4)
              table.set4(i, 0, off - 6, body.length + 6, 0x7f000001, peer.address().port);
            else
              table.set6(i, 0, off - 6, body.length + 6, parseIpv6('::1'), 0, peer.address().port);
          }
          expect(sock.send(0, size)).toBe(size);
          await waitFor(() => got.length === size, `${size} datagrams at the dgram peer`);
          expect(got.map((g) => g.msg.toString('hex'))).toEqual(
            expected.map((e) => e.toString('hex')),
          );
          for (const g of got) expect(g.port).toBe(sock.port);
        }
        expect(sock.stats()!.packetsSent).toBe(1 + 8 + 32 + 64);
      } finally {
        sock.close();
        peer.close();
      }
    });
  });
}

describe('UDP socket housekeeping', () => {
  it('reports datagrams longer than a slot as cut (-1), and keeps going', async () => {
    const sock = UdpSocket.open({ address: '127.0.0.1' });
    const peer = createSocket('udp4');
    const ring = new PacketRing({ slots: 4, stride: 256, headroom: 64 });
    const lengths: number[] = [];
    sock.startReading(ring, (n) => {
      for (let i = 0; i < n; i++) lengths.push(ring.lengths[i]);
    });
    try {
      peer.send(Buffer.alloc(500), sock.port, '127.0.0.1');
      peer.send(Buffer.alloc(100), sock.port, '127.0.0.1');
      await waitFor(() => lengths.length === 2, 'two datagrams');
      expect(lengths).toEqual([-1, 100]);
      expect(sock.stats()!.truncated).toBe(1);
    } finally {
      sock.close();
      peer.close();
    }
  });

  it('skips a bad descriptor and sends the rest', async () => {
    const { sock, peer, got } = await loopbackPair();
    const slab = allocSlab(1000).fill(0x61);
    const table = new SendTable(3);
    sock.attachSlab(0, slab);
    sock.setSendTable(table);
    table.set4(0, 0, 0, 10, 0x7f000001, peer.address().port);
    table.set4(1, 0, 995, 10, 0x7f000001, peer.address().port); // runs past the slab
    table.set4(2, 7, 0, 10, 0x7f000001, peer.address().port); // no slab 7
    try {
      expect(sock.send(0, 3)).toBe(3);
      table.set4(0, 0, 100, 20, 0x7f000001, peer.address().port);
      expect(sock.send(0, 1)).toBe(1);
      await waitFor(() => got.length === 2, 'the two good datagrams');
      expect(got.map((g) => g.length)).toEqual([10, 20]);
      expect(sock.stats()!.badDescriptors).toBe(2);
    } finally {
      sock.close();
      peer.close();
    }
  });

  it('sends a datagram gathered from pieces in two slabs, and a UDP GSO datagram of pieces', async () => {
    const { sock, peer, got } = await loopbackPair();
    const headers = allocSlab(1000);
    const payloads = allocSlab(10_000);
    for (let i = 0; i < headers.length; i++) headers[i] = i & 0xff;
    for (let i = 0; i < payloads.length; i++) payloads[i] = (i * 7) & 0xff;
    const table = new SendTable(16);
    sock.attachSlab(0, headers);
    sock.attachSlab(3, payloads);
    sock.setSendTable(table);
    const port = peer.address().port;
    // One datagram: 8 header bytes, 100 payload bytes, 4 more header bytes.
    table.set4(0, 0, 10, 8, 0x7f000001, port);
    table.append(1, 3, 500, 100);
    table.append(2, 0, 40, 4);
    // A GSO datagram of three 300-byte segments, each a 20-byte header and 280 payload bytes, the
    // last shorter (a 20-byte header and 100).
    table.set4(3, 0, 100, 20, 0x7f000001, port);
    table.gso[3] = 300;
    table.append(4, 3, 0, 280);
    table.append(5, 0, 200, 20);
    table.append(6, 3, 280, 280);
    table.append(7, 0, 300, 20);
    table.append(8, 3, 560, 100);
    // A plain datagram after them.
    table.set4(9, 3, 9000, 50, 0x7f000001, port);
    try {
      expect(sock.send(0, 10)).toBe(10);
      await waitFor(() => got.length === 5, 'five datagrams');
      expect(
        got[0].equals(
          Buffer.concat([
            headers.subarray(10, 18),
            payloads.subarray(500, 600),
            headers.subarray(40, 44),
          ]),
        ),
      ).toBe(true);
      expect(
        got[1].equals(Buffer.concat([headers.subarray(100, 120), payloads.subarray(0, 280)])),
      ).toBe(true);
      expect(
        got[2].equals(Buffer.concat([headers.subarray(200, 220), payloads.subarray(280, 560)])),
      ).toBe(true);
      expect(
        got[3].equals(Buffer.concat([headers.subarray(300, 320), payloads.subarray(560, 660)])),
      ).toBe(true);
      expect(got[4].equals(payloads.subarray(9000, 9050))).toBe(true);
      expect(sock.stats()).toMatchObject({ packetsSent: 3, badDescriptors: 0, sendErrors: 0 });
    } finally {
      sock.close();
      peer.close();
    }
  });

  it('drops a gathered datagram whole when a piece is bad or it starts with a continuation', async () => {
    const { sock, peer, got } = await loopbackPair();
    const slab = allocSlab(1000).fill(0x62);
    const table = new SendTable(8);
    sock.attachSlab(0, slab);
    sock.setSendTable(table);
    const port = peer.address().port;
    table.set4(0, 0, 0, 10, 0x7f000001, port);
    table.append(1, 0, 990, 20); // runs past the slab: the datagram of 0 and 1 goes nowhere
    table.set4(2, 0, 0, 30, 0x7f000001, port);
    table.append(3, 0, 0, 5);
    try {
      expect(sock.send(0, 4)).toBe(4);
      // A range that starts inside a packet: its first descriptor continues nothing.
      expect(sock.send(3, 1)).toBe(1);
      await waitFor(() => got.length === 1, 'the good datagram');
      await new Promise((r) => setTimeout(r, 50));
      expect(got.map((g) => g.length)).toEqual([35]);
      expect(sock.stats()).toMatchObject({ packetsSent: 1, badDescriptors: 2 });
    } finally {
      sock.close();
      peer.close();
    }
  });

  it('busy polling: after a batch the loop polls without sleeping for the window, not otherwise', async () => {
    const { performance } = await import('node:perf_hooks');
    const peer = createSocket('udp4');
    // Event-loop utilization over the 8 ms after a batch: near 1 while spinning, near 0 asleep.
    const busyAfterBatch = async (micros: number) => {
      const sock = UdpSocket.open({ address: '127.0.0.1' });
      sock.setBusyPoll(micros);
      const batch = new Promise<ReturnType<typeof performance.eventLoopUtilization>>((resolve) =>
        sock.startReading(new PacketRing({ slots: 4 }), () =>
          resolve(performance.eventLoopUtilization()),
        ),
      );
      try {
        peer.send(Buffer.from('x'), sock.port, '127.0.0.1');
        const start = await batch;
        await new Promise((r) => setTimeout(r, 8));
        return performance.eventLoopUtilization(start).utilization;
      } finally {
        sock.close();
      }
    };
    try {
      expect(await busyAfterBatch(10_000)).toBeGreaterThan(0.6);
      expect(await busyAfterBatch(0)).toBeLessThan(0.4);
    } finally {
      peer.close();
    }
    const sock = UdpSocket.open({ address: '127.0.0.1' });
    for (const bad of [-1, 10_001, 1.5, Number.NaN, '5'])
      expect(() => sock.setBusyPoll(bad as number)).toThrow(
        expect.objectContaining({ code: 'ERR_TUN_BAD_OPTION' }),
      );
    sock.close();
    expect(() => sock.setBusyPoll(10)).toThrow(expect.objectContaining({ code: 'ERR_TUN_CLOSED' }));
  });

  it('binds IPv6 and picks ports; close twice is safe; no fd leaks', () => {
    const before = openFdCount();
    for (let i = 0; i < 50; i++) {
      const s = UdpSocket.open({ address: i % 2 ? '::1' : '127.0.0.1' });
      expect(s.port).toBeGreaterThan(0);
      expect(s.family).toBe(i % 2 ? 6 : 4);
      if (i % 3 === 0) s.startReading(new PacketRing({ slots: 2 }), () => undefined);
      s.close();
      s.close();
      expect(s.fd).toBe(-1);
    }
    expect(openFdCount()).toBe(before);
  });

  it('sets socket buffer sizes; as root past the sysctl limits (SO_RCVBUFFORCE)', () => {
    const ask = 8 << 20;
    const limit = (key: string) => Number(readFileSync(`/proc/sys/net/core/${key}`, 'utf8'));
    const s = UdpSocket.open({
      address: '127.0.0.1',
      receiveBufferBytes: ask,
      sendBufferBytes: ask,
    });
    try {
      // The kernel doubles what it grants, for its bookkeeping; without root it caps at *mem_max.
      const root = process.getuid?.() === 0;
      expect(s.receiveBufferBytes).toBe(2 * (root ? ask : Math.min(ask, limit('rmem_max'))));
      expect(s.sendBufferBytes).toBe(2 * (root ? ask : Math.min(ask, limit('wmem_max'))));
    } finally {
      s.close();
    }
  });

  it('no writable callback after close', async () => {
    const closed = UdpSocket.open({ address: '127.0.0.1' });
    const open = UdpSocket.open({ address: '127.0.0.1' });
    let closedCalls = 0;
    let openCalls = 0;
    closed.onWritable(() => closedCalls++);
    open.onWritable(() => openCalls++);
    closed.close();
    try {
      // An idle UDP socket is writable at once: the open one hears so, the closed one must not.
      await waitFor(() => openCalls === 1, 'the open socket to be writable');
      await new Promise((r) => setTimeout(r, 30));
      expect(openCalls).toBe(1);
      expect(closedCalls).toBe(0);
    } finally {
      open.close();
    }
  });

  it('clearDontFragment sets IP_PMTUDISC_DONT (the kernel VXLAN default), and refuses what contradicts it', () => {
    const plain = UdpSocket.open({ address: '127.0.0.1' });
    const clear = UdpSocket.open({ address: '127.0.0.1', clearDontFragment: true });
    try {
      expect([plain.clearDontFragment, plain.dontFragment]).toEqual([false, false]);
      expect([clear.clearDontFragment, clear.dontFragment]).toEqual([true, false]);
      for (const bad of [
        { address: '127.0.0.1', clearDontFragment: true, dontFragment: true },
        { address: '::1', clearDontFragment: true },
        { address: '127.0.0.1', clearDontFragment: 1 as unknown as boolean },
      ])
        expect(() => UdpSocket.open(bad)).toThrow(
          expect.objectContaining({ code: 'ERR_TUN_BAD_OPTION' }),
        );
    } finally {
      plain.close();
      clear.close();
    }
  });

  it('says when the port is taken', () => {
    const a = UdpSocket.open({ address: '127.0.0.1' });
    try {
      expect(() => UdpSocket.open({ address: '127.0.0.1', port: a.port })).toThrow(
        expect.objectContaining({ code: 'ERR_TUN_ADDRESS_IN_USE' }),
      );
    } finally {
      a.close();
    }
  });
});

describe.skipIf(!privileged('UDP back-pressure test'))('back-pressure', () => {
  afterAll(() => sweepNetns('tunbp'));

  it('reports a partial send on EAGAIN and resumes when writable, losing nothing', async () => {
    const nodes = createTwoNodes('tunbp');
    const opened: UdpSocket[] = [];
    try {
      // A slow qdisc holds packets against the sender's small buffer, so the kernel says EAGAIN.
      await nodes.a.exec([
        'tc',
        'qdisc',
        'add',
        'dev',
        'veth0',
        'root',
        'tbf',
        'rate',
        '8mbit',
        'burst',
        '3000',
        'limit',
        '10000000',
      ]);
      const rx = UdpSocket.open({ address: nodes.ipB, port: 9000, netns: nodes.b.name });
      opened.push(rx);
      const tx = UdpSocket.open({ address: nodes.ipA, netns: nodes.a.name, sendBufferBytes: 4096 });
      opened.push(tx);
      const ring = new PacketRing({ slots: 64 });
      const seen = new Set<number>();
      rx.startReading(ring, (n) => {
        for (let i = 0; i < n; i++) seen.add(ring.slab.readUInt16BE(ring.slotOffset(i)));
      });
      const slab = allocSlab(64 * 1400);
      const table = new SendTable(64);
      tx.attachSlab(0, slab);
      tx.setSendTable(table);
      for (let i = 0; i < 64; i++) {
        slab.writeUInt16BE(i, i * 1400);
        table.set4(i, 0, i * 1400, 1400, 0xc6120002, 9000);
      }
      let sent = tx.send(0, 64);
      const partial = sent;
      let writableCalls = 0;
      await new Promise<void>((resolve) => {
        const more = () => {
          writableCalls++;
          sent += tx.send(sent, 64 - sent);
          if (sent < 64) tx.onWritable(more);
          else resolve();
        };
        if (sent < 64) tx.onWritable(more);
        else resolve();
      });
      expect(partial).toBeLessThan(64);
      expect(writableCalls).toBeGreaterThan(0);
      expect(tx.stats()!.sendAgain).toBeGreaterThan(0);
      await waitFor(() => seen.size === 64, 'all 64 datagrams at the receiver', {
        timeoutMs: 15_000,
      });
      expect(tx.stats()!.sendErrors).toBe(0);
    } finally {
      for (const s of opened) s.close();
      nodes.delete();
    }
  });
});

/** A ring slot's source address as text: IPv4 in the first word, IPv6 as four big-endian words. */
function sourceOf(ring: PacketRing, i: number): string {
  if (ring.families[i] === 4) return formatIpv4(ring.addrs[i * 4]);
  const bytes = Buffer.alloc(16);
  for (let w = 0; w < 4; w++) bytes.writeUInt32BE(ring.addrs[i * 4 + w], w * 4);
  return formatIpv6(bytes);
}

describe.skipIf(!privileged('UDP tests between network namespaces'))(
  'UDP between two namespaces, with a plain dgram program as the peer',
  () => {
    afterAll(() => sweepNetns('tunudp'));

    for (const family of [4, 6] as const) {
      it(`IPv${family}: batches of 1 to 64 each way, contents and sources checked`, async () => {
        const nodes = createTwoNodes('tunudp');
        try {
          let ipA = nodes.ipA;
          let ipB = nodes.ipB;
          if (family === 6) {
            ipA = '2001:db8:98::1';
            ipB = '2001:db8:98::2';
            for (const [ns, ip] of [
              [nodes.a, ipA],
              [nodes.b, ipB],
            ] as const)
              execFileSync('ip', [
                '-n',
                ns.name,
                'addr',
                'add',
                `${ip}/64`,
                'dev',
                'veth0',
                'nodad',
              ]);
          }
          // The peer echoes every datagram back to where it came from.
          const peer = startDgramPeer(nodes.b, ['listen', ipB, '0', 'echo']);
          const peerPort = await peer.port();
          const sock = UdpSocket.open({
            address: ipA,
            netns: nodes.a.name,
            receiveBufferBytes: 4 << 20,
          });
          const ring = new PacketRing({ slots: 64 });
          const out = new PacketRing({ slots: 64 });
          const table = new SendTable(64);
          sock.attachSlab(1, out.slab);
          sock.setSendTable(table);
          const echoes: { hex: string; source: string }[] = [];
          sock.startReading(ring, (count) => {
            for (let i = 0; i < count; i++) {
              const off = ring.slotOffset(i);
              echoes.push({
                hex: ring.slab.toString('hex', off, off + ring.lengths[i]),
                source: `${sourceOf(ring, i)}:${ring.ports[i]}`,
              });
            }
          });
          const dst = family === 4 ? undefined : parseIpv6(ipB);
          try {
            for (const size of [1, 8, 32, 64]) {
              echoes.length = 0;
              const seenBefore = peer.datagrams().length;
              const sent: string[] = [];
              for (let i = 0; i < size; i++) {
                const body = payload(size, i);
                const off = out.slotOffset(i);
                body.copy(out.slab, off);
                sent.push(body.toString('hex'));
                if (dst) table.set6(i, 1, off, body.length, dst, 0, peerPort);
                else table.set4(i, 1, off, body.length, parseIpv4(ipB), peerPort);
              }
              expect(sock.send(0, size)).toBe(size);
              await waitFor(
                () => peer.datagrams().length - seenBefore === size && echoes.length === size,
                `${size} datagrams there and back`,
              );
              const atPeer = peer.datagrams().slice(seenBefore);
              expect(atPeer.map((d) => d.hex)).toEqual(sent);
              for (const d of atPeer) expect(`${d.address}:${d.port}`).toBe(`${ipA}:${sock.port}`);
              expect(echoes.map((e) => e.hex)).toEqual(sent);
              for (const e of echoes) expect(e.source).toBe(`${ipB}:${peerPort}`);
            }
            expect(peer.stderr()).toBe('');
          } finally {
            sock.close();
            peer.kill();
          }
        } finally {
          nodes.delete();
        }
      });
    }
  },
);

describe.skipIf(
  !privileged('the DF bit capture test') ||
    !haveTools('the DF bit capture test', 'tshark', 'ethtool'),
)('dontFragment, checked on a capture', () => {
  afterAll(() => sweepNetns('tundf'));

  it('IPv4: DF on every datagram and every UDP GSO segment with it; the kernel default leaves GSO segments without', async () => {
    const nodes = createTwoNodes('tundf');
    const opened: UdpSocket[] = [];
    try {
      // Segment in software before the veth, so the capture sees the segments as they leave.
      await nodes.a.exec(['ethtool', '-K', 'veth0', 'tx-udp-segmentation', 'off']);
      const capture = nodes.b.spawn([
        'tshark',
        '-l',
        '-n',
        '-i',
        'veth0',
        '-f',
        'udp dst portrange 9000-9001',
        '-T',
        'fields',
        '-e',
        'udp.dstport',
        '-e',
        'udp.srcport',
        '-e',
        'ip.flags.df',
        '-e',
        'ip.len',
      ]);
      let lines = '';
      capture.stdout?.on('data', (d: Buffer) => {
        lines += d.toString();
      });
      const marker = UdpSocket.open({ address: nodes.ipA, netns: nodes.a.name });
      opened.push(marker);
      const markerSlab = allocSlab(8);
      const markerTable = new SendTable(1);
      marker.attachSlab(0, markerSlab);
      marker.setSendTable(markerTable);
      markerTable.set4(0, 0, 0, 8, parseIpv4(nodes.ipB), 9001);
      // The capture is running once it sees a marker datagram.
      await waitFor(
        () => {
          marker.send(0, 1);
          return /^9001\t/m.test(lines);
        },
        'tshark to start capturing',
        { timeoutMs: 20_000, intervalMs: 200 },
      );
      const ports: Record<string, number> = {};
      for (const dontFragment of [true, false]) {
        const s = UdpSocket.open({ address: nodes.ipA, netns: nodes.a.name, dontFragment });
        opened.push(s);
        expect(s.dontFragment).toBe(dontFragment);
        ports[String(dontFragment)] = s.port;
        const slab = allocSlab(4096).fill(0x5a);
        const table = new SendTable(2);
        s.attachSlab(0, slab);
        s.setSendTable(table);
        table.set4(0, 0, 0, 100, parseIpv4(nodes.ipB), 9000);
        table.set4(1, 0, 0, 3000, parseIpv4(nodes.ipB), 9000);
        table.gso[1] = 1000;
        expect(s.send(0, 2)).toBe(2);
        expect(s.stats()?.packetsSent).toBe(2);
      }
      const seen = () =>
        lines
          .split('\n')
          .filter((l) => l.startsWith('9000\t'))
          .map((l) => l.split('\t').slice(1).map(Number));
      await waitFor(() => seen().length === 8, 'eight datagrams in the capture');
      capture.kill();
      const from = (port: number) =>
        seen()
          .filter(([src]) => src === port)
          .map(([, df, len]) => ({ df, len }));
      expect(from(ports.true)).toEqual([
        { df: 1, len: 128 },
        { df: 1, len: 1028 },
        { df: 1, len: 1028 },
        { df: 1, len: 1028 },
      ]);
      expect(from(ports.false)).toEqual([
        { df: 1, len: 128 },
        { df: 0, len: 1028 },
        { df: 0, len: 1028 },
        { df: 0, len: 1028 },
      ]);
    } finally {
      for (const s of opened) s.close();
      nodes.delete();
    }
  });

  for (const family of [4, 6] as const) {
    it(`IPv${family}: a datagram over the path MTU fails with EMSGSIZE instead of leaving in fragments`, async () => {
      const nodes = createTwoNodes('tundf');
      const opened: UdpSocket[] = [];
      try {
        let ipA = nodes.ipA;
        let ipB = nodes.ipB;
        if (family === 6) {
          ipA = '2001:db8:97::1';
          ipB = '2001:db8:97::2';
          for (const [ns, ip] of [
            [nodes.a, ipA],
            [nodes.b, ipB],
          ] as const)
            execFileSync('ip', ['-n', ns.name, 'addr', 'add', `${ip}/64`, 'dev', 'veth0', 'nodad']);
        }
        const rx = UdpSocket.open({ address: ipB, netns: nodes.b.name });
        opened.push(rx);
        const ring = new PacketRing({ slots: 4, stride: 4096 });
        const lengths: number[] = [];
        rx.startReading(ring, (n) => {
          for (let i = 0; i < n; i++) lengths.push(ring.lengths[i]);
        });
        for (const dontFragment of [true, false]) {
          const s = UdpSocket.open({ address: ipA, netns: nodes.a.name, dontFragment });
          opened.push(s);
          const slab = allocSlab(2000);
          const table = new SendTable(1);
          s.attachSlab(0, slab);
          s.setSendTable(table);
          if (family === 4) table.set4(0, 0, 0, 2000, parseIpv4(ipB), rx.port);
          else table.set6(0, 0, 0, 2000, parseIpv6(ipB), 0, rx.port);
          expect(s.send(0, 1)).toBe(1);
          const stats = s.stats();
          if (dontFragment) {
            expect(stats?.sendErrors).toBe(1);
            expect(stats?.lastSendErrno).toBe(90); // EMSGSIZE
          } else {
            expect(stats?.packetsSent).toBe(1);
          }
        }
        // Only the fragmented one arrives, reassembled.
        await waitFor(() => lengths.length === 1, 'the fragmented datagram');
        await new Promise((r) => setTimeout(r, 50));
        expect(lengths).toEqual([2000]);
      } finally {
        for (const s of opened) s.close();
        nodes.delete();
      }
    });
  }
});
