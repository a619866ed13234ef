import { native } from './native.js';

/**
 * Batch ChaCha20-Poly1305 for WireGuard transport messages (the paper, section 5.4.6), done by
 * the OpenSSL that Node links, one native call per batch, in caller-owned buffers: no object per
 * packet. Keys live in a caller's `keys` buffer, 32 bytes per slot. The 12-byte nonce is four
 * zero bytes and the message's own counter (header bytes 8..16), so the caller writes the header
 * first (sealing) or has checked it (opening).
 */
interface CryptoAddon {
  sealTransport(
    src: Uint8Array,
    dst: Uint8Array,
    keys: Uint8Array,
    ops: Int32Array,
    count: number,
  ): number;
  openTransport(buf: Uint8Array, keys: Uint8Array, ops: Int32Array, count: number): number;
}

/** Words per seal op: srcOff, srcLen, padLen, dstOff, keySlot, then the result. */
export const SealOp = {
  srcOff: 0,
  srcLen: 1,
  padLen: 2,
  dstOff: 3,
  keySlot: 4,
  result: 5,
  words: 6,
} as const;

/** Words per open op: msgOff, msgLen, keySlot, then the result. */
export const OpenOp = { msgOff: 0, msgLen: 1, keySlot: 2, result: 3, words: 4 } as const;

let addon: CryptoAddon | undefined;
function crypto(): CryptoAddon {
  addon ??= native() as unknown as CryptoAddon;
  return addon;
}

/**
 * Seals `count` transport messages. Op k: the plaintext src[srcOff, +srcLen) and padLen (0..15)
 * zero bytes become the ciphertext at dst[dstOff + 16], followed by the tag; the 16-byte header
 * must already be at dst[dstOff]. src may be the same memory as dst only exactly in place
 * (srcOff = dstOff + 16). Sets each op's result to the message length (-1 if OpenSSL failed).
 * A bad op throws a RangeError naming it before anything is sealed.
 */
export function sealTransport(
  src: Uint8Array,
  dst: Uint8Array,
  keys: Uint8Array,
  ops: Int32Array,
  count: number,
): number {
  return crypto().sealTransport(src, dst, keys, ops, count);
}

/**
 * Opens `count` transport messages in place. Op k: the msgLen-byte message at buf[msgOff] (32
 * bytes or more) with key slot keySlot; its plaintext replaces the ciphertext at msgOff + 16.
 * Each op's result is the plaintext length, or -1 when the tag did not verify. Returns how many
 * verified. A bad op throws a RangeError naming it before anything is opened.
 */
export function openTransport(
  buf: Uint8Array,
  keys: Uint8Array,
  ops: Int32Array,
  count: number,
): number {
  return crypto().openTransport(buf, keys, ops, count);
}
