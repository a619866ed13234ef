import { parseIpv4 } from '@weft/core';
import { type StandInIo, standInBackendIo } from '../src/testing.js';
import {
  formatKey,
  generatePrivateKey,
  publicKeyOf,
  WireguardBackend,
  type WireguardBackendOptions,
} from '../src/wireguard/index.js';

/** A datagram on the simulated underlay. */
export interface Datagram {
  from: number;
  fromPort: number;
  to: number;
  toPort: number;
  bytes: Buffer;
}

/**
 * WireGuard backends over stand-in I/O, joined by an in-memory IPv4 underlay: what one sends
 * reaches the socket whose address it names, a turn of the event loop later. Every datagram is
 * kept in `wire` (for replay and tamper tests); `drop` can lose chosen ones.
 */
export class Underlay {
  readonly wire: Datagram[] = [];
  readonly nodes = new Map<number, Node>();
  drop: (d: Datagram) => boolean = () => false;

  add(name: string, address: string, options: Partial<WireguardBackendOptions> = {}): Node {
    const node = new Node(this, name, parseIpv4(address), options);
    this.nodes.set(node.address, node);
    return node;
  }

  /** Delivers a datagram now (as if it had arrived from `from`). */
  inject(d: Datagram): void {
    const to = this.nodes.get(d.to);
    if (to === undefined || to.closed) return;
    to.receive([d]);
  }

  carry(d: Datagram): void {
    this.wire.push(d);
    if (this.drop(d)) return;
    setImmediate(() => this.inject(d));
  }

  close(): void {
    for (const n of this.nodes.values()) n.close();
  }
}

export class Node {
  readonly backend: WireguardBackend;
  readonly privateKey = generatePrivateKey();
  readonly publicKey = formatKey(publicKeyOf(this.privateKey));
  readonly socket: StandInIo;
  readonly queue: StandInIo;
  /** Packets the backend wrote to its device (copies). */
  readonly delivered: Buffer[] = [];
  closed = false;

  constructor(
    readonly underlay: Underlay,
    readonly name: string,
    readonly address: number,
    options: Partial<WireguardBackendOptions>,
  ) {
    const io = standInBackendIo({ mtu: 1420, port: 51820 });
    this.socket = io.socket;
    this.queue = io.queue;
    const socket = this.socket;
    socket.send = (start: number, count: number) => {
      for (let k = start; k < start + count; k++) {
        const t = socket.table;
        underlay.carry({
          from: address,
          fromPort: 51820,
          to: t.addrs[k * 4],
          toPort: t.ports[k],
          bytes: Buffer.from(socket.sentBytes(k)),
        });
      }
      socket.sent += count;
      return count;
    };
    const queue = this.queue;
    queue.send = (start: number, count: number) => {
      for (let k = start; k < start + count; k++)
        this.delivered.push(Buffer.from(queue.sentBytes(k)));
      return count;
    };
    this.backend = WireguardBackend.overIo(io.io, {
      privateKey: this.privateKey,
      tickMs: 20,
      ...options,
    });
  }

  receive(datagrams: Datagram[]): void {
    const ring = this.socket.ring;
    datagrams.forEach((d, i) => {
      const off = ring.slotOffset(i);
      d.bytes.copy(ring.slab, off);
      ring.lengths[i] = d.bytes.length;
      ring.families[i] = 4;
      ring.addrs[i * 4] = d.from;
      ring.ports[i] = d.fromPort;
    });
    this.socket.onBatch(datagrams.length);
  }

  /** Hands packets to the backend as if the kernel had routed them into the device. */
  sendPackets(packets: Buffer[]): void {
    const ring = this.queue.ring;
    packets.forEach((p, i) => {
      p.copy(ring.slab, ring.slotOffset(i));
      ring.lengths[i] = p.length;
    });
    this.queue.onBatch(packets.length);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.backend.close();
  }
}

/** An IPv4/UDP packet from src to dst with `payload` (checksums left zero: nothing checks them here). */
export function udpPacket(src: string, dst: string, payload: Buffer | string): Buffer {
  const body = typeof payload === 'string' ? Buffer.from(payload) : payload;
  const p = Buffer.alloc(28 + body.length);
  p[0] = 0x45;
  p.writeUInt16BE(p.length, 2);
  p[8] = 64;
  p[9] = 17;
  p.writeUInt32BE(parseIpv4(src), 12);
  p.writeUInt32BE(parseIpv4(dst), 16);
  p.writeUInt16BE(1000, 20);
  p.writeUInt16BE(2000, 22);
  p.writeUInt16BE(8 + body.length, 24);
  body.copy(p, 28);
  return p;
}

/** Waits until `check` is true, stepping the event loop; throws after `ms`. */
export async function until(check: () => boolean, ms = 2000, what = 'condition'): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

/** Two nodes that are each other's peers: a = 192.0.2.1 with 10.244.1.0/24, b = 192.0.2.2 with 10.244.2.0/24. */
export function pair(options: Partial<WireguardBackendOptions> = {}) {
  const net = new Underlay();
  const a = net.add('a', '192.0.2.1', { nodeAddress: '10.244.1.0', ...options });
  const b = net.add('b', '192.0.2.2', { nodeAddress: '10.244.2.0', ...options });
  a.backend.setNodes([
    { subnet: '10.244.2.0/24', publicIp: '192.0.2.2', publicKey: b.publicKey, name: 'b' } as never,
  ]);
  b.backend.setNodes([
    { subnet: '10.244.1.0/24', publicIp: '192.0.2.1', publicKey: a.publicKey, name: 'a' } as never,
  ]);
  return { net, a, b };
}
