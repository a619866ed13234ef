import type { KeyObject } from 'node:crypto';
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { chacha20poly1305, xchacha20poly1305 } from '@noble/ciphers/chacha.js';
import { blake2s } from '@noble/hashes/blake2.js';
import { hmac } from '@noble/hashes/hmac.js';
import {
  WireguardField as F,
  readLe32,
  WG_COOKIE_REPLY_BYTES,
  WG_INITIATION_BYTES,
  WG_RESPONSE_BYTES,
  WireguardType,
  writeLe32,
} from '@weft/encap';
import { dh, generateEphemeral, publicKeyObject } from './keys.js';

/*
 * Noise_IKpsk2 as WireGuard uses it (the paper, section 5.4; wireguard-go
 * device/noise-protocol.go): HASH = BLAKE2s-256, HMAC over it, HKDF-style KDF1..3, AEAD =
 * ChaCha20-Poly1305 with a zero nonce for the handshake's sealed fields.
 */
const CONSTRUCTION = 'Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s';
const IDENTIFIER = 'WireGuard v1 zx2c4 Jason@zx2c4.com';
const LABEL_MAC1 = 'mac1----';
const LABEL_COOKIE = 'cookie--';
const text = new TextEncoder();
const EMPTY = new Uint8Array(0);
const ZERO_NONCE = new Uint8Array(12);

export function hash(...parts: Uint8Array[]): Uint8Array {
  const h = blake2s.create();
  for (const p of parts) h.update(p);
  return h.digest();
}

function mac(key: Uint8Array, ...parts: Uint8Array[]): Uint8Array {
  const h = hmac.create(blake2s, key);
  for (const p of parts) h.update(p);
  return h.digest();
}

const ONE = Uint8Array.of(1);
const TWO = Uint8Array.of(2);
const THREE = Uint8Array.of(3);

export function kdf1(key: Uint8Array, input: Uint8Array): Uint8Array {
  const prk = mac(key, input);
  const t0 = mac(prk, ONE);
  prk.fill(0);
  return t0;
}

export function kdf2(key: Uint8Array, input: Uint8Array): [Uint8Array, Uint8Array] {
  const prk = mac(key, input);
  const t0 = mac(prk, ONE);
  const t1 = mac(prk, t0, TWO);
  prk.fill(0);
  return [t0, t1];
}

export function kdf3(key: Uint8Array, input: Uint8Array): [Uint8Array, Uint8Array, Uint8Array] {
  const prk = mac(key, input);
  const t0 = mac(prk, ONE);
  const t1 = mac(prk, t0, TWO);
  const t2 = mac(prk, t1, THREE);
  prk.fill(0);
  return [t0, t1, t2];
}

/** Keyed BLAKE2s-128: MAC1, MAC2 and the cookie (the paper, section 5.4.4). */
export function mac16(key: Uint8Array, data: Uint8Array): Uint8Array {
  return blake2s(data, { key, dkLen: 16 });
}

function seal(key: Uint8Array, plaintext: Uint8Array, ad: Uint8Array): Uint8Array {
  return chacha20poly1305(key, ZERO_NONCE, ad).encrypt(plaintext);
}

function open(key: Uint8Array, sealed: Uint8Array, ad: Uint8Array): Uint8Array | undefined {
  try {
    return chacha20poly1305(key, ZERO_NONCE, ad).decrypt(sealed);
  } catch {
    return undefined;
  }
}

export const INITIAL_CHAIN_KEY = hash(text.encode(CONSTRUCTION));
export const INITIAL_HASH = hash(INITIAL_CHAIN_KEY, text.encode(IDENTIFIER));

/** Constant-time equality of two byte strings of the same length. */
export function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

/**
 * TAI64N of a wall-clock time in ms: 2^62 + 10 + seconds, big-endian, then nanoseconds with the
 * low 24 bits cleared as wireguard-go does (so a timestamp does not leak the clock's fine grain).
 */
export function tai64n(wallMs: number): Uint8Array {
  const out = new Uint8Array(12);
  const view = new DataView(out.buffer);
  const secs = BigInt(Math.floor(wallMs / 1000));
  view.setBigUint64(0, 0x400000000000000an + secs);
  const nanos = Math.floor((wallMs - Math.floor(wallMs / 1000) * 1000) * 1e6);
  view.setUint32(8, (nanos & ~0xffffff) >>> 0);
  return out;
}

/** Byte-wise big-endian comparison: TAI64N timestamps order as their bytes do. */
export function compareBytes(a: Uint8Array, b: Uint8Array): number {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return a[i] - b[i];
  return 0;
}

export interface Identity {
  privateKey: KeyObject;
  publicKey: Uint8Array;
}

/** What the handshake needs to know of a peer. */
export interface PeerKeys {
  remoteStatic: Uint8Array;
  remoteStaticKey: KeyObject | undefined;
  psk: Uint8Array;
  /** DH(our static, their static), computed once; undefined when it is zero (a bad key). */
  staticStatic: Uint8Array | undefined;
}

export const HandshakeState = {
  zeroed: 0,
  initiationCreated: 1,
  initiationConsumed: 2,
  responseCreated: 3,
  responseConsumed: 4,
} as const;

/** One peer's handshake in progress (wireguard-go's Handshake). */
export class Handshake {
  state: number = HandshakeState.zeroed;
  hash: Uint8Array = new Uint8Array(32);
  chainKey: Uint8Array = new Uint8Array(32);
  localEphemeral: KeyObject | undefined;
  remoteEphemeral: Uint8Array = new Uint8Array(32);
  localIndex = 0;
  remoteIndex = 0;
  /** The newest initiation timestamp accepted from this peer (replay protection). */
  lastTimestamp: Uint8Array = new Uint8Array(12);
  /** Monotonic ms of the last initiation accepted (flood protection) and the last one sent. */
  lastInitiationConsumption = Number.NEGATIVE_INFINITY;
  lastSentHandshake = Number.NEGATIVE_INFINITY;

  clear(): void {
    this.hash.fill(0);
    this.chainKey.fill(0);
    this.remoteEphemeral.fill(0);
    this.localEphemeral = undefined;
    this.localIndex = 0;
    this.state = HandshakeState.zeroed;
  }
}

/** Builds a handshake initiation (without its MACs) into a new 148-byte message. */
export function createInitiation(
  me: Identity,
  peer: PeerKeys,
  hs: Handshake,
  sender: number,
  wallMs: number,
): Uint8Array | undefined {
  if (peer.staticStatic === undefined) return undefined;
  const eph = generateEphemeral();
  let h = hash(INITIAL_HASH, peer.remoteStatic);
  let ck = kdf1(INITIAL_CHAIN_KEY, eph.publicKey);
  h = hash(h, eph.publicKey);
  const ss = dh(eph.privateKey, peer.remoteStaticKey);
  if (ss === undefined) return undefined;
  let key: Uint8Array;
  [ck, key] = kdf2(ck, ss);
  const encStatic = seal(key, me.publicKey, h);
  h = hash(h, encStatic);
  [ck, key] = kdf2(ck, peer.staticStatic);
  const encTimestamp = seal(key, tai64n(wallMs), h);
  h = hash(h, encTimestamp);
  const msg = new Uint8Array(WG_INITIATION_BYTES);
  msg[0] = WireguardType.initiation;
  writeLe32(msg, F.sender, sender);
  msg.set(eph.publicKey, F.initiationEphemeral);
  msg.set(encStatic, F.initiationStatic);
  msg.set(encTimestamp, F.initiationTimestamp);
  hs.hash = h;
  hs.chainKey = ck;
  hs.localEphemeral = eph.privateKey;
  hs.localIndex = sender;
  hs.state = HandshakeState.initiationCreated;
  return msg;
}

export interface ConsumedInitiation {
  remoteStatic: Uint8Array;
  hash: Uint8Array;
  chainKey: Uint8Array;
  timestamp: Uint8Array;
  remoteEphemeral: Uint8Array;
  sender: number;
}

/**
 * Reads a 148-byte initiation (MACs already checked): returns the initiator's static key and the
 * state to commit, or undefined when it does not decrypt or `staticStatic` finds no such peer.
 */
export function consumeInitiation(
  me: Identity,
  msg: Uint8Array,
  staticStaticOf: (remoteStatic: Uint8Array) => Uint8Array | undefined,
): ConsumedInitiation | undefined {
  const e = msg.slice(F.initiationEphemeral, F.initiationEphemeral + 32);
  let h = hash(INITIAL_HASH, me.publicKey);
  h = hash(h, e);
  let ck = kdf1(INITIAL_CHAIN_KEY, e);
  const ss = dh(me.privateKey, publicKeyObject(e));
  if (ss === undefined) return undefined;
  let key: Uint8Array;
  [ck, key] = kdf2(ck, ss);
  const encStatic = msg.subarray(F.initiationStatic, F.initiationStatic + 48);
  const remoteStatic = open(key, encStatic, h);
  if (remoteStatic === undefined) return undefined;
  h = hash(h, encStatic);
  const staticStatic = staticStaticOf(remoteStatic);
  if (staticStatic === undefined) return undefined;
  [ck, key] = kdf2(ck, staticStatic);
  const encTimestamp = msg.subarray(F.initiationTimestamp, F.initiationTimestamp + 28);
  const timestamp = open(key, encTimestamp, h);
  if (timestamp === undefined) return undefined;
  h = hash(h, encTimestamp);
  return {
    remoteStatic,
    hash: h,
    chainKey: ck,
    timestamp,
    remoteEphemeral: e,
    sender: readLe32(msg, F.sender) | 0,
  };
}

/** Builds the response (without MACs) to an initiation consumed into `hs`. */
export function createResponse(
  peer: PeerKeys,
  hs: Handshake,
  sender: number,
): Uint8Array | undefined {
  if (hs.state !== HandshakeState.initiationConsumed) return undefined;
  const eph = generateEphemeral();
  let h = hash(hs.hash, eph.publicKey);
  let ck = kdf1(hs.chainKey, eph.publicKey);
  const ee = dh(eph.privateKey, publicKeyObject(hs.remoteEphemeral));
  if (ee === undefined) return undefined;
  ck = kdf1(ck, ee);
  const es = dh(eph.privateKey, peer.remoteStaticKey);
  if (es === undefined) return undefined;
  ck = kdf1(ck, es);
  const [ck2, tau, key] = kdf3(ck, peer.psk);
  h = hash(h, tau);
  const empty = seal(key, EMPTY, h);
  h = hash(h, empty);
  const msg = new Uint8Array(WG_RESPONSE_BYTES);
  msg[0] = WireguardType.response;
  writeLe32(msg, F.sender, sender);
  writeLe32(msg, F.responseReceiver, hs.remoteIndex);
  msg.set(eph.publicKey, F.responseEphemeral);
  msg.set(empty, F.responseEmpty);
  hs.hash = h;
  hs.chainKey = ck2;
  hs.localEphemeral = eph.privateKey;
  hs.localIndex = sender;
  hs.state = HandshakeState.responseCreated;
  return msg;
}

/** Reads a 92-byte response to our initiation in `hs`; true (and `hs` updated) when it is genuine. */
export function consumeResponse(
  me: Identity,
  peer: PeerKeys,
  hs: Handshake,
  msg: Uint8Array,
): boolean {
  if (hs.state !== HandshakeState.initiationCreated || hs.localEphemeral === undefined)
    return false;
  const e = msg.slice(F.responseEphemeral, F.responseEphemeral + 32);
  const eKey = publicKeyObject(e);
  let h = hash(hs.hash, e);
  let ck = kdf1(hs.chainKey, e);
  const ee = dh(hs.localEphemeral, eKey);
  if (ee === undefined) return false;
  ck = kdf1(ck, ee);
  const se = dh(me.privateKey, eKey);
  if (se === undefined) return false;
  ck = kdf1(ck, se);
  const [ck2, tau, key] = kdf3(ck, peer.psk);
  h = hash(h, tau);
  const empty = msg.subarray(F.responseEmpty, F.responseEmpty + 16);
  if (open(key, empty, h) === undefined) return false;
  hs.hash = hash(h, empty);
  hs.chainKey = ck2;
  hs.remoteIndex = readLe32(msg, F.sender) | 0;
  hs.state = HandshakeState.responseConsumed;
  return true;
}

/**
 * The transport keys of a finished handshake (the paper, 5.4.5): the initiator sends with the
 * first and receives with the second, the responder the other way round. Zeroes the handshake.
 */
export function deriveKeys(
  hs: Handshake,
): { send: Uint8Array; receive: Uint8Array; initiator: boolean } | undefined {
  let initiator: boolean;
  if (hs.state === HandshakeState.responseConsumed) initiator = true;
  else if (hs.state === HandshakeState.responseCreated) initiator = false;
  else return undefined;
  const [t0, t1] = kdf2(hs.chainKey, EMPTY);
  hs.chainKey.fill(0);
  hs.hash.fill(0);
  hs.localEphemeral = undefined;
  hs.state = HandshakeState.zeroed;
  return initiator ? { send: t0, receive: t1, initiator } : { send: t1, receive: t0, initiator };
}

/** The two keys the MACs of messages *to* the holder of `publicKey` use (the paper, 5.4.4). */
export function macKeys(publicKey: Uint8Array): { mac1: Uint8Array; cookie: Uint8Array } {
  return {
    mac1: hash(text.encode(LABEL_MAC1), publicKey),
    cookie: hash(text.encode(LABEL_COOKIE), publicKey),
  };
}

/** Milliseconds a cookie (and the secret behind it) lives: COOKIE_REFRESH_TIME. */
export const COOKIE_REFRESH_MS = 120_000;

/**
 * The responder's side of the cookie mechanism (wireguard-go CookieChecker): checks MAC1 with
 * our public key, MAC2 with a cookie for the sender's address, and makes cookie replies.
 */
export class CookieChecker {
  private readonly mac1Key: Uint8Array;
  private readonly cookieKey: Uint8Array;
  private secret = new Uint8Array(32);
  private secretSetAt = Number.NEGATIVE_INFINITY;

  constructor(ourPublicKey: Uint8Array) {
    const k = macKeys(ourPublicKey);
    this.mac1Key = k.mac1;
    this.cookieKey = k.cookie;
  }

  /** MAC1 of a 148- or 92-byte handshake message at msg[0..len). */
  checkMac1(msg: Uint8Array, len: number): boolean {
    const at = len - 32;
    return equalBytes(mac16(this.mac1Key, msg.subarray(0, at)), msg.subarray(at, at + 16));
  }

  /** MAC2 with the cookie for `source` (address bytes and port), while our secret is fresh. */
  checkMac2(msg: Uint8Array, len: number, source: Uint8Array, nowMs: number): boolean {
    if (nowMs - this.secretSetAt > COOKIE_REFRESH_MS) return false;
    const cookie = mac16(this.secret, source);
    const at = len - 16;
    return equalBytes(mac16(cookie, msg.subarray(0, at)), msg.subarray(at, at + 16));
  }

  /** A cookie reply to the handshake message `msg` from `source`, whose sender index is `receiver`. */
  createReply(msg: Uint8Array, len: number, source: Uint8Array, nowMs: number): Uint8Array {
    if (nowMs - this.secretSetAt > COOKIE_REFRESH_MS) {
      this.secret = new Uint8Array(randomBytes(32));
      this.secretSetAt = nowMs;
    }
    const cookie = mac16(this.secret, source);
    const nonce = new Uint8Array(randomBytes(24));
    const mac1 = msg.subarray(len - 32, len - 16);
    const sealed = xchacha20poly1305(this.cookieKey, nonce, mac1).encrypt(cookie);
    const reply = new Uint8Array(WG_COOKIE_REPLY_BYTES);
    reply[0] = WireguardType.cookieReply;
    writeLe32(reply, F.receiver, readLe32(msg, F.sender));
    reply.set(nonce, F.cookieNonce);
    reply.set(sealed, F.cookie);
    return reply;
  }
}

/**
 * The initiator's side (wireguard-go CookieGenerator), one per peer: adds MAC1 (keyed by the
 * peer's public key) and, with a fresh cookie from that peer, MAC2 to our handshake messages.
 */
export class CookieGenerator {
  private readonly mac1Key: Uint8Array;
  private readonly cookieKey: Uint8Array;
  private cookie = new Uint8Array(16);
  private cookieSetAt = Number.NEGATIVE_INFINITY;
  private lastMac1: Uint8Array | undefined;

  constructor(peerPublicKey: Uint8Array) {
    const k = macKeys(peerPublicKey);
    this.mac1Key = k.mac1;
    this.cookieKey = k.cookie;
  }

  addMacs(msg: Uint8Array, nowMs: number): void {
    const len = msg.length;
    const mac1 = mac16(this.mac1Key, msg.subarray(0, len - 32));
    msg.set(mac1, len - 32);
    this.lastMac1 = mac1;
    if (nowMs - this.cookieSetAt > COOKIE_REFRESH_MS) {
      msg.fill(0, len - 16);
      return;
    }
    msg.set(mac16(this.cookie, msg.subarray(0, len - 16)), len - 16);
  }

  /** Takes the cookie from a 64-byte reply to our last handshake message; false if it is not one. */
  consumeReply(reply: Uint8Array, nowMs: number): boolean {
    if (this.lastMac1 === undefined) return false;
    try {
      const cookie = xchacha20poly1305(
        this.cookieKey,
        reply.subarray(F.cookieNonce, F.cookieNonce + 24),
        this.lastMac1,
      ).decrypt(reply.subarray(F.cookie, F.cookie + 32));
      this.cookie = cookie;
      this.cookieSetAt = nowMs;
      return true;
    } catch {
      return false;
    }
  }
}
