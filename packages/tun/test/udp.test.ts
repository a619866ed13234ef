import { createSocket, type Socket } from 'node:dgram';
import { once } from 'node:events';
import { formatIpv4, parseIpv6 } from '@weft/core';
import { createTwoNodes, privileged, sweepNetns, waitFor } from '@weft/testkit';
import { afterAll, describe, expect, it } from 'vitest';
import { PacketRing, SendTable, UdpSocket } from '../src/index.js';
import { openFdCount } from './fds.js';

/** Datagram i of a batch: recognisable contents of varying length. */
function payload(batch: number, i: number): Buffer {
  const b = Buffer.alloc(20 + ((i * 37) % 1200), i & 0xff);
  b.write(`batch ${batch} datagram ${i}`);
  return b;
}

for (const family of [4, 6] as const) {
  const loopback = family === 4 ? '127.0.0.1' : '::1';

  describe(`UDP over IPv${family} loopback, with a plain dgram socket as the peer`, () => {
    it('receives batches of 1 to 64 datagrams with their contents and sources', async () => {
      const sock = UdpSocket.open({ address: loopback });
      const peer: Socket = createSocket(family === 4 ? 'udp4' : 'udp6');
      peer.bind(0, loopback);
      await once(peer, 'listening');
      const ring = new PacketRing({ slots: 64 });
      const received: { data: string; addr: string; port: number; family: number }[] = [];
      sock.startReading(ring, (count) => {
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
        for (const size of [1, 8, 32, 64]) {
          received.length = 0;
          const sent = Array.from({ length: size }, (_, i) => payload(size, i));
          // Pause so the kernel queues the whole batch and recvmmsg takes it in one call.
          sock.pause();
          for (const p of sent) peer.send(p, sock.port, loopback);
          await waitFor(() => sock.stats()!.packetsRead >= 0, 'sends');
          await new Promise((r) => setTimeout(r, 50));
          sock.resume();
          await waitFor(() => received.length === size, `${size} datagrams`);
          expect(received.map((r) => r.data)).toEqual(sent.map((p) => p.toString('hex')));
          for (const r of received) {
            expect(r.port).toBe(peer.address().port);
            expect(r.family).toBe(family);
            expect(r.addr).toBe(family === 4 ? '127.0.0.1' : '0,0,0,1');
          }
        }
        // The last batch of 64 came in one read.
        expect(sock.stats()!.readCalls).toBeLessThan(1 + 8 + 32 + 64);
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
      sock.registerSlab(0, ring.slab);
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
    const sock = UdpSocket.open({ address: '127.0.0.1' });
    const peer = createSocket('udp4');
    const got: Buffer[] = [];
    peer.on('message', (m) => got.push(m));
    peer.bind(0, '127.0.0.1');
    await once(peer, 'listening');
    const slab = Buffer.alloc(1000, 0x61);
    const table = new SendTable(3);
    sock.registerSlab(0, slab);
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

  it('binds IPv6 and picks ports; close twice is safe; no fd leaks', () => {
    const before = openFdCount();
    for (let i = 0; i < 50; i++) {
      const s = UdpSocket.open({
        address: i % 2 ? '::1' : '127.0.0.1',
        receiveBufferBytes: 1 << 20,
      });
      expect(s.port).toBeGreaterThan(0);
      expect(s.receiveBufferBytes).toBeGreaterThanOrEqual(1 << 20);
      s.close();
      s.close();
    }
    expect(openFdCount()).toBe(before);
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
      const tx = UdpSocket.open({ address: nodes.ipA, netns: nodes.a.name, sendBufferBytes: 4096 });
      const ring = new PacketRing({ slots: 64 });
      const seen = new Set<number>();
      rx.startReading(ring, (n) => {
        for (let i = 0; i < n; i++) seen.add(ring.slab.readUInt16BE(ring.slotOffset(i)));
      });
      const slab = Buffer.alloc(64 * 1400);
      const table = new SendTable(64);
      tx.registerSlab(0, slab);
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
      rx.close();
      tx.close();
    } finally {
      nodes.delete();
    }
  });
});
