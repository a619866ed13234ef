import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  EncapError,
  overlayMtu,
  readLe32,
  WG_INITIATION_BYTES,
  WG_KEEPALIVE_BYTES,
  WireguardField,
  WireguardType,
  wireguard,
  wireguardCounter,
  wireguardMessageType,
  wireguardPaddedLength,
  wireguardReceiver,
  writeTransportHeader,
} from '../src/index.js';

/** Bytes 0..n-1 + start, so every field's position shows in a failure. */
function ramp(n: number, start: number): Uint8Array {
  return Uint8Array.from({ length: n }, (_, i) => (i + start) & 0xff);
}

/** A handshake initiation laid out by hand from the paper's section 5.4.2 (sender 0x04030201). */
const INITIATION = Buffer.concat([
  Buffer.from([1, 0, 0, 0, 0x01, 0x02, 0x03, 0x04]),
  ramp(32, 0x10),
  ramp(48, 0x40),
  ramp(28, 0x80),
  ramp(16, 0xa0),
  ramp(16, 0xc0),
]);
/** A response: sender 7, receiver 0x04030201. */
const RESPONSE = Buffer.concat([
  Buffer.from([2, 0, 0, 0, 7, 0, 0, 0, 0x01, 0x02, 0x03, 0x04]),
  ramp(32, 0x10),
  ramp(16, 0x40),
  ramp(16, 0xa0),
  ramp(16, 0xc0),
]);
const COOKIE_REPLY = Buffer.concat([
  Buffer.from([3, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]),
  ramp(24, 0x10),
  ramp(32, 0x40),
]);
/** A keepalive: receiver 9, counter 2^40 + 5. */
const KEEPALIVE = Buffer.concat([
  Buffer.from([4, 0, 0, 0, 9, 0, 0, 0, 5, 0, 0, 0, 0, 1, 0, 0]),
  ramp(16, 0x60),
]);

describe('wireguard messages', () => {
  it('deconstructs each type at its fixed size', () => {
    expect(INITIATION.length).toBe(WG_INITIATION_BYTES);
    expect(wireguardMessageType(INITIATION, 0, 148)).toBe(WireguardType.initiation);
    expect(wireguardMessageType(RESPONSE, 0, 92)).toBe(WireguardType.response);
    expect(wireguardMessageType(COOKIE_REPLY, 0, 64)).toBe(WireguardType.cookieReply);
    expect(wireguardMessageType(KEEPALIVE, 0, 32)).toBe(WireguardType.transport);
    expect(wireguardReceiver(RESPONSE, 0)).toBe(0x04030201);
    expect(wireguardReceiver(COOKIE_REPLY, 0)).toBe(0xffffffff);
    expect(wireguardReceiver(KEEPALIVE, 0)).toBe(9);
    expect(wireguardCounter(KEEPALIVE, 0)).toBe(2 ** 40 + 5);
    expect(readLe32(INITIATION, WireguardField.sender)).toBe(0x04030201);
    expect(INITIATION[WireguardField.initiationMac1]).toBe(0xa0);
    expect(RESPONSE[WireguardField.responseMac2]).toBe(0xc0);
  });

  it('refuses wrong sizes, unknown types and non-zero reserved bytes', () => {
    expect(wireguardMessageType(INITIATION, 0, 147)).toBe(-1);
    expect(wireguardMessageType(Buffer.concat([INITIATION, Buffer.alloc(1)]), 0, 149)).toBe(-1);
    expect(wireguardMessageType(RESPONSE, 0, 91)).toBe(-1);
    expect(wireguardMessageType(COOKIE_REPLY, 0, 65)).toBe(-1);
    expect(wireguardMessageType(KEEPALIVE, 0, 31)).toBe(-1);
    expect(wireguardMessageType(KEEPALIVE, 0, 3)).toBe(-1);
    const odd = Buffer.from(KEEPALIVE);
    odd[2] = 1;
    expect(wireguardMessageType(odd, 0, 32)).toBe(0);
    odd[2] = 0;
    odd[0] = 5;
    expect(wireguardMessageType(odd, 0, 32)).toBe(0);
    odd[0] = 0;
    expect(wireguardMessageType(odd, 0, 32)).toBe(0);
  });

  it('reads a counter at or past 2^53 as -1 (dropped, never rounded)', () => {
    const b = Buffer.from(KEEPALIVE);
    b.writeBigUInt64LE(2n ** 53n - 1n, 8);
    expect(wireguardCounter(b, 0)).toBe(2 ** 53 - 1);
    b.writeBigUInt64LE(2n ** 53n, 8);
    expect(wireguardCounter(b, 0)).toBe(-1);
    b.writeBigUInt64LE(2n ** 64n - 1n, 8);
    expect(wireguardCounter(b, 0)).toBe(-1);
  });

  it('constructs a transport header', () => {
    const b = Buffer.alloc(16, 0xee);
    writeTransportHeader(b, 0, 0xdeadbeef, 2 ** 33 + 7);
    expect(b.toString('hex')).toBe('04000000efbeadde0700000002000000');
  });

  it('parses and emits the same bytes, for every type', () => {
    for (const bytes of [INITIATION, RESPONSE, COOKIE_REPLY, KEEPALIVE]) {
      const repr = wireguard.parse(bytes);
      const out = Buffer.alloc(wireguard.bufferLength(repr));
      expect(wireguard.emit(repr, out)).toBe(bytes.length);
      expect(out.toString('hex')).toBe(bytes.toString('hex'));
    }
    const init = wireguard.parse(INITIATION);
    expect(init).toMatchObject({ type: 1, sender: 0x04030201 });
    const keepalive = wireguard.parse(KEEPALIVE);
    expect(keepalive).toMatchObject({ type: 4, receiver: 9, counter: 2n ** 40n + 5n });
  });

  it('names what is wrong when the checked API refuses', () => {
    expect(() => wireguard.parse(INITIATION, 0, 100)).toThrow(
      /wireguard message of type 1: need 148 bytes, have 100/,
    );
    expect(() => wireguard.parse(Buffer.from([9, 0, 0, 0]))).toThrow(EncapError);
    const repr = wireguard.parse(COOKIE_REPLY);
    expect(() =>
      wireguard.emit({ ...repr, nonce: new Uint8Array(12) } as typeof repr, Buffer.alloc(64)),
    ).toThrow(/wireguard.nonce: must be 24 bytes/);
    expect(() => wireguard.emit(repr, Buffer.alloc(63))).toThrow(/need 64 bytes/);
    const t = wireguard.parse(KEEPALIVE);
    expect(() => wireguard.emit({ ...t, counter: -1n } as typeof t, Buffer.alloc(32))).toThrow(
      /wireguard.counter/,
    );
  });

  it('pads to 16 but never past the MTU (calculatePaddingSize)', () => {
    expect(wireguardPaddedLength(0, 1420)).toBe(0);
    expect(wireguardPaddedLength(1, 1420)).toBe(16);
    expect(wireguardPaddedLength(84, 1420)).toBe(96);
    expect(wireguardPaddedLength(96, 1420)).toBe(96);
    expect(wireguardPaddedLength(1419, 1420)).toBe(1420);
    expect(wireguardPaddedLength(1420, 1420)).toBe(1420);
    expect(wireguardPaddedLength(1417, 1418)).toBe(1418);
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 1500 }), fc.integer({ min: 68, max: 9000 }), (n, m) => {
        const len = Math.min(n, m);
        const p = wireguardPaddedLength(len, m);
        expect(p).toBeGreaterThanOrEqual(len);
        expect(p - len).toBeLessThan(16);
        expect(p === m || p % 16 === 0).toBe(true);
        expect(p).toBeLessThanOrEqual(m);
      }),
    );
  });

  it('takes 80 bytes off the underlay MTU, as flannel does', () => {
    expect(overlayMtu(1500, 'wireguard')).toBe(1420);
    expect(WG_KEEPALIVE_BYTES).toBe(32);
  });
});
