import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import {
  ArpOperation,
  arp,
  EtherType,
  ethernet,
  IpProtocol,
  icmpv4EchoReplyInPlace,
  ipv4,
  Status,
  udp,
} from '@weft/encap';
import { createNetns, type Netns, privileged, sweepNetns, waitFor } from '@weft/testkit';
import { afterAll, describe, expect, it } from 'vitest';
import { allocSlab, PacketRing, SendTable, TunDevice, TunQueue, UdpSocket } from '../src/index.js';
import { failure } from './failure.js';
import { openFdCount } from './fds.js';
import { startDgramPeer } from './peer.js';

const TAG = 'tundev';

interface IpLink {
  ifindex: number;
  ifname: string;
  mtu: number;
  flags: string[];
  address?: string;
  addr_info?: { family: string; local: string; prefixlen: number }[];
}

/** The kernel's own view of a link, from iproute2. */
function linkOf(ns: string, name: string): IpLink {
  const out = execFileSync('ip', ['-j', '-n', ns, 'addr', 'show', 'dev', name], {
    encoding: 'utf8',
  });
  return (JSON.parse(out) as IpLink[])[0];
}

/** TUN/TAP flags as the kernel reports them in sysfs (IFF_TUN 0x1, IFF_TAP 0x2, ...). */
function tunFlags(ns: Netns, name: string): number {
  return Number(ns.execSync(['cat', `/sys/class/net/${name}/tun_flags`]).trim());
}

/** The open flags of one of our fds, from /proc (octal, as the kernel prints them). */
function fdFlags(fd: number): number {
  const m = /^flags:\s+([0-7]+)$/m.exec(readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'));
  if (!m) throw new Error(`no flags for fd ${fd}`);
  return Number.parseInt(m[1], 8);
}

/** The errno a TUN fd reports once its device is gone. */
const EBADFD = 77;
const IFF_TUN = 0x1;
const IFF_TAP = 0x2;
const IFF_NO_PI = 0x1000;
const IFF_MULTI_QUEUE = 0x100;
const O_NONBLOCK = 0o4000;
const O_CLOEXEC = 0o2000000;

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

  it('a queue released by one handle is adopted by another and carries packets; steering by flow hash', async () => {
    const ns = createNetns(TAG);
    const dev = TunDevice.open({ name: 'rq0', netns: ns.name, queues: 2 });
    try {
      dev.disableIpv6();
      dev.addAddress('10.99.8.1/24');
      dev.up();
      dev.queues[0].steerByFlowHash();
      const fds = openFdCount();
      const fd = dev.queues[1].release();
      expect(dev.queues[1].closed).toBe(true);
      expect(() => dev.queues[1].release()).toThrow(
        expect.objectContaining({ code: 'ERR_TUN_CLOSED' }),
      );
      expect(openFdCount()).toBe(fds);
      const q = TunQueue.adopt(fd, dev.name);
      expect(q.fd).toBe(fd);
      // Another handle cannot take it while this one holds it.
      expect(() => TunQueue.adopt(fd, dev.name)).toThrow(
        expect.objectContaining({ code: 'ERR_TUN_BAD_OPTION' }),
      );
      // Either queue may get the kernel's packets: read both; pings go out as packets.
      const seen: number[] = [];
      for (const queue of [dev.queues[0], q]) {
        const ring = new PacketRing({ slots: 8 });
        queue.startReading(ring, (n) => {
          for (let i = 0; i < n; i++) seen.push(ring.lengths[i]);
        });
      }
      await ns.exec(['ping', '-c', '2', '-i', '0.2', '-W', '1', '10.99.8.2']).catch(() => {});
      await waitFor(() => seen.length >= 2, 'the pings read from the queues');
      q.close();
      expect(openFdCount()).toBe(fds - 1);
      const sock = UdpSocket.open({ address: '127.0.0.1' });
      const sfd = sock.release();
      const again = UdpSocket.adopt(sfd, sock);
      expect(again.port).toBe(sock.port);
      again.close();
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

  it('opens TUN and TAP with IFF_NO_PI, non-blocking and close-on-exec', () => {
    const ns = createNetns(TAG);
    const tun = TunDevice.open({ name: 'fl%d', netns: ns.name });
    const tap = TunDevice.open({ name: 'fl%d', mode: 'tap', netns: ns.name });
    const mq = TunDevice.open({ name: 'flmq0', queues: 2, netns: ns.name });
    try {
      expect(tun.name).toBe('fl0');
      expect(tap.name).toBe('fl1');
      expect(tunFlags(ns, 'fl0')).toBe(IFF_TUN | IFF_NO_PI);
      expect(tunFlags(ns, 'fl1')).toBe(IFF_TAP | IFF_NO_PI);
      expect(tunFlags(ns, 'flmq0')).toBe(IFF_TUN | IFF_NO_PI | IFF_MULTI_QUEUE);
      for (const q of [...tun.queues, ...tap.queues, ...mq.queues]) {
        expect(fdFlags(q.fd) & O_NONBLOCK).toBe(O_NONBLOCK);
        expect(fdFlags(q.fd) & O_CLOEXEC).toBe(O_CLOEXEC);
      }
    } finally {
      tun.close();
      tap.close();
      mq.close();
      ns.delete();
    }
  });

  it('configures MTU, up/down, IPv4 and IPv6 addresses and a MAC, as the kernel sees them', () => {
    const ns = createNetns(TAG);
    const tap = TunDevice.open({ name: 'cfg0', mode: 'tap', netns: ns.name });
    try {
      tap.setMtu(1450);
      tap.setMac('02:42:0a:f4:01:00');
      tap.addAddress('10.244.1.0/32');
      tap.addAddress('2001:db8:244:1::1/64');
      tap.up();
      let link = linkOf(ns.name, 'cfg0');
      expect(tap.ifindex).toBe(link.ifindex);
      expect(tap.mtu).toBe(1450);
      expect(link.mtu).toBe(1450);
      expect(link.address).toBe('02:42:0a:f4:01:00');
      expect(tap.mac).toBe('02:42:0a:f4:01:00');
      expect(link.flags).toContain('UP');
      expect(tap.isUp).toBe(true);
      const addrs = (link.addr_info ?? []).map((a) => `${a.local}/${a.prefixlen}`);
      expect(addrs).toContain('10.244.1.0/32');
      expect(addrs).toContain('2001:db8:244:1::1/64');
      tap.down();
      link = linkOf(ns.name, 'cfg0');
      expect(link.flags).not.toContain('UP');
      expect(tap.isUp).toBe(false);
      // Only a TAP device has a MAC.
      const tun = TunDevice.open({ name: 'cfg1', netns: ns.name });
      try {
        expect(failure(() => tun.setMac('02:00:00:00:00:01')).message).toBe(
          'cfg1 is a TUN device: only a TAP device has a MAC',
        );
      } finally {
        tun.close();
      }
    } finally {
      tap.close();
      ns.delete();
    }
  });

  it('writes a batch of 64 packets in one call; the kernel delivers them to a dgram socket', async () => {
    const ns = createNetns(TAG);
    const dev = TunDevice.open({ name: 'bw0', netns: ns.name });
    const peer = startDgramPeer(ns, ['listen', '10.99.5.1', '7000']);
    try {
      dev.disableIpv6();
      dev.addAddress('10.99.5.1/24');
      dev.up();
      await peer.port();
      const queue = dev.queues[0];
      const ring = new PacketRing({ slots: 64 });
      const table = new SendTable(64);
      queue.attachSlab(0, ring.slab);
      queue.setSendTable(table);
      for (let i = 0; i < 64; i++) {
        const off = ring.slotOffset(i);
        const body = Buffer.from(`packet ${i} from the TUN`);
        body.copy(ring.slab, off + 28);
        ipv4.emit(
          {
            src: 0x0a630502,
            dst: 0x0a630501,
            protocol: IpProtocol.udp,
            ttl: 64,
            payloadLength: 8 + body.length,
          },
          ring.slab,
          off,
        );
        udp.emit(
          { srcPort: 5000 + i, dstPort: 7000, payloadLength: body.length },
          ring.slab,
          off + 20,
          {
            ipVersion: 4,
            ipOffset: off,
          },
        );
        table.setLocal(i, 0, off, 28 + body.length);
      }
      expect(queue.send(0, 64)).toBe(64);
      await waitFor(() => peer.datagrams().length === 64, '64 datagrams at the dgram peer');
      const got = peer.datagrams();
      expect(got.map((d) => Buffer.from(d.hex ?? '', 'hex').toString())).toEqual(
        Array.from({ length: 64 }, (_, i) => `packet ${i} from the TUN`),
      );
      expect(got.map((d) => `${d.address}:${d.port}`)).toEqual(
        Array.from({ length: 64 }, (_, i) => `10.99.5.2:${5000 + i}`),
      );
      expect(queue.stats()?.packetsSent).toBe(64);
    } finally {
      peer.kill();
      dev.close();
      ns.delete();
    }
  });

  it('writes a packet gathered from pieces (headers in one slab, payload in another) with writev', async () => {
    const ns = createNetns(TAG);
    const dev = TunDevice.open({ name: 'gw0', netns: ns.name });
    const peer = startDgramPeer(ns, ['listen', '10.99.6.1', '7000']);
    try {
      dev.disableIpv6();
      dev.addAddress('10.99.6.1/24');
      dev.up();
      await peer.port();
      const queue = dev.queues[0];
      const headers = allocSlab(256);
      const payloads = allocSlab(4096);
      const table = new SendTable(8);
      queue.attachSlab(1, headers);
      queue.attachSlab(2, payloads);
      queue.setSendTable(table);
      const bodies = ['gathered one', 'gathered two, a little longer'].map((t) => Buffer.from(t));
      let n = 0;
      bodies.forEach((body, k) => {
        const h = k * 64;
        ipv4.emit(
          {
            src: 0x0a630602,
            dst: 0x0a630601,
            protocol: IpProtocol.udp,
            ttl: 64,
            payloadLength: 8 + body.length,
          },
          headers,
          h,
        );
        // The UDP header with the payload, its checksum zero (none, as IPv4 allows).
        body.copy(payloads, 1000 * k + 8);
        udp.emit(
          { srcPort: 6000 + k, dstPort: 7000, payloadLength: body.length },
          payloads,
          1000 * k,
        );
        table.setLocal(n++, 1, h, 20);
        table.append(n++, 2, 1000 * k, 8 + body.length);
      });
      expect(queue.send(0, n)).toBe(n);
      await waitFor(() => peer.datagrams().length === 2, 'two datagrams at the dgram peer');
      expect(peer.datagrams().map((d) => Buffer.from(d.hex ?? '', 'hex').toString())).toEqual([
        'gathered one',
        'gathered two, a little longer',
      ]);
      expect(queue.stats()).toMatchObject({ packetsSent: 2, badDescriptors: 0 });
    } finally {
      peer.kill();
      dev.close();
      ns.delete();
    }
  });

  it('reads every ready packet in one call, up to the ring, and JS hears each batch once', async () => {
    const ns = createNetns(TAG);
    const dev = TunDevice.open({ name: 'br0', netns: ns.name });
    try {
      dev.disableIpv6();
      dev.addAddress('10.99.6.1/24');
      dev.up();
      const queue = dev.queues[0];
      const ring = new PacketRing({ slots: 32 });
      const batches: number[] = [];
      const bodies: string[] = [];
      queue.startReading(ring, (count) => {
        batches.push(count);
        for (let i = 0; i < count; i++) {
          const off = ring.slotOffset(i);
          const len = ring.lengths[i];
          const ip = ipv4.parse(ring.slab, off, len);
          const u = udp.parse(ring.slab, off + 20, len - 20);
          if (ip.protocol === IpProtocol.udp && u.dstPort === 7001)
            bodies.push(ring.slab.toString('utf8', off + 28, off + len));
        }
      });
      // Paused, the kernel queues the packets on the device; resumed, they come in full rings.
      queue.pause();
      const sender = startDgramPeer(ns, ['send', '10.99.6.2', '7001', '64']);
      expect(await sender.exited).toBe(0);
      await new Promise((r) => setTimeout(r, 50));
      expect(batches).toEqual([]);
      queue.resume();
      await waitFor(() => bodies.length === 64, '64 packets from the TUN');
      expect(batches).toEqual([32, 32]);
      expect(bodies).toEqual(Array.from({ length: 64 }, (_, i) => `datagram ${i}`));
    } finally {
      dev.close();
      ns.delete();
    }
  });

  it('a packet longer than a slot is reported cut (-1), never handed over short', async () => {
    const ns = createNetns(TAG);
    const dev = TunDevice.open({ name: 'cut0', netns: ns.name });
    try {
      dev.disableIpv6();
      dev.setMtu(9000);
      dev.addAddress('10.99.8.1/24');
      dev.up();
      const ring = new PacketRing({ slots: 4, stride: 1024 });
      const lengths: number[] = [];
      dev.queues[0].startReading(ring, (count) => {
        for (let i = 0; i < count; i++) lengths.push(ring.lengths[i]);
      });
      // 3000 + 28 bytes does not fit 960; 100 + 28 does.
      await ns
        .exec(['ping', '-c', '1', '-W', '1', '-s', '3000', '10.99.8.2'])
        .catch(() => undefined);
      await ns
        .exec(['ping', '-c', '1', '-W', '1', '-s', '100', '10.99.8.2'])
        .catch(() => undefined);
      await waitFor(() => lengths.length === 2, 'two packets');
      expect(lengths).toEqual([-1, 128]);
      expect(dev.queues[0].stats()?.truncated).toBe(1);
    } finally {
      dev.close();
      ns.delete();
    }
  });

  it('a deleted device: the reader hears -EBADFD once, the poll stops, sends are counted, not made', async () => {
    const ns = createNetns(TAG);
    const dev = TunDevice.open({ name: 'gone0', netns: ns.name });
    try {
      dev.up();
      const queue = dev.queues[0];
      const ring = new PacketRing({ slots: 4 });
      const table = new SendTable(4);
      const heard: number[] = [];
      queue.startReading(ring, (n) => heard.push(n));
      queue.attachSlab(1, allocSlab(64));
      queue.setSendTable(table);
      expect(queue.failed).toBe(false);
      expect(queue.error).toBeUndefined();
      execFileSync('ip', ['-n', ns.name, 'link', 'del', 'gone0']);
      await waitFor(() => heard.length > 0, 'the read callback to hear the loss');
      // Pausing and resuming must not re-arm the dead fd.
      queue.pause();
      queue.resume();
      await new Promise((r) => setTimeout(r, 200));
      expect(heard).toEqual([-EBADFD]);
      expect(queue.failed).toBe(true);
      expect(queue.error?.code).toBe('ERR_TUN_IO_FAILED');
      expect(queue.error?.message).toBe(
        'TUN/TAP device gone0 failed (EBADFD): its device was deleted (ip link del): open the device again',
      );
      expect(queue.stats()).toMatchObject({
        readErrors: 1,
        lastReadErrno: EBADFD,
        failedErrno: EBADFD,
      });
      for (let i = 0; i < 4; i++) table.setLocal(i, 1, 0, 40);
      expect(queue.send(0, 4)).toBe(4);
      expect(queue.stats()).toMatchObject({ sendErrors: 4, lastSendErrno: EBADFD, packetsSent: 0 });
      expect(failure(() => queue.startReading(ring, () => undefined))).toEqual({
        code: 'ERR_TUN_IO_FAILED',
        message:
          'TUN/TAP device gone0 failed (EBADFD): its device was deleted (ip link del): open the device again',
      });
      dev.close();
      // The failure stays readable after close.
      expect(queue.error?.code).toBe('ERR_TUN_IO_FAILED');
    } finally {
      dev.close();
      ns.delete();
    }
  });

  it('a deleted device under a queue that only writes: the first send finds it, counts it and ends the queue', () => {
    const ns = createNetns(TAG);
    const dev = TunDevice.open({ name: 'gone1', netns: ns.name });
    try {
      dev.up();
      const queue = dev.queues[0];
      const table = new SendTable(4);
      queue.attachSlab(0, allocSlab(64));
      queue.setSendTable(table);
      for (let i = 0; i < 4; i++) table.setLocal(i, 0, 0, 40);
      execFileSync('ip', ['-n', ns.name, 'link', 'del', 'gone1']);
      expect(queue.send(0, 4)).toBe(4);
      expect(queue.stats()).toMatchObject({
        packetsSent: 0,
        sendErrors: 4,
        lastSendErrno: EBADFD,
        failedErrno: EBADFD,
      });
      expect(queue.error?.message).toBe(
        'TUN/TAP device gone1 failed (EBADFD): its device was deleted (ip link del): open the device again',
      );
      expect(queue.send(0, 4)).toBe(4);
      expect(queue.stats()?.sendErrors).toBe(8);
    } finally {
      dev.close();
      ns.delete();
    }
  });

  it('a process whose device was deleted under a reading queue exits by itself, without spinning', () => {
    const ns = createNetns(TAG);
    try {
      const script = fileURLToPath(new URL('./fixtures/device-loss.mjs', import.meta.url));
      const result = spawnSync(process.execPath, [script, ns.name], {
        encoding: 'utf8',
        timeout: 10_000,
      });
      expect(result.signal).toBeNull();
      expect(result.stderr).toBe('');
      expect(result.status).toBe(0);
      const out = JSON.parse(result.stdout) as {
        heard: number[];
        cpuMs: number;
        failed: boolean;
        code: string;
      };
      expect(out.heard).toEqual([-EBADFD]);
      expect(out.failed).toBe(true);
      expect(out.code).toBe('ERR_TUN_IO_FAILED');
      expect(out.cpuMs).toBeLessThan(100);
    } finally {
      ns.delete();
    }
  });

  describe('errors a person can act on (the unprivileged ones are in unit.test.ts)', () => {
    it('name in use: by another device, and by a TUN device already open', () => {
      const ns = createNetns(TAG);
      try {
        execFileSync('ip', ['-n', ns.name, 'link', 'add', 'taken0', 'type', 'bridge']);
        const byBridge = failure(() => TunDevice.open({ name: 'taken0', netns: ns.name }));
        expect(byBridge.code).toBe('ERR_TUN_NAME_IN_USE');
        expect(byBridge.message).toMatch(
          /^opening TUN device taken0: the name is in use by another device .*: pick another name, or remove it \(ip link del NAME\)$/,
        );
        const dev = TunDevice.open({ name: 'busy0', netns: ns.name });
        try {
          const again = failure(() => TunDevice.open({ name: 'busy0', netns: ns.name }));
          expect(again.code).toBe('ERR_TUN_NAME_IN_USE');
          expect(again.message).toMatch(/^opening TUN device busy0: the name is in use/);
          const asTap = failure(() =>
            TunDevice.open({ name: 'busy0', mode: 'tap', netns: ns.name }),
          );
          expect(asTap.code).toBe('ERR_TUN_NAME_IN_USE');
          expect(asTap.message).toMatch(/^opening TAP device busy0: the name is in use/);
        } finally {
          dev.close();
        }
      } finally {
        ns.delete();
      }
    });

    it('/dev/net/tun missing, as in a container that was not given it', () => {
      // A child in its own mount namespace with an empty /dev/net: the default path is gone.
      const script = fileURLToPath(new URL('./fixtures/open-tun.mjs', import.meta.url));
      const result = spawnSync(
        'unshare',
        [
          '--mount',
          '--propagation',
          'private',
          'sh',
          '-c',
          'mount -t tmpfs weft-test /dev/net && exec "$0" "$1"',
          process.execPath,
          script,
        ],
        { encoding: 'utf8' },
      );
      expect(result.stderr).toBe('');
      const outcome = JSON.parse(result.stdout) as { code: string; message: string };
      expect(outcome.code).toBe('ERR_TUN_DEVICE_MISSING');
      expect(outcome.message).toBe(
        "opening TUN device noperm0: /dev/net/tun is missing: load the tun module (modprobe tun), or in a container mount the host's /dev/net/tun into it (the error kube-flannel pods show when the device is not mounted)",
      );
    });

    it('invalid MTU', () => {
      const ns = createNetns(TAG);
      const dev = TunDevice.open({ name: 'mtu0', netns: ns.name });
      try {
        for (const bad of [20, 67, 65536, 1.5, Number.NaN]) {
          expect(failure(() => dev.setMtu(bad))).toEqual({
            code: 'ERR_TUN_BAD_MTU',
            message: `MTU ${bad} is not valid for mtu0: use 68..65535`,
          });
        }
        dev.setMtu(9000);
        expect(dev.mtu).toBe(9000);
        expect(linkOf(ns.name, 'mtu0').mtu).toBe(9000);
        // Below 1280 the kernel drops IPv6 from the device; adding an IPv6 address says why.
        dev.setMtu(1000);
        const v6 = failure(() => dev.addAddress('2001:db8:7::1/64'));
        expect(v6.code).toBe('ERR_TUN_BAD_MTU');
        expect(v6.message).toBe(
          'cannot add 2001:db8:7::1/64 to mtu0: IPv6 needs an MTU of at least 1280 (RFC 8200) and mtu0 has 1000: raise it first',
        );
      } finally {
        dev.close();
        ns.delete();
      }
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
      expect(outcome.message).toBe(
        'opening TUN device noperm0: not permitted (ioctl(TUNSETIFF)): needs CAP_NET_ADMIN: run as root or grant the capability (e.g. `setcap cap_net_admin+ep $(command -v node)`, or in Kubernetes securityContext.capabilities.add: ["NET_ADMIN"])',
      );
    });
  });
});
