import { WeftError } from '@weft/core';
import { TunErrorCode } from './errors.js';
import type { NativeHandle, NativeStats } from './native.js';
import type { PacketRing, SendTable } from './ring.js';

export type { NativeStats as IoStats } from './native.js';

/**
 * What TUN/TAP queues and UDP sockets share: a non-blocking fd polled by libuv on Node's loop,
 * a read ring the addon fills a batch at a time, and a send table it sends from in one call.
 */
export abstract class BatchIo {
  protected handle: NativeHandle | undefined;
  private ring: PacketRing | undefined;
  private sendCapacity = 0;

  protected constructor(handle: NativeHandle) {
    this.handle = handle;
  }

  get closed(): boolean {
    return this.handle === undefined;
  }

  /** The file descriptor, or -1 once closed. */
  get fd(): number {
    return this.handle?.fd ?? -1;
  }

  protected live(): NativeHandle {
    if (this.handle === undefined)
      throw new WeftError(TunErrorCode.closed, 'this device or socket is closed');
    return this.handle;
  }

  /**
   * Registers a Buffer as slab `index` (0..255), for send descriptors to point into. The ring's
   * slab is registered by `startReading`; register others (e.g. another ring's) here.
   */
  registerSlab(index: number, slab: Uint8Array): void {
    this.live().registerSlab(index, slab);
  }

  /**
   * Starts reading batches into `ring` (registered as slab `slabIndex`, default 0); `onBatch(n)`
   * runs once per batch with slots 0..n-1 filled. The slots are reused by the next batch: use or
   * copy them before returning (or pause). A negative n is -errno of a failed read.
   */
  startReading(ring: PacketRing, onBatch: (count: number) => void, slabIndex = 0): void {
    const h = this.live();
    h.registerSlab(slabIndex, ring.slab);
    this.setRing(h, ring, slabIndex);
    this.ring = ring;
    h.startReading(onBatch as (n: number | Buffer) => void);
  }

  protected abstract setRing(handle: NativeHandle, ring: PacketRing, slabIndex: number): void;

  /** The ring reads go to, if reading. */
  get readRing(): PacketRing | undefined {
    return this.ring;
  }

  /** Stops reading (the kernel queues, then drops) until resume(). */
  pause(): void {
    this.handle?.pauseReading();
  }

  resume(): void {
    this.handle?.resumeReading();
  }

  /** Uses `table` for send(); its descriptors refer to registered slabs. */
  setSendTable(table: SendTable): void {
    this.live().setSendTable(
      table.slabs,
      table.offsets,
      table.lengths,
      table.addrs,
      table.ports,
      table.gso,
    );
    this.sendCapacity = table.capacity;
  }

  /**
   * Sends descriptors [start, start + count) in one call and returns how many were consumed
   * (sent, or dropped on a hard error, which stats() counts). Fewer than `count` means the kernel
   * is full (EAGAIN): call onWritable() and send the rest from there. Never throws on a closed
   * handle: it consumes nothing.
   */
  send(start: number, count: number): number {
    if (this.handle === undefined) return 0;
    if (!(start >= 0 && count >= 0 && start + count <= this.sendCapacity)) {
      throw new WeftError(
        TunErrorCode.badOption,
        this.sendCapacity === 0
          ? 'send() needs a send table: call setSendTable() first'
          : `send(${start}, ${count}) is outside the send table of ${this.sendCapacity} descriptors`,
      );
    }
    return this.handle.send(start, count);
  }

  /** Calls `callback` once, the next time the kernel can take more. */
  onWritable(callback: () => void): void {
    this.handle?.armWritable(callback);
  }

  stats(): NativeStats | undefined {
    return this.handle?.stats();
  }

  /** Lets the process exit while this is open (like socket.unref()). */
  unref(): void {
    this.handle?.unref();
  }

  ref(): void {
    this.handle?.ref();
  }

  /** Closes the fd. No callback runs after close; safe to call twice. */
  close(): void {
    const h = this.handle;
    this.handle = undefined;
    this.ring = undefined;
    h?.close();
  }
}
