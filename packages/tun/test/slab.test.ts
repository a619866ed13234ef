import { createSocket } from 'node:dgram';
import { once } from 'node:events';
import { MessageChannel } from 'node:worker_threads';
import { waitFor } from '@weft/testkit';
import { describe, expect, it } from 'vitest';
import { allocSlab, PacketRing, SendTable, UdpSocket } from '../src/index.js';
import { failure } from './failure.js';

describe('slabs: memory the addon points into', () => {
  it('allocSlab makes its own ArrayBuffer of exactly the size asked, outside the pool', () => {
    for (const bytes of [0, 1, 100, 4096, 70_000]) {
      const slab = allocSlab(bytes);
      expect(slab.length).toBe(bytes);
      expect(slab.byteOffset).toBe(0);
      expect(slab.buffer.byteLength).toBe(bytes);
    }
  });

  it('allocSlab refuses sizes that are not a whole number of bytes up to 1 GiB', () => {
    for (const bad of [-1, 1.5, Number.NaN, Number.POSITIVE_INFINITY, 2 ** 30 + 1, '64', undefined])
      expect(failure(() => allocSlab(bad as number))).toEqual({
        code: 'ERR_TUN_BAD_OPTION',
        message: `slab size ${String(bad)} is not valid: use 0 to 1073741824 bytes`,
      });
  });

  it('a slab, a ring and a send table cannot be transferred away (structuredClone, postMessage)', () => {
    const slab = allocSlab(64).fill(7);
    const ring = new PacketRing({ slots: 2 });
    const table = new SendTable(2);
    const arrays = [slab, ring.slab, ring.lengths, ring.addrs, ring.ports, ring.families, ring.gso];
    arrays.push(table.slabs, table.offsets, table.lengths, table.addrs, table.ports, table.gso);
    const { port1, port2 } = new MessageChannel();
    try {
      for (const a of arrays) {
        const before = a.byteLength;
        structuredClone(a, { transfer: [a.buffer as ArrayBuffer] });
        port1.postMessage(a, [a.buffer as ArrayBuffer]);
        expect(a.buffer.byteLength).toBeGreaterThan(0);
        expect(a.byteLength).toBe(before);
      }
      expect(slab[63]).toBe(7);
    } finally {
      port1.close();
      port2.close();
    }
  });

  it('attachSlab takes only slabs, at an index 0 to 255', () => {
    const sock = UdpSocket.open({ address: '127.0.0.1' });
    try {
      const notSlabs = [
        Buffer.alloc(64),
        Buffer.allocUnsafeSlow(64),
        new Uint8Array(64),
        allocSlab(64).subarray(0, 32),
        'slab',
        undefined,
      ];
      for (const bad of notSlabs)
        expect(failure(() => sock.attachSlab(1, bad as Buffer))).toEqual({
          code: 'ERR_TUN_BAD_OPTION',
          message:
            'attachSlab takes a Buffer made by allocSlab() or a PacketRing: other memory may be pooled, transferred or resized under the addon',
        });
      for (const bad of [-1, 256, 1.5, '1'])
        expect(failure(() => sock.attachSlab(bad as number, allocSlab(8)))).toEqual({
          code: 'ERR_TUN_BAD_OPTION',
          message: `slab index ${bad} is not valid: use 0 to 255`,
        });
      sock.attachSlab(255, allocSlab(8));
      sock.attachSlab(3, new PacketRing({ slots: 1 }).slab);
    } finally {
      sock.close();
    }
  });

  it("the read ring's slab cannot be swapped under it; the ring keeps receiving", async () => {
    const sock = UdpSocket.open({ address: '127.0.0.1' });
    const peer = createSocket('udp4');
    const ring = new PacketRing({ slots: 64 });
    const got: string[] = [];
    sock.startReading(
      ring,
      (n) => {
        for (let i = 0; i < n; i++)
          got.push(ring.slab.toString('latin1', ring.slotOffset(i), ring.slotOffset(i) + 20));
      },
      2,
    );
    try {
      for (const other of [allocSlab(16), allocSlab(ring.slab.length), new PacketRing().slab])
        expect(failure(() => sock.attachSlab(2, other))).toEqual({
          code: 'ERR_TUN_BAD_OPTION',
          message: 'slab 2 holds the read ring: attach this slab at another index',
        });
      // The same slab again is harmless.
      sock.attachSlab(2, ring.slab);
      for (let i = 0; i < 64; i++)
        peer.send(Buffer.alloc(1400, 0x41 + (i % 26)), sock.port, '127.0.0.1');
      await waitFor(() => got.length === 64, '64 datagrams in the ring');
      expect(got[25]).toBe('Z'.repeat(20));
    } finally {
      sock.close();
      peer.close();
    }
  });

  it('datagrams land in the ring after an attempt to transfer its slab, never in the copy', async () => {
    const sock = UdpSocket.open({ address: '127.0.0.1' });
    const peer = createSocket('udp4');
    peer.bind(0, '127.0.0.1');
    await once(peer, 'listening');
    const ring = new PacketRing({ slots: 4, stride: 256, headroom: 0 });
    ring.slab.fill(0);
    let seen = 0;
    sock.startReading(ring, (n) => {
      seen += n;
    });
    try {
      const copy = new Uint8Array(
        structuredClone(ring.slab.buffer, { transfer: [ring.slab.buffer as ArrayBuffer] }),
      );
      peer.send(Buffer.alloc(100, 0xab), sock.port, '127.0.0.1');
      await waitFor(() => seen === 1, 'one datagram');
      expect(ring.slab.length).toBe(4 * 256);
      expect(ring.slab[0]).toBe(0xab);
      expect(copy[0]).toBe(0);
    } finally {
      sock.close();
      peer.close();
    }
  });
});
