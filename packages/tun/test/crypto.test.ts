import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { chacha20poly1305 } from '@noble/ciphers/chacha.js';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { OpenOp, openTransport, SealOp, sealTransport } from '../src/index.js';

/** A transport header: type 4, receiver, little-endian counter. */
function header(buf: Buffer, off: number, receiver: number, counter: bigint): void {
  buf.writeUInt32LE(4, off);
  buf.writeUInt32LE(receiver, off + 4);
  buf.writeBigUInt64LE(counter, off + 8);
}

function nonceOf(counter: bigint): Uint8Array {
  const n = Buffer.alloc(12);
  n.writeBigUInt64LE(counter, 4);
  return n;
}

describe('sealTransport / openTransport (OpenSSL through the addon)', () => {
  it('seals exactly what an independent ChaCha20-Poly1305 (noble) seals, padding included', () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 32, maxLength: 32 }),
        fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
        fc.integer({ min: 0, max: 2000 }),
        fc.integer({ min: 0, max: 15 }),
        fc.boolean(),
        (key, counter, len, pad, inPlace) => {
          const plain = randomBytes(len);
          const keys = Buffer.alloc(64);
          keys.set(key, 32);
          const dst = Buffer.alloc(64 + 16 + len + pad + 16 + 64, 0xaa);
          header(dst, 64, 0x01020304, counter);
          let src: Buffer = plain;
          let srcOff = 0;
          if (inPlace) {
            dst.set(plain, 80);
            src = dst;
            srcOff = 80;
          }
          const ops = new Int32Array(SealOp.words);
          ops.set([srcOff, len, pad, 64, 1, 0]);
          expect(sealTransport(src, dst, keys, ops, 1)).toBe(1);
          expect(ops[SealOp.result]).toBe(32 + len + pad);
          const want = chacha20poly1305(key, nonceOf(counter)).encrypt(
            Buffer.concat([plain, Buffer.alloc(pad)]),
          );
          expect(Buffer.from(dst.subarray(80, 80 + want.length)).equals(Buffer.from(want))).toBe(
            true,
          );
          // Nothing written outside the message.
          expect(dst.subarray(0, 64).every((b) => b === 0xaa)).toBe(true);
          expect(dst.subarray(96 + len + pad).every((b) => b === 0xaa)).toBe(true);
        },
      ),
      { numRuns: 200 },
    );
  });

  it('opens what noble sealed, in place, and refuses any flipped bit or wrong key', () => {
    const key = randomBytes(32);
    const keys = Buffer.concat([randomBytes(32), key]);
    const plain = randomBytes(100);
    const sealed = chacha20poly1305(key, nonceOf(7n)).encrypt(plain);
    const msg = Buffer.alloc(16 + sealed.length);
    header(msg, 0, 9, 7n);
    msg.set(sealed, 16);
    const buf = Buffer.concat([Buffer.alloc(10), msg]);
    const ops = new Int32Array(OpenOp.words * 3);
    const good = Buffer.from(buf);
    ops.set([10, msg.length, 1, 0], 0);
    expect(openTransport(good, keys, ops, 1)).toBe(1);
    expect(ops[OpenOp.result]).toBe(100);
    expect(good.subarray(26, 126).equals(plain)).toBe(true);

    for (const at of [0, 8, 15, 16, 60, buf.length - 11]) {
      const bad = Buffer.from(buf);
      // A flipped counter (header byte 8..15) changes the nonce; a flipped type does not matter.
      bad[10 + at] ^= 0x01;
      ops.set([10, msg.length, 1, 0], 0);
      const opened = openTransport(bad, keys, ops, 1);
      if (at < 8) expect(opened).toBe(1);
      else expect([at, opened, ops[OpenOp.result]]).toEqual([at, 0, -1]);
    }
    ops.set([10, msg.length, 0, 0], 0);
    expect(openTransport(Buffer.from(buf), keys, ops, 1)).toBe(0);
    expect(ops[OpenOp.result]).toBe(-1);
  });

  it('opens a batch where some fail and the rest still open', () => {
    const keys = randomBytes(32 * 4);
    const stride = 256;
    const buf = Buffer.alloc(stride * 8);
    const ops = new Int32Array(OpenOp.words * 8);
    const plains: Buffer[] = [];
    for (let k = 0; k < 8; k++) {
      const slot = k % 4;
      const plain = randomBytes(k * 20);
      plains.push(plain);
      const sealed = chacha20poly1305(
        keys.subarray(slot * 32, slot * 32 + 32),
        nonceOf(BigInt(k)),
      ).encrypt(plain);
      header(buf, k * stride, 1, BigInt(k));
      buf.set(sealed, k * stride + 16);
      ops.set([k * stride, 16 + sealed.length, slot, 0], k * OpenOp.words);
    }
    buf[3 * stride + 16] ^= 0xff; // message 3's first ciphertext byte
    expect(openTransport(buf, keys, ops, 8)).toBe(7);
    for (let k = 0; k < 8; k++) {
      expect(ops[k * OpenOp.words + OpenOp.result]).toBe(k === 3 ? -1 : k * 20);
      if (k !== 3)
        expect(buf.subarray(k * stride + 16, k * stride + 16 + k * 20).equals(plains[k])).toBe(
          true,
        );
    }
  });

  it('refuses every bad argument with a JS error, in a child process (a crash fails the test)', () => {
    const addon = fileURLToPath(new URL('../native/build/Release/weft_tun.node', import.meta.url));
    const script = `
      const a = require(${JSON.stringify(addon)});
      const out = [];
      const t = (name, f) => { try { f(); out.push(name + ': no error'); } catch (e) { out.push(name + ': ' + e.constructor.name + ' ' + e.message); } };
      const buf = Buffer.alloc(256), keys = Buffer.alloc(64), ops = new Int32Array(12);
      const seal = (o, n = 1, s = buf, d = buf, k = keys) => { ops.fill(0); ops.set(o); return a.sealTransport(s, d, k, ops, n); };
      const open = (o, n = 1, b = buf, k = keys) => { ops.fill(0); ops.set(o); return a.openTransport(b, k, ops, n); };
      t('seal src string', () => a.sealTransport('x', buf, keys, ops, 0));
      t('seal dst number', () => a.sealTransport(buf, 5, keys, ops, 0));
      t('seal keys undefined', () => a.sealTransport(buf, buf, undefined, ops, 0));
      t('seal ops Uint32Array', () => a.sealTransport(buf, buf, keys, new Uint32Array(6), 0));
      t('seal ops Float64Array', () => a.sealTransport(buf, buf, keys, new Float64Array(6), 0));
      t('seal count NaN', () => a.sealTransport(buf, buf, keys, ops, NaN));
      t('seal count -1', () => a.sealTransport(buf, buf, keys, ops, -1));
      t('seal count 1.5', () => a.sealTransport(buf, buf, keys, ops, 1.5));
      t('seal count past table', () => a.sealTransport(buf, buf, keys, ops, 3));
      t('seal count string', () => a.sealTransport(buf, buf, keys, ops, '1'));
      t('seal src past end', () => seal([250, 10, 0, 0, 0]));
      t('seal negative src', () => seal([-1, 10, 0, 0, 0]));
      t('seal negative len', () => seal([0, -5, 0, 0, 0]));
      t('seal huge len', () => seal([0, 0x7fffffff, 0, 0, 0]));
      t('seal pad 16', () => seal([0, 10, 16, 100, 0]));
      t('seal dst past end', () => seal([0, 10, 0, 220, 0]));
      t('seal dst near int max', () => seal([0, 10, 0, 0x7ffffff0, 0]));
      t('seal key slot 2', () => seal([0, 10, 0, 100, 2]));
      t('seal key slot -1', () => seal([0, 10, 0, 100, -1]));
      t('seal partial overlap', () => seal([10, 40, 0, 0, 0]));
      t('seal second op bad', () => seal([0, 10, 0, 100, 0, 0, 0, 10, 0, 250, 0, 0], 2));
      t('seal keys too short', () => seal([0, 10, 0, 100, 0], 1, buf, buf, Buffer.alloc(31)));
      const detached = new Uint8Array(new ArrayBuffer(256)); structuredClone(detached.buffer, { transfer: [detached.buffer] });
      t('seal detached dst', () => seal([0, 10, 0, 100, 0], 1, buf, detached));
      t('open detached buf', () => open([0, 32, 0], 1, detached));
      t('open len 31', () => open([0, 31, 0]));
      t('open past end', () => open([240, 32, 0]));
      t('open negative off', () => open([-16, 32, 0]));
      t('open key slot 9', () => open([0, 32, 9]));
      t('open ops Int16Array', () => a.openTransport(buf, keys, new Int16Array(8), 1));
      t('open buf object', () => a.openTransport({}, keys, ops, 0));
      t('seal in place ok', () => { if (seal([116, 10, 6, 100, 1]) !== 1 || ops[5] !== 48) throw new Error('bad'); });
      t('seal empty ok', () => { if (seal([0, 0, 0, 100, 1]) !== 1 || ops[5] !== 32) throw new Error('bad'); });
      t('open count 0 ok', () => { if (open([0, 0, 0], 0) !== 0) throw new Error('bad'); });
      console.log(JSON.stringify(out));
    `;
    const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8' });
    expect(r.signal).toBeNull();
    expect(r.status, r.stderr).toBe(0);
    const lines: string[] = JSON.parse(r.stdout);
    const results = Object.fromEntries(
      lines.map((l) => [l.slice(0, l.indexOf(': ')), l.slice(l.indexOf(': ') + 2)]),
    );
    for (const [name, result] of Object.entries(results)) {
      if (name.endsWith(' ok')) expect([name, result]).toEqual([name, 'no error']);
      else
        expect([name, result]).toEqual([name, expect.stringMatching(/^(TypeError|RangeError) /)]);
    }
    expect(results['seal second op bad']).toBe(
      'RangeError op 1: message does not fit in the dst buffer',
    );
    expect(results['seal partial overlap']).toBe(
      'RangeError op 0: src and dst overlap other than in place',
    );
    expect(results['seal ops Uint32Array']).toBe('TypeError ops must be an Int32Array');
    expect(lines.length).toBe(33);
  });
});
