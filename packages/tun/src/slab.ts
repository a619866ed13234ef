import { markAsUntransferable } from 'node:worker_threads';
import { WeftError } from '@weft/core';
import { show, TunErrorCode } from './errors.js';

/** The largest slab: a PacketRing's 1024 slots of 1 MiB. */
export const MAX_SLAB_BYTES = 1 << 30;

const slabs = new WeakSet<Buffer>();

/**
 * A Buffer the addon may read packets into and send packets from: its own ArrayBuffer outside
 * V8's pool (the addon's pointer covers nothing else) that no postMessage or structuredClone can
 * transfer away while the addon points into it. Its contents start undefined.
 */
export function allocSlab(bytes: number): Buffer {
  if (!Number.isInteger(bytes) || bytes < 0 || bytes > MAX_SLAB_BYTES)
    throw new WeftError(
      TunErrorCode.badOption,
      `slab size ${show(bytes)} is not valid: use 0 to ${MAX_SLAB_BYTES} bytes`,
    );
  const slab = Buffer.allocUnsafeSlow(bytes);
  markAsUntransferable(slab.buffer);
  slabs.add(slab);
  return slab;
}

/** Whether `value` is a Buffer allocSlab made. */
export function isSlab(value: unknown): value is Buffer {
  return typeof value === 'object' && value !== null && slabs.has(value as Buffer);
}

/** Makes memory the addon keeps pointers into untransferable. */
export function pinned(buffer: ArrayBuffer): ArrayBuffer {
  markAsUntransferable(buffer);
  return buffer;
}
