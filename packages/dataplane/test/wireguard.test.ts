import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import { IndexTable, NO_INDEX } from '../src/wireguard/index-table.js';
import { REPLAY_WINDOW, ReplayWindows } from '../src/wireguard/replay.js';
import { pair, Underlay, udpPacket, until } from './wireguard-pair.js';

let nets: Underlay[] = [];
afterEach(() => {
  for (const n of nets) n.close();
  nets = [];
});

function track<T extends { net: Underlay }>(x: T): T {
  nets.push(x.net);
  return x;
}

describe('WireGuard backend over an in-memory underlay', () => {
  it('handshakes on the first packet, delivers it, and carries traffic both ways', async () => {
    const { a, b, net } = track(pair());
    const first = udpPacket('10.244.1.5', '10.244.2.7', 'hello from a');
    a.sendPackets([first]);
    await until(() => b.delivered.length === 1, 2000, 'the first packet at b');
    expect(b.delivered[0].equals(first)).toBe(true);
    // initiation, response, then the staged packet: three datagrams.
    expect(net.wire.map((d) => d.bytes[0])).toEqual([1, 2, 4]);
    expect(net.wire[0].bytes.length).toBe(148);
    expect(net.wire[1].bytes.length).toBe(92);
    // 40 bytes of packet padded to 48, plus header and tag.
    expect(net.wire[2].bytes.length).toBe(16 + 48 + 16);
    const back = udpPacket('10.244.2.7', '10.244.1.5', 'and back');
    b.sendPackets([back]);
    await until(() => a.delivered.length === 1, 2000, 'the reply at a');
    expect(a.delivered[0].equals(back)).toBe(true);
    const ca = a.backend.counters();
    expect(ca.wireguard.handshakeInitiationsSent).toBe(1);
    expect(ca.wireguard.handshakeResponsesReceived).toBe(1);
    expect(b.backend.counters().wireguard.handshakeInitiationsReceived).toBe(1);
    expect(a.backend.peers()[0]).toMatchObject({
      publicKey: b.publicKey,
      endpoint: '192.0.2.2:51820',
      sessionUp: true,
    });
  });
});

/** Brings a pair to an established session (a -> b first packet) and clears the wire log. */
async function established(options = {}) {
  const p = track(pair(options));
  p.a.sendPackets([udpPacket('10.244.1.5', '10.244.2.7', 'hello')]);
  await until(() => p.b.delivered.length === 1, 2000, 'the first packet');
  p.net.wire.length = 0;
  return p;
}

describe('WireGuard backend: hostile input is dropped and counted, good traffic goes on', () => {
  it('drops a replayed transport message (counted) and delivers the original once', async () => {
    const { a, b, net } = await established();
    a.sendPackets([udpPacket('10.244.1.5', '10.244.2.7', 'once')]);
    await until(() => b.delivered.length === 2);
    const sent = net.wire.find((d) => d.bytes[0] === 4)!;
    net.inject(sent);
    net.inject(sent);
    await new Promise((r) => setImmediate(r));
    expect(b.delivered.length).toBe(2);
    expect(b.backend.counters().drops.replay).toBe(2);
  });

  it('drops a tampered message (counted) without moving the replay window', async () => {
    const { a, b, net } = await established();
    net.drop = (d) => d.bytes[0] === 4;
    a.sendPackets([udpPacket('10.244.1.5', '10.244.2.7', 'tamper me')]);
    await until(() => net.wire.length === 1);
    const original = net.wire[0];
    const forged = { ...original, bytes: Buffer.from(original.bytes) };
    forged.bytes[40] ^= 0x80;
    net.inject(forged);
    expect(b.backend.counters().drops.decrypt).toBe(1);
    // A forged counter far ahead must not push the window past the real message.
    const ahead = { ...original, bytes: Buffer.from(original.bytes) };
    ahead.bytes.writeUInt32LE(1_000_000, 8);
    net.inject(ahead);
    expect(b.backend.counters().drops.decrypt).toBe(2);
    net.inject(original);
    expect(b.delivered.length).toBe(2);
    expect(b.delivered[1].subarray(28).toString()).toBe('tamper me');
  });

  it('counts garbage, truncated and unknown-index messages, then carries the next good one', async () => {
    const { a, b, net } = await established();
    const from = { from: a.address, fromPort: 51820, to: b.address, toPort: 51820 };
    const junk = [
      Buffer.alloc(0),
      Buffer.from('xyz'),
      Buffer.from([9, 0, 0, 0, 1, 2, 3, 4]),
      Buffer.from([4, 1, 0, 0, ...Buffer.alloc(40)]),
      Buffer.alloc(31, 0).fill(4, 0, 1),
      Buffer.concat([Buffer.from([1, 0, 0, 0]), Buffer.alloc(100)]),
      Buffer.concat([Buffer.from([4, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef]), Buffer.alloc(40)]),
    ];
    b.receive(junk.map((bytes) => ({ ...from, bytes })));
    const c = b.backend.counters();
    expect(c.drops.truncated).toBe(4);
    expect(c.drops.badHeader).toBe(2);
    expect(c.drops.unknownIndex).toBe(1);
    a.sendPackets([udpPacket('10.244.1.5', '10.244.2.7', 'after junk')]);
    await until(() => b.delivered.length === 2);
    expect(net.wire.length).toBe(1);
  });

  it("drops an inner packet whose source is not among the sending peer's AllowedIPs", async () => {
    const { a, b } = await established();
    // b sends a packet claiming to come from a third subnet; a must not accept it from b.
    b.sendPackets([udpPacket('10.244.9.9', '10.244.1.5', 'spoofed')]);
    await until(() => a.backend.counters().drops.notAllowedSource === 1);
    expect(a.delivered.length).toBe(0);
  });

  it('ignores a handshake from a key it does not know: no reply, counted', async () => {
    const net = new Underlay();
    nets.push(net);
    const b = net.add('b', '192.0.2.2');
    const c = net.add('c', '192.0.2.3');
    // c knows b; b has no peer c.
    c.backend.setNodes([
      { subnet: '10.244.2.0/24', publicIp: '192.0.2.2', publicKey: b.publicKey } as never,
    ]);
    b.backend.setNodes([]);
    c.sendPackets([udpPacket('10.244.3.1', '10.244.2.7', 'let me in')]);
    await until(() => b.backend.counters().drops.handshakeRejected === 1);
    await new Promise((r) => setTimeout(r, 20));
    expect(net.wire.map((d) => [d.from, d.bytes[0]])).toEqual([[c.address, 1]]);
    expect(b.delivered.length).toBe(0);
    // A message with a wrong MAC1 is not even decrypted.
    const bad = Buffer.from(net.wire[0].bytes);
    bad[120] ^= 1;
    net.inject({ ...net.wire[0], bytes: bad });
    await until(() => b.backend.counters().drops.badMac === 1);
  });

  it('under a handshake flood answers with cookies, keeps established peers flowing, and a real peer completes with MAC2', async () => {
    const timers = { rekeyTimeoutMs: 100 };
    const { a, b, net } = await established({ timers });
    const c = net.add('c', '192.0.2.3', { timers });
    c.backend.setNodes([
      { subnet: '10.244.2.0/24', publicIp: '192.0.2.2', publicKey: b.publicKey } as never,
    ]);
    net.drop = (d) => d.from === c.address && d.bytes[0] === 1;
    c.sendPackets([udpPacket('10.244.3.1', '10.244.2.7', 'x')]);
    await until(() => net.wire.some((d) => d.from === c.address));
    const initiation = net.wire.find((d) => d.from === c.address)!;
    net.drop = () => false;
    // 600 copies at once: the queue passes an eighth full, b is under load.
    const flood = Array.from({ length: 600 }, () => initiation);
    for (let k = 0; k < flood.length; k += 64) b.receive(flood.slice(k, k + 64));
    // Established traffic between a and b goes on meanwhile.
    a.sendPackets([udpPacket('10.244.1.5', '10.244.2.7', 'during the flood')]);
    await until(() => b.delivered.length === 2, 2000, 'data during the flood');
    // Each of the 600 gets one outcome: a cookie reply, or (before b saw the load) a rejection;
    // c's own retransmissions (every 100 ms here) add a few more.
    const outcomes = () => {
      const cb = b.backend.counters();
      return cb.drops.handshakeRejected + cb.wireguard.cookieRepliesSent + cb.drops.rateLimited;
    };
    await until(() => outcomes() >= 600, 3000, 'every flooded message handled');
    expect(b.backend.counters().wireguard.cookieRepliesSent).toBeGreaterThan(400);
    // c takes the cookie (a reply to its own initiation's MAC1) and retries with MAC2.
    await until(
      () => c.backend.counters().wireguard.cookieRepliesReceived > 0,
      2000,
      'c takes a cookie',
    );
    // A fresh handshake from a while b is still under load: cookie first, then MAC2, then a session.
    b.backend.expireSessions();
    a.backend.expireSessions();
    net.wire.length = 0;
    for (let k = 0; k < 200; k += 64) b.receive(flood.slice(k, k + 64));
    a.sendPackets([udpPacket('10.244.1.5', '10.244.2.7', 'new session')]);
    await until(() => b.delivered.length === 3, 3000, 'a completes under load');
    expect(a.backend.counters().wireguard.cookieRepliesReceived).toBeGreaterThan(0);
  });

  it('sends a keepalive when it received data and had nothing to send (passive keepalive)', async () => {
    const { b, net } = await established({ timers: { keepaliveTimeoutMs: 50 } });
    await until(
      () => net.wire.some((d) => d.from === b.address && d.bytes.length === 32),
      2000,
      'keepalive',
    );
    expect(b.backend.counters().wireguard.keepalivesSent).toBe(1);
  });
});

describe('WireGuard tables', () => {
  it('the replay window accepts each counter once and refuses what fell behind (a Set as the model)', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 20_000 }), { maxLength: 300 }), (counters) => {
        const w = new ReplayWindows(2);
        const seen = new Set<number>();
        let max = -1;
        for (const n of counters) {
          const expected = !seen.has(n) && !(max - n > REPLAY_WINDOW);
          expect(w.wouldAccept(1, n)).toBe(expected);
          expect(w.accept(1, n)).toBe(expected);
          if (expected) {
            seen.add(n);
            max = Math.max(max, n);
          }
        }
        // The other keypair's window is untouched.
        expect(w.wouldAccept(0, 0)).toBe(true);
      }),
    );
  });

  it('the index table holds random indices >= 2^31 as well as small ones (a Map as the model)', () => {
    fc.assert(
      fc.property(
        fc.array(fc.oneof(fc.constant('add'), fc.nat(50)), { maxLength: 400 }),
        (steps) => {
          const t = new IndexTable();
          const model = new Map<number, number>();
          const keys: number[] = [];
          steps.forEach((step, i) => {
            if (step === 'add') {
              const index = t.add(i - 200);
              expect(model.has(index)).toBe(false);
              model.set(index, i - 200);
              keys.push(index);
            } else if (keys.length > 0) {
              const k = keys[step % keys.length];
              t.remove(k);
              model.delete(k);
            }
          });
          for (const k of keys) expect(t.lookup(k)).toBe(model.get(k) ?? NO_INDEX);
          expect(t.size).toBe(model.size);
        },
      ),
    );
  });
});

describe('WireGuard hot paths allocate nothing per packet', () => {
  it('outbound and inbound batches with a live session: under 1 byte of heap per packet', async () => {
    const { a, b } = await established();
    const batch = 64;
    const ring = a.queue.ring;
    for (let i = 0; i < batch; i++) {
      const p = udpPacket('10.244.1.5', `10.244.2.${i + 1}`, Buffer.alloc(1372, i));
      p.copy(ring.slab, ring.slotOffset(i));
      ring.lengths[i] = p.length;
    }
    const plain = Buffer.from(ring.slab);
    // Sends go nowhere (the stand-in's own send keeps numbers only).
    a.socket.send = (_start: number, count: number) => count;
    b.queue.send = (_start: number, count: number) => count;
    const out = () => {
      ring.slab.set(plain);
      a.queue.onBatch(batch);
    };
    out();
    // What a sent, as b receives it.
    const rx = b.socket.ring;
    for (let k = 0; k < batch; k++) {
      const bytes = a.socket.sentBytes(k);
      rx.slab.set(bytes, rx.slotOffset(k));
      rx.lengths[k] = bytes.length;
      rx.families[k] = 4;
      rx.addrs[k * 4] = a.address;
      rx.ports[k] = 51820;
    }
    const sealed = Buffer.from(rx.slab);
    const kp = b.backend.engine.pCurrent[0];
    const inb = () => {
      rx.slab.set(sealed);
      b.backend.engine.replay.reset(kp);
      b.socket.onBatch(batch);
    };
    const perPacket = (fn: () => void) => {
      for (let k = 0; k < 2000; k++) fn();
      const rounds = 200;
      const before = process.memoryUsage().heapUsed;
      for (let k = 0; k < rounds; k++) fn();
      return (process.memoryUsage().heapUsed - before) / (rounds * batch);
    };
    const outBytes = Math.min(perPacket(out), perPacket(out), perPacket(out));
    const inBytes = Math.min(perPacket(inb), perPacket(inb), perPacket(inb));
    expect(b.backend.counters().rxPackets).toBeGreaterThan(batch * 6000);
    expect(outBytes).toBeLessThan(1);
    expect(inBytes).toBeLessThan(1);
  });
});

describe('WireGuard configuration errors name what is wrong and change nothing', () => {
  const failure = (fn: () => unknown) => {
    try {
      fn();
    } catch (err) {
      return { code: (err as { code: string }).code, message: (err as Error).message };
    }
    throw new Error('nothing thrown');
  };

  it('refuses bad peers atomically', async () => {
    const { a, b } = track(pair());
    const good = { subnet: '10.244.2.0/24', publicIp: '192.0.2.2', publicKey: b.publicKey };
    const before = a.backend.peers();
    const cases: [object, RegExp][] = [
      [{ ...good, publicKey: 'not a key' }, /publicKey "not a key" is not a WireGuard key/],
      [{ ...good, publicKey: a.publicKey }, /own public key/],
      [{ ...good, subnet: undefined }, /a subnet \(or subnet6\) is required/],
      [{ ...good, publicIp: '2001:db8::2' }, /is IPv6 but this device's socket is IPv4/],
    ];
    for (const [node, message] of cases) {
      const f = failure(() => a.backend.setNodes([node as never]));
      expect(f.message).toMatch(message);
      expect(f.code).toMatch(/^ERR_WIREGUARD_BAD_(KEY|PEER)$/);
      expect(a.backend.peers()).toEqual(before);
    }
    const dup = failure(() => a.backend.setNodes([good, { ...good, subnet: '10.244.3.0/24' }]));
    expect(dup.message).toMatch(/is listed twice/);
    expect(a.backend.peers()).toEqual(before);
    // A peer that stays keeps its session across a new snapshot.
    a.sendPackets([udpPacket('10.244.1.5', '10.244.2.7', 'x')]);
    await until(() => b.delivered.length === 1);
    a.backend.setNodes([
      good,
      {
        subnet: '10.244.3.0/24',
        publicIp: '192.0.2.3',
        publicKey: 'HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=',
      },
    ]);
    expect(a.backend.peers().find((p) => p.publicKey === b.publicKey)?.sessionUp).toBe(true);
    expect(a.backend.removeNode('10.244.3.0/24')).toBe(true);
    expect(a.backend.peers().length).toBe(1);
  });

  it('refuses bad options before opening anything', async () => {
    const { WireguardBackend } = await import('../src/index.js');
    const { standInBackendIo } = await import('../src/testing.js');
    const open = (o: object) =>
      failure(() => WireguardBackend.overIo(standInBackendIo().io, o as never));
    expect(open({})).toEqual({
      code: 'ERR_WIREGUARD_BAD_OPTION',
      message: 'privateKey is required: generate one with `wg genkey`',
    });
    expect(open({ privateKey: 'abc' }).code).toBe('ERR_WIREGUARD_BAD_KEY');
    const key = 'YAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=';
    expect(open({ privateKey: key, presharedKey: 'x' }).message).toMatch(/presharedKey \(PSK\)/);
    expect(open({ privateKey: key, listenPort: 70000 }).message).toMatch(/listenPort 70000/);
    expect(open({ privateKey: key, persistentKeepaliveSeconds: 1.5 }).message).toMatch(
      /persistentKeepaliveSeconds 1.5/,
    );
    expect(open({ privateKey: key, nodeAddress: 'fd00::1' }).message).toMatch(/must be IPv4/);
  });
});
