import { type PacketRing, SendFlag, type SendTable } from '@weft/tun';
import type { BackendIo } from './backend.js';
import type { PacketIo, UdpIo } from './pump.js';

/**
 * I/O with no system calls, for driving a backend from a test or a benchmark: the caller fills
 * `ring` and calls `onBatch(count)` as the kernel would; sends succeed at once and leave their
 * descriptors in `table` (the last send's range in lastSendStart/lastSendCount) and the slabs
 * they point into in `slabs`. Keeps numbers only, so a measured loop allocates nothing here.
 */
export class StandInIo implements UdpIo {
  ring!: PacketRing;
  table!: SendTable;
  onBatch!: (count: number) => void;
  readonly slabs = new Map<number, Buffer>();
  lastSendStart = 0;
  lastSendCount = 0;
  /** Descriptors sent since creation. */
  sent = 0;
  /** Packets sent since creation (a packet gathered from several descriptors counts once). */
  packetsSent = 0;

  /** `family`: the underlay a socket stand-in speaks (an IPv6 VTEP's is 6). */
  constructor(
    readonly port = 8472,
    readonly family: 4 | 6 = 4,
  ) {}

  attachSlab(index: number, slab: Buffer): void {
    this.slabs.set(index, slab);
  }
  setSendTable(table: SendTable): void {
    this.table = table;
  }
  startReading(ring: PacketRing, onBatch: (count: number) => void, slabIndex = 0): void {
    this.ring = ring;
    this.onBatch = onBatch;
    this.slabs.set(slabIndex, ring.slab);
  }
  send(start: number, count: number): number {
    this.lastSendStart = start;
    this.lastSendCount = count;
    this.sent += count;
    const flags = this.table.flags;
    for (let i = start; i < start + count; i++)
      if ((flags[i] & SendFlag.continues) === 0) this.packetsSent++;
    return count;
  }
  /** The bytes descriptor i of `table` points at. */
  sentBytes(i: number): Buffer {
    const t = this.table;
    return this.slabs.get(t.slabs[i])!.subarray(t.offsets[i], t.offsets[i] + t.lengths[i]);
  }
  /**
   * The packets descriptors [start, start + count) make (by default the last send's), each a copy
   * of its pieces joined: a descriptor and the ones after it that continue it (SendFlag.continues).
   */
  sentPackets(start = this.lastSendStart, count = this.lastSendCount): Buffer[] {
    const t = this.table;
    const out: Buffer[] = [];
    for (let i = start; i < start + count; i++) {
      if (t.flags[i] & SendFlag.continues && out.length > 0)
        out[out.length - 1] = Buffer.concat([out[out.length - 1], this.sentBytes(i)]);
      else out.push(Buffer.from(this.sentBytes(i)));
    }
    return out;
  }
  /** Whether the pump has paused reading (back-pressure, or a fault). */
  paused = false;

  onWritable(): void {}
  pause(): void {
    this.paused = true;
  }
  resume(): void {
    this.paused = false;
  }
  stats() {
    return undefined;
  }
  close(): void {}
}

/** A device queue and a UDP socket of stand-in I/O, shaped for a backend's `overIo`. */
export function standInBackendIo(options: { mtu?: number; port?: number; family?: 4 | 6 } = {}): {
  queue: StandInIo;
  socket: StandInIo;
  io: BackendIo;
} {
  const queue = new StandInIo(options.port);
  const socket = new StandInIo(options.port, options.family);
  const device = {
    name: 'stand-in0',
    mtu: options.mtu ?? 1450,
    queues: [queue as PacketIo],
    close() {},
  };
  return { queue, socket, io: { device, socket } };
}
