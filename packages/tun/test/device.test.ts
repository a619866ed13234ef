import { execFileSync, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { isWeftError } from '@weft/core';
import {
  ArpOperation,
  arp,
  EtherType,
  ethernet,
  icmpv4EchoReplyInPlace,
  Status,
} from '@weft/encap';
import { createNetns, privileged, sweepNetns } from '@weft/testkit';
import { afterAll, describe, expect, it } from 'vitest';
import { PacketRing, SendTable, TunDevice } from '../src/index.js';
import { openFdCount } from './fds.js';

const TAG = 'tundev';

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    return isWeftError(err) ? err.code : `not a WeftError: ${err}`;
  }
  return undefined;
}

describe.skipIf(!privileged('TUN/TAP device tests'))('TUN/TAP devices', () => {
  afterAll(() => sweepNetns(TAG));

  it("carries a real ping from the namespace's kernel to JS and back", async () => {
    const ns = createNetns(TAG);
    const dev = TunDevice.open({ name: 'weft%d', netns: ns.name });
    try {
      expect(dev.name).toMatch(/^weft\d+$/);
      dev.setMtu(1400);
      // flannel's shape: the node's address as a /32 and the cluster network routed in.
      dev.addAddress('10.99.1.1/32');
      dev.up();
      dev.addRoute('10.99.0.0/16');
      expect(ns.execSync(['ip', 'route', 'show', 'dev', dev.name])).toMatch(
        /10\.99\.0\.0\/16 scope link/,
      );
      expect(dev.mtu).toBe(1400);
      expect(dev.isUp).toBe(true);
      expect(dev.ifindex).toBeGreaterThan(1);
      const queue = dev.queues[0];
      const ring = new PacketRing({ slots: 32 });
      const table = new SendTable(32);
      queue.setSendTable(table);
      let requests = 0;
      queue.startReading(ring, (count) => {
        let out = 0;
        for (let i = 0; i < count; i++) {
          const off = ring.slotOffset(i);
          const len = ring.lengths[i];
          // The JS side answers echo requests with @weft/encap, in place, and writes them back.
          if (icmpv4EchoReplyInPlace(ring.slab, off, len) === Status.ok) {
            requests++;
            table.setLocal(out++, 0, off, len);
          }
        }
        expect(queue.send(0, out)).toBe(out);
      });
      const { stdout } = await ns.exec(['ping', '-c', '3', '-i', '0.2', '-W', '2', '10.99.7.2']);
      expect(stdout).toMatch(/3 packets transmitted, 3 received/);
      expect(requests).toBe(3);
      expect(queue.stats()?.packetsSent).toBe(3);
    } finally {
      dev.close();
      ns.delete();
    }
  });

  it("a TAP device sees the kernel's ARP request", async () => {
    const ns = createNetns(TAG);
    const dev = TunDevice.open({ name: 'tap%d', mode: 'tap', netns: ns.name });
    try {
      dev.setMac('02:00:00:00:aa:01');
      expect(dev.mac).toBe('02:00:00:00:aa:01');
      dev.addAddress('10.99.2.1/24');
      dev.up();
      const ring = new PacketRing();
      const seen = new Promise<ReturnType<typeof arp.parse>>((resolve) => {
        dev.queues[0].startReading(ring, (count) => {
          for (let i = 0; i < count; i++) {
            const off = ring.slotOffset(i);
            const eth = ethernet.parse(ring.slab, off, ring.lengths[i]);
            if (eth.ethertype === EtherType.arp)
              resolve(arp.parse(ring.slab, off + 14, ring.lengths[i] - 14));
          }
        });
      });
      // Nobody answers: the ping fails, but the kernel asks who has the address first.
      const ping = ns.exec(['ping', '-c', '1', '-W', '1', '10.99.2.2']).catch(() => undefined);
      const request = await seen;
      await ping;
      expect(request.operation).toBe(ArpOperation.request);
      expect(request.senderIp).toBe(0x0a630201);
      expect(request.targetIp).toBe(0x0a630202);
      expect(request.senderMac).toBe(0x02000000aa01);
    } finally {
      dev.close();
      ns.delete();
    }
  });

  it('opens several queues on one multi-queue device', () => {
    const ns = createNetns(TAG);
    const dev = TunDevice.open({ name: 'mq0', queues: 3, netns: ns.name });
    try {
      expect(dev.queues.length).toBe(3);
      expect(new Set(dev.queues.map((q) => q.fd)).size).toBe(3);
      const links = execFileSync('ip', ['-n', ns.name, '-d', 'link', 'show', 'mq0'], {
        encoding: 'utf8',
      });
      expect(links).toMatch(/tun type tun/);
      expect(links).toMatch(/multi_queue/);
    } finally {
      dev.close();
      ns.delete();
    }
  });

  it('closing the last fd removes the device; close twice is safe; no fd leaks', () => {
    const ns = createNetns(TAG);
    try {
      const before = openFdCount();
      for (let i = 0; i < 20; i++) {
        const dev = TunDevice.open({
          name: 'leak0',
          mode: i % 2 ? 'tap' : 'tun',
          queues: 1 + (i % 3),
          netns: ns.name,
        });
        dev.close();
        dev.close();
      }
      expect(openFdCount()).toBe(before);
      const links = execFileSync('ip', ['-n', ns.name, 'link', 'show'], { encoding: 'utf8' });
      expect(links).not.toContain('leak0');
    } finally {
      ns.delete();
    }
  });

  it('no read callback runs after close, even when closed inside one', async () => {
    const ns = createNetns(TAG);
    const dev = TunDevice.open({ name: 'cb0', netns: ns.name });
    try {
      dev.addAddress('10.99.3.1/24');
      dev.up();
      let calls = 0;
      dev.queues[0].startReading(new PacketRing(), () => {
        calls++;
        dev.close();
      });
      await ns
        .exec(['ping', '-c', '3', '-i', '0.2', '-W', '1', '10.99.3.2'])
        .catch(() => undefined);
      expect(calls).toBe(1);
      expect(dev.queues[0].fd).toBe(-1);
      expect(dev.queues[0].send(0, 1)).toBe(0);
    } finally {
      dev.close();
      ns.delete();
    }
  });

  describe('errors a person can act on', () => {
    it('name too long', () => {
      expect(codeOf(() => TunDevice.open({ name: 'a-name-far-too-long' }))).toBe(
        'ERR_TUN_NAME_TOO_LONG',
      );
      expect(() => TunDevice.open({ name: 'a-name-far-too-long' })).toThrow(
        /is 19 bytes; Linux allows at most 15/,
      );
    });

    it('name in use: by another device, and by a TUN device already open', () => {
      const ns = createNetns(TAG);
      try {
        execFileSync('ip', ['-n', ns.name, 'link', 'add', 'taken0', 'type', 'bridge']);
        expect(codeOf(() => TunDevice.open({ name: 'taken0', netns: ns.name }))).toBe(
          'ERR_TUN_NAME_IN_USE',
        );
        const dev = TunDevice.open({ name: 'busy0', netns: ns.name });
        try {
          expect(codeOf(() => TunDevice.open({ name: 'busy0', netns: ns.name }))).toBe(
            'ERR_TUN_NAME_IN_USE',
          );
          expect(() => TunDevice.open({ name: 'busy0', mode: 'tap', netns: ns.name })).toThrow(
            /name is in use by another device/,
          );
        } finally {
          dev.close();
        }
      } finally {
        ns.delete();
      }
    });

    it('/dev/net/tun missing', () => {
      expect(codeOf(() => TunDevice.open({ devicePath: '/dev/net/no-such-tun' }))).toBe(
        'ERR_TUN_DEVICE_MISSING',
      );
      expect(() => TunDevice.open({ devicePath: '/dev/net/no-such-tun' })).toThrow(
        /load the tun module .* mount the host's \/dev\/net\/no-such-tun/,
      );
    });

    it('invalid MTU', () => {
      const ns = createNetns(TAG);
      const dev = TunDevice.open({ name: 'mtu0', netns: ns.name });
      try {
        expect(codeOf(() => dev.setMtu(20))).toBe('ERR_TUN_BAD_MTU');
        expect(codeOf(() => dev.setMtu(70000))).toBe('ERR_TUN_BAD_MTU');
        expect(() => dev.setMtu(1.5)).toThrow(/MTU 1.5 is not valid for mtu0: use 68..65535/);
        dev.setMtu(9000);
        expect(dev.mtu).toBe(9000);
      } finally {
        dev.close();
        ns.delete();
      }
    });

    it('a network namespace that does not exist', () => {
      expect(codeOf(() => TunDevice.open({ netns: 'weft-no-such-namespace' }))).toBe(
        'ERR_TUN_NETNS_MISSING',
      );
    });

    it('not permitted without CAP_NET_ADMIN (a child process with the capability dropped)', () => {
      const script = fileURLToPath(new URL('./fixtures/open-tun.mjs', import.meta.url));
      const result = spawnSync(
        'setpriv',
        ['--inh-caps=-net_admin', '--bounding-set=-net_admin', process.execPath, script],
        { encoding: 'utf8' },
      );
      expect(result.stderr).toBe('');
      const outcome = JSON.parse(result.stdout) as { code: string; message: string };
      expect(outcome.code).toBe('ERR_TUN_PERMISSION');
      expect(outcome.message).toMatch(/needs CAP_NET_ADMIN: run as root or grant the capability/);
    });
  });
});
