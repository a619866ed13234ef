import { describe, expect, it } from 'vitest';
import { PacketRing, SendTable, TunDevice, UdpSocket } from '../src/index.js';
import { failure } from './failure.js';

describe('PacketRing and SendTable', () => {
  it('cuts one slab into fixed-stride slots with headroom', () => {
    const ring = new PacketRing({ slots: 8, stride: 256, headroom: 32 });
    expect(ring.slab.length).toBe(8 * 256);
    expect(ring.slotOffset(0)).toBe(32);
    expect(ring.slotOffset(5)).toBe(5 * 256 + 32);
    expect(ring.capacity).toBe(224);
    expect(ring.lengths.length).toBe(8);
    expect(ring.addrs.length).toBe(32);
    // Outside V8's pool: the slab is its own ArrayBuffer, so the addon's pointer covers only it.
    expect(ring.slab.buffer.byteLength).toBe(8 * 256);
  });

  it('fills IPv4 and IPv6 destinations as big-endian words', () => {
    const t = new SendTable(4);
    t.set4(1, 2, 100, 50, 0xc0a80001, 8472);
    expect([t.slabs[1], t.offsets[1], t.lengths[1], t.addrs[4], t.ports[1]]).toEqual([
      2, 100, 50, 0xc0a80001, 8472,
    ]);
    const ip = Buffer.from('20010db8000000000000000000000001', 'hex');
    t.set6(2, 0, 10, 20, ip, 0, 4789);
    expect(Array.from(t.addrs.subarray(8, 12))).toEqual([0x20010db8, 0, 0, 1]);
    t.setLocal(3, 1, 64, 1400);
    expect([t.slabs[3], t.offsets[3], t.lengths[3], t.gso[3]]).toEqual([1, 64, 1400, 0]);
  });

  it('refuses shapes that cannot work, with ERR_TUN_BAD_OPTION', () => {
    expect(failure(() => new PacketRing({ slots: 0 }))).toEqual({
      code: 'ERR_TUN_BAD_OPTION',
      message: 'ring slots 0 is not valid: use 1 to 1024',
    });
    expect(failure(() => new PacketRing({ stride: 64, headroom: 64 }))).toEqual({
      code: 'ERR_TUN_BAD_OPTION',
      message: 'ring stride 64 is not valid: it must exceed the headroom (64) and be at most 1 MiB',
    });
    expect(failure(() => new PacketRing({ headroom: -1 })).code).toBe('ERR_TUN_BAD_OPTION');
    expect(failure(() => new SendTable(0))).toEqual({
      code: 'ERR_TUN_BAD_OPTION',
      message: 'send table capacity 0 is not valid: use 1 to 65536',
    });
  });
});

describe('errors that need no privileges', () => {
  it('name too long', () => {
    expect(failure(() => TunDevice.open({ name: 'a-name-far-too-long' }))).toEqual({
      code: 'ERR_TUN_NAME_TOO_LONG',
      message: 'device name "a-name-far-too-long" is 19 bytes; Linux allows at most 15',
    });
  });

  it('a name the kernel would refuse', () => {
    for (const name of ['', '.', '..', 'a/b', 'a:1', 'a b']) {
      const f = failure(() => TunDevice.open({ name }));
      expect(f.code).toBe('ERR_TUN_BAD_NAME');
      expect(f.message).toContain(`${JSON.stringify(name)} is not a valid interface name`);
    }
  });

  it('a queue count out of range', () => {
    expect(failure(() => TunDevice.open({ queues: 0 }))).toEqual({
      code: 'ERR_TUN_BAD_OPTION',
      message: 'TunDevice.open option queues 0 is not valid: use an integer from 1 to 256',
    });
  });

  it('the clone device missing', () => {
    const f = failure(() => TunDevice.open({ devicePath: '/dev/net/no-such-tun' }));
    expect(f.code).toBe('ERR_TUN_DEVICE_MISSING');
    expect(f.message).toMatch(
      /^opening TUN device weft%d: \/dev\/net\/no-such-tun is missing: load the tun module \(modprobe tun\), or in a container mount the host's \/dev\/net\/no-such-tun into it/,
    );
  });

  it('a network namespace that does not exist', () => {
    const f = failure(() => TunDevice.open({ netns: 'weft-no-such-namespace' }));
    expect(f.code).toBe('ERR_TUN_NETNS_MISSING');
    expect(f.message).toBe(
      'opening TUN device weft%d: network namespace not found (setns(/run/netns/weft-no-such-namespace)): create it first (ip netns add NAME)',
    );
    const u = failure(() => UdpSocket.open({ address: '127.0.0.1', netns: '/no/such/ns' }));
    expect(u.code).toBe('ERR_TUN_NETNS_MISSING');
  });

  it('send without a send table, outside it, and on a closed socket', () => {
    const sock = UdpSocket.open({ address: '127.0.0.1' });
    try {
      expect(failure(() => sock.send(0, 1))).toEqual({
        code: 'ERR_TUN_BAD_OPTION',
        message: 'send() needs a send table: call setSendTable() first',
      });
      sock.setSendTable(new SendTable(4));
      expect(failure(() => sock.send(2, 3))).toEqual({
        code: 'ERR_TUN_BAD_OPTION',
        message: 'send(2, 3) is outside the send table of 4 descriptors',
      });
    } finally {
      sock.close();
    }
    expect(sock.send(0, 1)).toBe(0);
    expect(failure(() => sock.startReading(new PacketRing(), () => undefined))).toEqual({
      code: 'ERR_TUN_CLOSED',
      message: 'this device or socket is closed',
    });
  });
});
