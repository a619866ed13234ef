import {
  createPrivateKey,
  createPublicKey,
  diffieHellman,
  generateKeyPairSync,
  type KeyObject,
  randomBytes,
} from 'node:crypto';
import {
  chmodSync,
  mkdirSync,
  readFileSync,
  renameSync,
  statSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { dirname } from 'node:path';
import { WeftError } from '@weft/core';

/** The `code` of each WeftError the WireGuard backend throws. */
export const WireguardErrorCode = {
  /** A key that is not 32 bytes (base64 as `wg genkey` prints). */
  badKey: 'ERR_WIREGUARD_BAD_KEY',
  /** A bad peer (key, endpoint, no AllowedIPs, listed twice, AllowedIPs shared); none was changed. */
  badPeer: 'ERR_WIREGUARD_BAD_PEER',
  /** A backend option of the wrong type or out of range. */
  badOption: 'ERR_WIREGUARD_BAD_OPTION',
  /** The key file cannot be read, narrowed to 0600 or written, or holds no private key. */
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

/** A 32-byte key in base64, as `wg` and flannel write it. */
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

/**
 * This node's key pair, kept in `path` as flannel keeps it (/run/flannel/wgkey, or
 * $WIREGUARD_KEY_FILE): the private key in base64, generated on first use and read back on every
 * later start, so peers keep knowing the node. A new file is written 0600 in one step (a temporary
 * file renamed into place); an existing one readable by others is narrowed to 0600, and said.
 */
export function loadOrCreateKeyFile(path: string): {
  privateKey: string;
  publicKey: string;
  created: boolean;
  /** Set when an existing file's mode was narrowed (what it was). */
  narrowedFrom?: number;
} {
  const fail = (what: string, err: unknown): never => {
    throw new WeftError(
      WireguardErrorCode.keyFile,
      `WireGuard key file ${path}: ${what}: ${(err as Error).message}`,
      { cause: err },
    );
  };
  let text: string | undefined;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') fail('cannot read it', err);
  }
  if (text !== undefined) {
    let key: Uint8Array;
    try {
      key = parseKey(text.trim(), 'the private key in it');
    } catch (err) {
      return fail('it holds no private key (remove it to have a new one made)', err);
    }
    let narrowedFrom: number | undefined;
    try {
      const mode = statSync(path).mode & 0o777;
      if ((mode & 0o077) !== 0) {
        chmodSync(path, 0o600);
        narrowedFrom = mode;
      }
    } catch (err) {
      fail('cannot set its mode to 0600', err);
    }
    return {
      privateKey: formatKey(key),
      publicKey: formatKey(publicKeyOf(key)),
      created: false,
      narrowedFrom,
    };
  }
  const key = generatePrivateKey();
  const privateKey = formatKey(key);
  const tmp = `${path}.${process.pid}.tmp`;
  try {
    mkdirSync(dirname(path), { recursive: true, mode: 0o755 });
    writeFileSync(tmp, privateKey, { mode: 0o600, flag: 'wx' });
    renameSync(tmp, path);
  } catch (err) {
    try {
      unlinkSync(tmp);
    } catch {}
    fail('cannot write it', err);
  }
  return { privateKey, publicKey: formatKey(publicKeyOf(key)), created: true };
}
