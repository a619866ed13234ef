/*
 * The sliding replay window of RFC 6479, as wireguard-go's replay.Filter, for many keypairs in
 * one typed array: each keypair owns RING_WORDS 32-bit blocks and the highest counter seen.
 * A counter is accepted once, when it is ahead of the window or inside it and not yet seen.
 */
const BLOCK_BITS = 32;
const RING_WORDS = 256;
/** Counters this far behind the newest are refused (255 * 32 = 8160, wireguard-go: 8128). */
export const REPLAY_WINDOW = (RING_WORDS - 1) * BLOCK_BITS;

export class ReplayWindows {
  private readonly ring: Uint32Array;
  /** The highest counter accepted per keypair; -1 before the first. */
  private readonly last: Float64Array;

  constructor(readonly capacity: number) {
    this.ring = new Uint32Array(capacity * RING_WORDS);
    this.last = new Float64Array(capacity).fill(-1);
  }

  /** A copy with room for `capacity` keypairs (the tables grow with the peer count). */
  grown(capacity: number): ReplayWindows {
    const next = new ReplayWindows(capacity);
    next.ring.set(this.ring);
    next.last.set(this.last);
    return next;
  }

  reset(kp: number): void {
    this.ring.fill(0, kp * RING_WORDS, (kp + 1) * RING_WORDS);
    this.last[kp] = -1;
  }

  /** Whether `counter` would be accepted now (no change): filters before decrypting. */
  wouldAccept(kp: number, counter: number): boolean {
    const last = this.last[kp];
    if (counter > last) return true;
    if (last - counter > REPLAY_WINDOW) return false;
    const block = Math.floor(counter / BLOCK_BITS);
    const bit = 1 << (counter - block * BLOCK_BITS);
    return (this.ring[kp * RING_WORDS + (block % RING_WORDS)] & bit) === 0;
  }

  /** Accepts `counter` (and records it) or refuses it: call only after it authenticated. */
  accept(kp: number, counter: number): boolean {
    const base = kp * RING_WORDS;
    const block = Math.floor(counter / BLOCK_BITS);
    const last = this.last[kp];
    if (counter > last) {
      // Move the window forward, clearing the blocks it passes (at most the whole ring).
      const current = last < 0 ? -1 : Math.floor(last / BLOCK_BITS);
      const diff = Math.min(block - current, RING_WORDS);
      for (let i = 1; i <= diff; i++) this.ring[base + ((current + i) % RING_WORDS)] = 0;
      this.last[kp] = counter;
    } else if (last - counter > REPLAY_WINDOW) {
      return false;
    }
    const at = base + (block % RING_WORDS);
    const bit = 1 << (counter - block * BLOCK_BITS);
    const old = this.ring[at];
    if ((old & bit) !== 0) return false;
    this.ring[at] = old | bit;
    return true;
  }
}
