import { afterEach, describe, expect, it } from 'vitest';
import { pair, type Underlay, udpPacket, until } from './wireguard-pair.js';

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
