import {
  createPrivateKey,
  createPublicKey,
  diffieHellman,
  generateKeyPairSync,
  type KeyObject,
  randomBytes,
} from 'node:crypto';
import { WeftError } from '@weft/core';

export const WireguardErrorCode = {
  badKey: 'ERR_WIREGUARD_BAD_KEY',
  badPeer: 'ERR_WIREGUARD_BAD_PEER',
  badOption: 'ERR_WIREGUARD_BAD_OPTION',
  keyFile: 'ERR_WIREGUARD_KEY_FILE',
} as const;

export const KEY_BYTES = 32;

/** A key as `wg` and flannel write it: 32 bytes in standard base64 (44 characters, one `=`). */
export function parseKey(text: unknown, what: string): Uint8Array {
  if (typeof text !== 'string' || !/^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$/.test(text.trim()))
    throw new WeftError(
      WireguardErrorCode.badKey,
      `${what} ${JSON.stringify(text)} is not a WireGuard key: use 32 bytes in base64, as \`wg genkey\` prints`,
    );
  return new Uint8Array(Buffer.from(text.trim(), 'base64'));
}

export function formatKey(key: Uint8Array): string {
  return Buffer.from(key.buffer, key.byteOffset, key.byteLength).toString('base64');
}

/** A new Curve25519 private key, clamped as `wg genkey` clamps it (RFC 7748 section 5). */
export function generatePrivateKey(): Uint8Array {
  const key = new Uint8Array(randomBytes(KEY_BYTES));
  key[0] &= 248;
  key[31] = (key[31] & 127) | 64;
  return key;
}

/*
 * X25519 is OpenSSL's, through node:crypto (about 40 us per operation here, against about 1.1 ms
 * for a pure-JS one): handshakes run on the packet loop, so their cost is what a flood buys.
 * Raw keys go in and out as JWK, which OpenSSL parses far faster than DER.
 */
function b64url(key: Uint8Array): string {
  return Buffer.from(key.buffer, key.byteOffset, key.byteLength).toString('base64url');
}

/** A private key as OpenSSL takes it (once per identity: DER import is slow, ~0.4 ms). */
export function privateKeyObject(key: Uint8Array): KeyObject {
  return createPrivateKey({
    key: Buffer.concat([PKCS8_X25519_PREFIX, key]),
    format: 'der',
    type: 'pkcs8',
  });
}

/** RFC 8410's PKCS#8 wrapping of a raw X25519 private key. */
const PKCS8_X25519_PREFIX = Buffer.from('302e020100300506032b656e04220420', 'hex');

function exportPublic(key: KeyObject): Uint8Array {
  const jwk = key.export({ format: 'jwk' });
  return new Uint8Array(Buffer.from(jwk.x as string, 'base64url'));
}

/** The public key of a private key. */
export function publicKeyOf(privateKey: Uint8Array): Uint8Array {
  return exportPublic(createPublicKey(privateKeyObject(privateKey)));
}

/** A public key as OpenSSL takes it; undefined for bytes that are not one (never thrown on). */
export function publicKeyObject(key: Uint8Array): KeyObject | undefined {
  try {
    return createPublicKey({ key: { kty: 'OKP', crv: 'X25519', x: b64url(key) }, format: 'jwk' });
  } catch {
    return undefined;
  }
}

/** A fresh ephemeral key pair for one handshake. */
export function generateEphemeral(): { privateKey: KeyObject; publicKey: Uint8Array } {
  const pair = generateKeyPairSync('x25519');
  return { privateKey: pair.privateKey, publicKey: exportPublic(pair.publicKey) };
}

/**
 * X25519(private, public); undefined when the result is all zeros (a low-order public key, which
 * the paper says to reject) or the public key is not valid. Never throws.
 */
export function dh(
  privateKey: KeyObject,
  publicKey: KeyObject | undefined,
): Uint8Array | undefined {
  if (publicKey === undefined) return undefined;
  try {
    const out = diffieHellman({ privateKey, publicKey });
    let acc = 0;
    for (let i = 0; i < out.length; i++) acc |= out[i];
    return acc === 0 ? undefined : new Uint8Array(out);
  } catch {
    // OpenSSL refuses an all-zero result itself ("failed during derivation").
    return undefined;
  }
}
