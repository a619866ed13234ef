import type { KeyObject } from 'node:crypto';
import { randomBytes } from 'node:crypto';
import { formatIp, parseIp, WeftError } from '@weft/core';
import {
  readLe32,
  WG_TRANSPORT_HEADER_BYTES,
  WireguardField,
  WireguardType,
  wireguardPaddedLength,
  writeTransportHeader,
} from '@weft/encap';
import { type RouteInput, RouteTable } from '@weft/fdb';
import { allocSlab, sealTransport } from '@weft/tun';
import { IndexTable, NO_INDEX } from './index-table.js';
import {
  dh,
  formatKey,
  KEY_BYTES,
  parseKey,
  privateKeyObject,
  publicKeyObject,
  publicKeyOf,
  WireguardErrorCode,
} from './keys.js';
import {
  CookieChecker,
  CookieGenerator,
  compareBytes,
  consumeInitiation,
  consumeResponse,
  createInitiation,
  createResponse,
  deriveKeys,
  Handshake,
  HandshakeState,
  type Identity,
  type PeerKeys,
} from './noise.js';
import { ReplayWindows } from './replay.js';

/** The protocol's timers (the paper, section 6; wireguard-go device/constants.go), in ms. */
export interface WireguardTimers {
  rekeyAfterTimeMs: number;
  rejectAfterTimeMs: number;
  rekeyAttemptTimeMs: number;
  rekeyTimeoutMs: number;
  keepaliveTimeoutMs: number;
}

export const DEFAULT_TIMERS: WireguardTimers = {
  rekeyAfterTimeMs: 120_000,
  rejectAfterTimeMs: 180_000,
  rekeyAttemptTimeMs: 90_000,
  rekeyTimeoutMs: 5_000,
  keepaliveTimeoutMs: 10_000,
};

/** Counters never get near REKEY_AFTER_MESSAGES (2^60) or REJECT_AFTER_MESSAGES; ours stop at 2^53. */
export const REJECT_AFTER_MESSAGES = 2 ** 53 - 1;
const REKEY_TIMEOUT_JITTER_MAX_MS = 334;
/** Initiations accepted from one peer at most every 20 ms (wireguard-go HandshakeInitationRate). */
const HANDSHAKE_INITIATION_RATE_MS = 20;
/** How long the device stays "under load" once detected (wireguard-go UnderLoadAfterTime). */
const UNDER_LOAD_AFTER_MS = 1000;
/** Handshake messages waiting to be processed; under load from an eighth of this (wireguard-go). */
const HANDSHAKE_QUEUE = 1024;
/** Handshake messages processed per turn of the event loop, so data keeps flowing between turns. */
const HANDSHAKES_PER_TURN = 16;
/** Packets kept per peer while its handshake is under way (wireguard-go QueueStagedSize). */
const STAGED_PACKETS = 128;
/** Under load, each source address may start 20 handshakes a second, 5 at once (wireguard-go ratelimiter). */
const RATE_PER_SECOND = 20;
const RATE_BURST = 5;

/** Per-peer, per-keypair and handshake counters, beside the pump's. */
export const WgCounter = {
  handshakeInitiationsSent: 0,
  handshakeResponsesSent: 1,
  handshakeInitiationsReceived: 2,
  handshakeResponsesReceived: 3,
  cookieRepliesSent: 4,
  cookieRepliesReceived: 5,
  keepalivesSent: 6,
  keepalivesReceived: 7,
  packetsStaged: 8,
  sessionsStarted: 9,
  /** Drops, named as the pump's are (without the `drop` prefix in snapshots). */
  dropReplay: 10,
  dropDecrypt: 11,
  dropUnknownIndex: 12,
  dropExpiredKey: 13,
  dropBadMac: 14,
  dropHandshakeRejected: 15,
  dropHandshakeQueueFull: 16,
  dropRateLimited: 17,
  dropNotAllowedSource: 18,
  dropStagedOverflow: 19,
  dropNoEndpoint: 20,
  dropCookieReply: 21,
  dropTooBig: 22,
} as const;
const WG_COUNTER_NAMES = Object.keys(WgCounter) as (keyof typeof WgCounter)[];

/** Where the engine's own messages go: the backend turns these into send descriptors. */
export interface WireguardSink {
  /** Queues `len` bytes at `engine.out[off]` for the address (4 words, IPv6 big-endian). */
  send(
    off: number,
    len: number,
    family: number,
    addr: Uint32Array,
    addrOff: number,
    port: number,
  ): void;
  /** Sends what was queued; the engine reuses `out` afterwards. */
  flush(): void;
}

/** A peer as `wg set` takes it. */
export interface WireguardPeerConfig {
  /** The peer's public key (base64, or 32 bytes). */
  publicKey: string | Uint8Array;
  /** Where to send until the peer is heard from elsewhere (WireGuard roams to authenticated sources). */
  endpoint?: { address: string; port: number };
  /** The peer's AllowedIPs: its routes out, and the inner sources accepted from it. */
  allowedIps: readonly string[];
  /** A pre-shared key mixed into the handshake (base64, or 32 bytes). */
  presharedKey?: string | Uint8Array;
  /** Seconds between keepalives when nothing else is sent (0: off). */
  persistentKeepaliveSeconds?: number;
  /** A label for status output. */
  name?: string;
}

/** A peer as `wg show` would describe it. */
export interface WireguardPeerStatus {
  publicKey: string;
  name?: string;
  endpoint?: string;
  allowedIps: string[];
  /** Wall-clock ms of the last completed handshake; 0 for never. */
  latestHandshakeMs: number;
  rxBytes: number;
  txBytes: number;
  persistentKeepaliveSeconds: number;
  /** Whether a current session can send now. */
  sessionUp: boolean;
}

class Peer {
  readonly handshake = new Handshake();
  readonly cookies: CookieGenerator;
  readonly keys: PeerKeys;
  config!: WireguardPeerConfig;
  allowedIps: string[] = [];
  staged: Buffer | undefined;
  stagedLen: Int32Array | undefined;
  stagedHead = 0;
  stagedCount = 0;

  constructor(
    readonly slot: number,
    readonly publicKey: Uint8Array,
    readonly keyText: string,
    me: Identity,
    psk: Uint8Array,
  ) {
    this.cookies = new CookieGenerator(publicKey);
    const remoteStaticKey = publicKeyObject(publicKey);
    this.keys = {
      remoteStatic: publicKey,
      remoteStaticKey,
      psk,
      staticStatic: dh(me.privateKey, remoteStaticKey),
    };
  }
}

export interface WireguardEngineOptions {
  privateKey: string | Uint8Array;
  /** The device MTU: transport padding never goes past it. */
  mtu: number;
  /** Peers the tables hold before they grow (default 64). */
  initialPeers?: number;
  timers?: Partial<WireguardTimers>;
  /** Monotonic ms (default performance.now) and wall-clock ms (default Date.now), for tests. */
  now?: () => number;
  wallNow?: () => number;
  /** Where status and errors go (default: nowhere). */
  log?: (message: string) => void;
}

/**
 * The WireGuard protocol state of one device: identity, peers, sessions (keypairs), the index
 * table, timers, cookies and the handshake queue. It sends through a WireguardSink and never
 * touches a socket. The backend's hot paths read its typed arrays directly (by slot number):
 * kp* per keypair, p* and ep* per peer; keys hold two 32-byte slots per keypair (send 2k,
 * receive 2k+1).
 */
export class WireguardEngine {
  readonly identity: Identity;
  readonly publicKey: Uint8Array;
  readonly timers: WireguardTimers;
  readonly mtu: number;
  /** The monotonic clock in ms the timers run on. */
  readonly now: () => number;
  private readonly wallNow: () => number;
  private readonly log: (message: string) => void;
  // The fields marked internal are WireguardBackend's hot-path state, which it reads and writes
  // in place; they are not API.
  /** @internal */
  readonly index = new IndexTable();
  private readonly checker: CookieChecker;
  /** @internal */
  readonly counts = new Float64Array(WG_COUNTER_NAMES.length);
  /** Cryptokey routing: AllowedIPs, the route's `port` field is the peer slot + 1. @internal */
  routes = new RouteTable();

  // Keypairs.
  /** @internal */
  keys: Buffer = Buffer.alloc(0);
  /** @internal */
  kpPeer = new Int32Array(0);
  /** @internal */
  kpLocalIndex = new Int32Array(0);
  /** The peer's index for the session, int32 (see IndexTable): written into each message header. @internal */
  kpRemoteIndex = new Int32Array(0);
  /** @internal */
  kpCreated = new Float64Array(0);
  /** @internal */
  kpSendCounter = new Float64Array(0);
  /** @internal */
  kpInitiator = new Uint8Array(0);
  /** @internal */
  replay = new ReplayWindows(0);
  private freeKeypairs: number[] = [];

  // Peers.
  private peers: (Peer | undefined)[] = [];
  private readonly byKey = new Map<string, Peer>();
  /** @internal */
  pCurrent = new Int32Array(0);
  /** @internal */
  pPrevious = new Int32Array(0);
  /** @internal */
  pNext = new Int32Array(0);
  /** @internal */
  epFamily = new Uint8Array(0);
  /** @internal */
  epAddr = new Uint32Array(0);
  /** @internal */
  epPort = new Uint16Array(0);
  /** @internal */
  pRxBytes = new Float64Array(0);
  /** @internal */
  pTxBytes = new Float64Array(0);
  private tRetransmit = new Float64Array(0);
  private tSendKeepalive = new Float64Array(0);
  private tNewHandshake = new Float64Array(0);
  private tZeroKeys = new Float64Array(0);
  private tPersistent = new Float64Array(0);
  private needAnotherKeepalive = new Uint8Array(0);
  private handshakeAttempts = new Int32Array(0);
  private sentLastMinuteHandshake = new Uint8Array(0);
  private keepaliveMs = new Float64Array(0);
  private lastHandshakeWall = new Float64Array(0);
  private peerCapacity = 0;

  // Handshake queue: messages copied out of the ring, processed a few per turn.
  private readonly hqData = Buffer.alloc(HANDSHAKE_QUEUE * 148);
  private readonly hqLen = new Int32Array(HANDSHAKE_QUEUE);
  private readonly hqFamily = new Uint8Array(HANDSHAKE_QUEUE);
  private readonly hqAddr = new Uint32Array(HANDSHAKE_QUEUE * 4);
  private readonly hqPort = new Uint16Array(HANDSHAKE_QUEUE);
  private hqHead = 0;
  private hqCount = 0;
  private underLoadUntil = 0;
  private readonly rate = new Map<string, { tokens: number; last: number }>();
  private serviceScheduled = false;
  private closed = false;

  /** Where the engine builds messages it sends itself (handshakes, cookies, keepalives, staged). */
  readonly out = allocSlab(256 * 1024);
  private outPos = 0;
  private readonly sealOps = new Int32Array(6);
  private readonly scratchSource = new Uint8Array(18);
  sink: WireguardSink | undefined;

  constructor(options: WireguardEngineOptions) {
    const privateKey =
      typeof options.privateKey === 'string'
        ? parseKey(options.privateKey, 'private key')
        : options.privateKey;
    if (!(privateKey instanceof Uint8Array) || privateKey.length !== KEY_BYTES)
      throw new WeftError(WireguardErrorCode.badKey, 'private key: must be 32 bytes');
    this.publicKey = publicKeyOf(privateKey);
    this.identity = { privateKey: privateKeyObject(privateKey), publicKey: this.publicKey };
    this.checker = new CookieChecker(this.publicKey);
    this.timers = { ...DEFAULT_TIMERS, ...options.timers };
    this.mtu = options.mtu;
    this.now = options.now ?? (() => performance.now());
    this.wallNow = options.wallNow ?? Date.now;
    this.log = options.log ?? (() => {});
    this.grow(options.initialPeers ?? 64);
  }

  get publicKeyText(): string {
    return formatKey(this.publicKey);
  }

  /** Grows every per-peer and per-keypair table to hold `peers` peers (three keypairs each). */
  private grow(peers: number): void {
    const old = this.peerCapacity;
    if (peers <= old) return;
    const kpOld = old * 3;
    const kpNew = peers * 3;
    const g = <T extends Float64Array | Int32Array | Uint32Array | Uint16Array | Uint8Array>(
      a: T,
      n: number,
      fill = 0,
    ): T => {
      const b = new (a.constructor as new (n: number) => T)(n);
      b.fill(fill);
      b.set(a);
      return b;
    };
    const keys = Buffer.alloc(kpNew * 2 * KEY_BYTES);
    this.keys.copy(keys);
    this.keys.fill(0);
    this.keys = keys;
    this.kpPeer = g(this.kpPeer, kpNew, -1);
    this.kpLocalIndex = g(this.kpLocalIndex, kpNew);
    this.kpRemoteIndex = g(this.kpRemoteIndex, kpNew);
    this.kpCreated = g(this.kpCreated, kpNew);
    this.kpSendCounter = g(this.kpSendCounter, kpNew);
    this.kpInitiator = g(this.kpInitiator, kpNew);
    this.replay = this.replay.grown(kpNew);
    for (let k = kpNew - 1; k >= kpOld; k--) this.freeKeypairs.push(k);
    this.pCurrent = g(this.pCurrent, peers, -1);
    this.pPrevious = g(this.pPrevious, peers, -1);
    this.pNext = g(this.pNext, peers, -1);
    this.epFamily = g(this.epFamily, peers);
    this.epAddr = g(this.epAddr, peers * 4);
    this.epPort = g(this.epPort, peers);
    this.pRxBytes = g(this.pRxBytes, peers);
    this.pTxBytes = g(this.pTxBytes, peers);
    this.tRetransmit = g(this.tRetransmit, peers);
    this.tSendKeepalive = g(this.tSendKeepalive, peers);
    this.tNewHandshake = g(this.tNewHandshake, peers);
    this.tZeroKeys = g(this.tZeroKeys, peers);
    this.tPersistent = g(this.tPersistent, peers);
    this.needAnotherKeepalive = g(this.needAnotherKeepalive, peers);
    this.handshakeAttempts = g(this.handshakeAttempts, peers);
    this.sentLastMinuteHandshake = g(this.sentLastMinuteHandshake, peers);
    this.keepaliveMs = g(this.keepaliveMs, peers);
    this.lastHandshakeWall = g(this.lastHandshakeWall, peers);
    this.peerCapacity = peers;
  }

  // ---------------------------------------------------------------- configuration

  /**
   * Replaces the peer set. Every config is checked first (keys, endpoints, AllowedIPs that no
   * two peers share); a bad one throws a WeftError naming it and nothing changes. Peers that stay
   * keep their sessions; removed peers' keys are zeroed.
   */
  setPeers(configs: readonly WireguardPeerConfig[], socketFamily: 4 | 6 = 4): void {
    const parsed = configs.map((c, i) => this.checkPeer(c, i, socketFamily));
    const seen = new Set<string>();
    for (const p of parsed) {
      if (seen.has(p.keyText))
        throw new WeftError(
          WireguardErrorCode.badPeer,
          `peer ${p.keyText} is listed twice: give each public key once, with all its AllowedIPs`,
        );
      seen.add(p.keyText);
    }
    // Slots: a staying peer keeps its own; new ones take free slots.
    const taken = new Set<number>();
    for (const p of parsed) {
      const old = this.byKey.get(p.keyText);
      if (old) taken.add(old.slot);
    }
    let next = 0;
    const slots = parsed.map((p) => {
      const old = this.byKey.get(p.keyText);
      if (old) return old.slot;
      while (taken.has(next)) next++;
      taken.add(next);
      return next++;
    });
    const routes: RouteInput[] = [];
    parsed.forEach((p, i) => {
      for (const dst of p.allowedIps)
        routes.push({ dst, port: slots[i] + 1, tag: p.config.name ?? p.keyText });
    });
    const table = new RouteTable();
    try {
      table.applySnapshot(routes);
    } catch (err) {
      throw new WeftError(
        WireguardErrorCode.badPeer,
        `AllowedIPs: ${(err as Error).message} (each prefix may belong to one peer only)`,
        { cause: err },
      );
    }
    // Commit: nothing below throws.
    for (const peer of [...this.byKey.values()]) if (!seen.has(peer.keyText)) this.removePeer(peer);
    const needed = Math.max(0, ...slots) + 1;
    if (needed > this.peerCapacity) this.grow(Math.max(needed, this.peerCapacity * 2));
    parsed.forEach((p, i) => {
      let peer = this.byKey.get(p.keyText);
      if (!peer) {
        peer = new Peer(slots[i], p.key, p.keyText, this.identity, p.psk);
        this.peers[peer.slot] = peer;
        this.byKey.set(p.keyText, peer);
      } else {
        peer.keys.psk = p.psk;
      }
      peer.config = p.config;
      peer.allowedIps = p.allowedIps;
      const s = peer.slot;
      if (p.endpoint)
        this.setEndpointTo(s, p.endpoint.family, p.endpoint.words, 0, p.endpoint.port);
      const keepalive = (p.config.persistentKeepaliveSeconds ?? 0) * 1000;
      if (keepalive !== this.keepaliveMs[s]) {
        this.keepaliveMs[s] = keepalive;
        // wg set ... persistent-keepalive N sends one at once (wireguard-go uapi).
        if (keepalive > 0) this.sendKeepalive(s);
        else this.tPersistent[s] = 0;
      }
    });
    this.routes = table;
    this.flush();
  }

  private checkPeer(c: WireguardPeerConfig, i: number, socketFamily: 4 | 6) {
    const what = `peer ${c?.name ?? i}`;
    try {
      if (typeof c !== 'object' || c === null) throw new Error('must be an object');
      const key =
        typeof c.publicKey === 'string' ? parseKey(c.publicKey, 'publicKey') : c.publicKey;
      if (!(key instanceof Uint8Array) || key.length !== KEY_BYTES)
        throw new Error('publicKey must be 32 bytes');
      const keyText = formatKey(key);
      if (keyText === this.publicKeyText)
        throw new Error('publicKey is this device own public key');
      if (
        publicKeyObject(key) === undefined ||
        dh(this.identity.privateKey, publicKeyObject(key)) === undefined
      )
        throw new Error(`publicKey ${keyText} is not a usable Curve25519 key`);
      const psk =
        c.presharedKey === undefined
          ? new Uint8Array(32)
          : typeof c.presharedKey === 'string'
            ? parseKey(c.presharedKey, 'presharedKey')
            : new Uint8Array(c.presharedKey);
      if (psk.length !== 32) throw new Error('presharedKey must be 32 bytes');
      if (!Array.isArray(c.allowedIps)) throw new Error('allowedIps must be an array of CIDRs');
      const keepalive = c.persistentKeepaliveSeconds ?? 0;
      if (!Number.isInteger(keepalive) || keepalive < 0 || keepalive > 65535)
        throw new Error(`persistentKeepaliveSeconds ${keepalive} must be 0..65535`);
      let endpoint: { family: 4 | 6; words: Uint32Array; port: number } | undefined;
      if (c.endpoint !== undefined) {
        const ip = parseIp(c.endpoint.address);
        const port = c.endpoint.port;
        if (!Number.isInteger(port) || port < 1 || port > 65535)
          throw new Error(`endpoint port ${port} is not a UDP port`);
        if (ip.family !== socketFamily)
          throw new Error(
            `endpoint ${c.endpoint.address} is IPv${ip.family} but this device's socket is IPv${socketFamily}`,
          );
        const words = new Uint32Array(4);
        if (ip.family === 4) words[0] = ip.address;
        else
          for (let w = 0; w < 4; w++)
            words[w] =
              ((ip.address[w * 4] << 24) |
                (ip.address[w * 4 + 1] << 16) |
                (ip.address[w * 4 + 2] << 8) |
                ip.address[w * 4 + 3]) >>>
              0;
        endpoint = { family: ip.family, words, port };
      }
      return { config: c, key, keyText, psk, allowedIps: [...c.allowedIps], endpoint };
    } catch (err) {
      const code = err instanceof WeftError ? err.code : WireguardErrorCode.badPeer;
      throw new WeftError(code, `${what}: ${(err as Error).message}`, { cause: err });
    }
  }

  private removePeer(peer: Peer): void {
    const s = peer.slot;
    this.zeroAndFlushAll(s);
    this.tRetransmit[s] = 0;
    this.tSendKeepalive[s] = 0;
    this.tNewHandshake[s] = 0;
    this.tZeroKeys[s] = 0;
    this.tPersistent[s] = 0;
    this.keepaliveMs[s] = 0;
    this.epFamily[s] = 0;
    this.pRxBytes[s] = 0;
    this.pTxBytes[s] = 0;
    this.lastHandshakeWall[s] = 0;
    this.handshakeAttempts[s] = 0;
    this.peers[s] = undefined;
    this.byKey.delete(peer.keyText);
  }

  /** Every peer, as `wg show` describes it. */
  peerStatus(): WireguardPeerStatus[] {
    const out: WireguardPeerStatus[] = [];
    for (const peer of this.byKey.values()) {
      const s = peer.slot;
      const kp = this.pCurrent[s];
      out.push({
        publicKey: peer.keyText,
        name: peer.config.name,
        endpoint: this.endpointText(s),
        allowedIps: peer.allowedIps,
        latestHandshakeMs: this.lastHandshakeWall[s],
        rxBytes: this.pRxBytes[s],
        txBytes: this.pTxBytes[s],
        persistentKeepaliveSeconds: this.keepaliveMs[s] / 1000,
        sessionUp: kp >= 0 && this.now() - this.kpCreated[kp] < this.timers.rejectAfterTimeMs,
      });
    }
    return out;
  }

  private endpointText(s: number): string | undefined {
    const f = this.epFamily[s];
    if (f === 0) return undefined;
    if (f === 4) return `${formatIp({ family: 4, address: this.epAddr[s * 4] })}:${this.epPort[s]}`;
    const b = new Uint8Array(16);
    for (let w = 0; w < 4; w++) {
      const v = this.epAddr[s * 4 + w];
      b[w * 4] = v >>> 24;
      b[w * 4 + 1] = v >>> 16;
      b[w * 4 + 2] = v >>> 8;
      b[w * 4 + 3] = v;
    }
    return `[${formatIp({ family: 6, address: b })}]:${this.epPort[s]}`;
  }

  /** The engine's counters by name ({@link WgCounter}). */
  counterSnapshot(): Record<string, number> {
    const out: Record<string, number> = {};
    WG_COUNTER_NAMES.forEach((name, i) => {
      out[name] = this.counts[i];
    });
    return out;
  }

  /** Forgets every session with every peer (as after REJECT_AFTER_TIME * 3): the next packet starts a handshake. */
  expireSessions(): void {
    for (const peer of this.byKey.values()) this.zeroAndFlushAll(peer.slot);
  }

  /** Starts a handshake with every peer now (as `wg` does on a peer's first packet). */
  initiateAll(): void {
    for (const peer of this.byKey.values()) this.sendHandshakeInitiation(peer.slot, false);
    this.flush();
  }

  /** Removes every peer and zeroes the session keys; nothing is sent after. */
  close(): void {
    this.closed = true;
    for (const peer of [...this.byKey.values()]) this.removePeer(peer);
    this.keys.fill(0);
  }

  // ---------------------------------------------------------------- hot-path helpers

  /** Hot path: sets peer s's endpoint to a datagram's source (WireGuard roaming), when it differs. */
  setEndpointTo(s: number, family: number, addr: Uint32Array, off: number, port: number): void {
    const at = s * 4;
    const ep = this.epAddr;
    if (
      this.epFamily[s] === family &&
      this.epPort[s] === port &&
      ep[at] === addr[off] &&
      (family === 4 ||
        (ep[at + 1] === addr[off + 1] &&
          ep[at + 2] === addr[off + 2] &&
          ep[at + 3] === addr[off + 3]))
    )
      return;
    this.epFamily[s] = family;
    this.epPort[s] = port;
    ep[at] = addr[off];
    ep[at + 1] = family === 6 ? addr[off + 1] : 0;
    ep[at + 2] = family === 6 ? addr[off + 2] : 0;
    ep[at + 3] = family === 6 ? addr[off + 3] : 0;
  }

  /** Whether peer s can send on its current session now; if not, stage the packet and handshake. */
  stage(s: number, slab: Uint8Array, off: number, len: number): void {
    const peer = this.peers[s];
    if (peer === undefined) return;
    if (peer.staged === undefined) {
      peer.staged = Buffer.alloc(STAGED_PACKETS * this.stagedStride);
      peer.stagedLen = new Int32Array(STAGED_PACKETS);
    }
    if (len > this.stagedStride - 32) {
      this.counts[WgCounter.dropTooBig]++;
      return;
    }
    if (peer.stagedCount === STAGED_PACKETS) {
      // The oldest goes, as in wireguard-go.
      peer.stagedHead = (peer.stagedHead + 1) % STAGED_PACKETS;
      peer.stagedCount--;
      this.counts[WgCounter.dropStagedOverflow]++;
    }
    const k = (peer.stagedHead + peer.stagedCount) % STAGED_PACKETS;
    peer.staged.set(slab.subarray(off, off + len), k * this.stagedStride);
    peer.stagedLen![k] = len;
    peer.stagedCount++;
    this.counts[WgCounter.packetsStaged]++;
    this.sendStagedPackets(s);
  }

  private get stagedStride(): number {
    return this.mtu + 64;
  }

  /** After a batch sent data to peers list[0..n): timers and key freshness (once per peer). */
  afterDataSent(list: Int32Array, n: number): void {
    const now = this.now();
    for (let j = 0; j < n; j++) {
      const s = list[j];
      this.timersAnyAuthenticatedPacketTraversal(s, now);
      this.tSendKeepalive[s] = 0; // timersAnyAuthenticatedPacketSent
      this.timersDataSent(s, now);
      this.keepKeyFreshSending(s, now);
    }
    this.flush();
  }

  /**
   * After a batch received authenticated messages from peers list[0..n): `data[j]` says whether
   * any carried a packet (not only keepalives).
   */
  afterReceived(list: Int32Array, data: Uint8Array, n: number): void {
    const now = this.now();
    for (let j = 0; j < n; j++) {
      const s = list[j];
      this.keepKeyFreshReceiving(s, now);
      this.timersAnyAuthenticatedPacketTraversal(s, now);
      this.tNewHandshake[s] = 0; // timersAnyAuthenticatedPacketReceived
      if (data[j]) this.timersDataReceived(s, now);
    }
    this.flush();
  }

  /**
   * The first message on a responder's new session confirms it: it becomes current (the paper,
   * 5.4.5; wireguard-go ReceivedWithKeypair), and packets waiting for it go out.
   */
  receivedWithKeypair(s: number, kp: number): void {
    if (this.pNext[s] !== kp) return;
    const old = this.pPrevious[s];
    this.pPrevious[s] = this.pCurrent[s];
    this.deleteKeypair(old);
    this.pCurrent[s] = kp;
    this.pNext[s] = -1;
    this.timersHandshakeComplete(s);
    this.sendStagedPackets(s);
  }

  // ---------------------------------------------------------------- handshake messages

  /** Copies a handshake message out of the ring into the queue; full, it is dropped (counted). */
  enqueueHandshake(
    slab: Uint8Array,
    off: number,
    len: number,
    family: number,
    addrs: Uint32Array,
    addrOff: number,
    port: number,
  ): void {
    if (this.hqCount === HANDSHAKE_QUEUE) {
      this.counts[WgCounter.dropHandshakeQueueFull]++;
      return;
    }
    if (this.hqCount >= HANDSHAKE_QUEUE / 8) this.underLoadUntil = this.now() + UNDER_LOAD_AFTER_MS;
    const k = (this.hqHead + this.hqCount) % HANDSHAKE_QUEUE;
    this.hqData.set(slab.subarray(off, off + len), k * 148);
    this.hqLen[k] = len;
    this.hqFamily[k] = family;
    for (let w = 0; w < 4; w++) this.hqAddr[k * 4 + w] = addrs[addrOff + w];
    this.hqPort[k] = port;
    this.hqCount++;
    this.scheduleService();
  }

  private scheduleService(): void {
    if (this.serviceScheduled || this.closed) return;
    this.serviceScheduled = true;
    setImmediate(() => {
      this.serviceScheduled = false;
      this.serviceHandshakes();
    });
  }

  /** Processes up to HANDSHAKES_PER_TURN queued messages; schedules itself again for the rest. */
  serviceHandshakes(limit = HANDSHAKES_PER_TURN): void {
    if (this.closed) return;
    for (let done = 0; done < limit && this.hqCount > 0; done++) {
      const k = this.hqHead;
      this.hqHead = (this.hqHead + 1) % HANDSHAKE_QUEUE;
      this.hqCount--;
      const len = this.hqLen[k];
      const msg = new Uint8Array(this.hqData.subarray(k * 148, k * 148 + len));
      try {
        this.handleHandshake(msg, len, this.hqFamily[k], k * 4, this.hqPort[k]);
      } catch (err) {
        // A bug must not stop the queue; the message is dropped and said.
        this.counts[WgCounter.dropHandshakeRejected]++;
        this.log(`wireguard: handshake message dropped: ${(err as Error).message}`);
      }
    }
    this.flush();
    if (this.hqCount > 0) this.scheduleService();
  }

  private underLoad(now: number): boolean {
    if (this.hqCount >= HANDSHAKE_QUEUE / 8) {
      this.underLoadUntil = now + UNDER_LOAD_AFTER_MS;
      return true;
    }
    return this.underLoadUntil > now;
  }

  /** The cookie's view of a source: its address bytes and port (wireguard-go DstToBytes). */
  private sourceBytes(family: number, addrOff: number, port: number): Uint8Array {
    const b = this.scratchSource;
    const n = family === 4 ? 1 : 4;
    for (let w = 0; w < n; w++) {
      const v = this.hqAddr[addrOff + w];
      b[w * 4] = v >>> 24;
      b[w * 4 + 1] = v >>> 16;
      b[w * 4 + 2] = v >>> 8;
      b[w * 4 + 3] = v;
    }
    b[n * 4] = port;
    b[n * 4 + 1] = port >>> 8;
    return b.subarray(0, n * 4 + 2);
  }

  private allow(family: number, addrOff: number, now: number): boolean {
    const key =
      family === 4
        ? `${this.hqAddr[addrOff]}`
        : `${this.hqAddr[addrOff]}:${this.hqAddr[addrOff + 1]}:${this.hqAddr[addrOff + 2]}:${this.hqAddr[addrOff + 3]}`;
    const cost = 1000 / RATE_PER_SECOND;
    let e = this.rate.get(key);
    if (!e) {
      e = { tokens: cost * RATE_BURST, last: now };
      this.rate.set(key, e);
    }
    e.tokens = Math.min(cost * RATE_BURST, e.tokens + (now - e.last));
    e.last = now;
    if (e.tokens < cost) return false;
    e.tokens -= cost;
    return true;
  }

  private handleHandshake(
    msg: Uint8Array,
    len: number,
    family: number,
    addrOff: number,
    port: number,
  ): void {
    const now = this.now();
    const type = msg[0];
    if (type === WireguardType.cookieReply) {
      const v = this.index.lookup(readLe32(msg, WireguardField.receiver) | 0);
      const s = v === NO_INDEX ? -1 : v < 0 ? -v - 1 : this.kpPeer[v];
      const peer = s < 0 ? undefined : this.peers[s];
      if (peer === undefined || !peer.cookies.consumeReply(msg, now)) {
        this.counts[WgCounter.dropCookieReply]++;
        return;
      }
      this.counts[WgCounter.cookieRepliesReceived]++;
      return;
    }
    if (!this.checker.checkMac1(msg, len)) {
      this.counts[WgCounter.dropBadMac]++;
      return;
    }
    if (this.underLoad(now)) {
      const source = this.sourceBytes(family, addrOff, port);
      if (!this.checker.checkMac2(msg, len, source, now)) {
        const reply = this.checker.createReply(msg, len, source, now);
        const at = this.reserve(reply.length);
        this.out.set(reply, at);
        this.sink?.send(at, reply.length, family, this.hqAddr, addrOff, port);
        this.counts[WgCounter.cookieRepliesSent]++;
        return;
      }
      if (!this.allow(family, addrOff, now)) {
        this.counts[WgCounter.dropRateLimited]++;
        return;
      }
    }
    if (type === WireguardType.initiation) {
      const got = consumeInitiation(this.identity, msg, (remote) => {
        const peer = this.byKey.get(formatKey(remote));
        return peer?.keys.staticStatic;
      });
      const peer = got && this.byKey.get(formatKey(got.remoteStatic));
      if (got === undefined || peer === undefined) {
        this.counts[WgCounter.dropHandshakeRejected]++;
        return;
      }
      const hs = peer.handshake;
      // Replay: the timestamp must move forward; flood: one initiation per 20 ms.
      if (compareBytes(got.timestamp, hs.lastTimestamp) <= 0) {
        this.counts[WgCounter.dropHandshakeRejected]++;
        return;
      }
      if (now - hs.lastInitiationConsumption <= HANDSHAKE_INITIATION_RATE_MS) {
        this.counts[WgCounter.dropHandshakeRejected]++;
        return;
      }
      hs.hash = got.hash;
      hs.chainKey = got.chainKey;
      hs.remoteIndex = got.sender;
      hs.remoteEphemeral = got.remoteEphemeral;
      hs.lastTimestamp = got.timestamp;
      hs.lastInitiationConsumption = now;
      hs.state = HandshakeState.initiationConsumed;
      const s = peer.slot;
      this.counts[WgCounter.handshakeInitiationsReceived]++;
      this.timersAnyAuthenticatedPacketTraversal(s, now);
      this.tNewHandshake[s] = 0;
      this.setEndpointTo(s, family, this.hqAddr, addrOff, port);
      this.pRxBytes[s] += len;
      this.sendHandshakeResponse(s, now);
      return;
    }
    if (type === WireguardType.response) {
      const v = this.index.lookup(readLe32(msg, WireguardField.responseReceiver) | 0);
      if (v === NO_INDEX || v >= 0) {
        this.counts[WgCounter.dropHandshakeRejected]++;
        return;
      }
      const s = -v - 1;
      const peer = this.peers[s];
      if (peer === undefined || !consumeResponse(this.identity, peer.keys, peer.handshake, msg)) {
        this.counts[WgCounter.dropHandshakeRejected]++;
        return;
      }
      this.counts[WgCounter.handshakeResponsesReceived]++;
      this.setEndpointTo(s, family, this.hqAddr, addrOff, port);
      this.pRxBytes[s] += len;
      this.timersAnyAuthenticatedPacketTraversal(s, now);
      this.tNewHandshake[s] = 0;
      if (!this.beginSession(s, now)) return;
      this.timersHandshakeComplete(s);
      this.sendKeepalive(s);
    }
  }

  private sendHandshakeResponse(s: number, now: number): void {
    const peer = this.peers[s]!;
    const hs = peer.handshake;
    hs.lastSentHandshake = now;
    this.index.remove(hs.localIndex);
    const index = this.index.add(-s - 1);
    const msg = createResponse(peer.keys, hs, index);
    if (msg === undefined) {
      this.index.remove(index);
      this.counts[WgCounter.dropHandshakeRejected]++;
      return;
    }
    peer.cookies.addMacs(msg, now);
    if (!this.beginSession(s, now)) return;
    this.timersAnyAuthenticatedPacketTraversal(s, now);
    this.tSendKeepalive[s] = 0;
    this.sendToPeer(s, msg);
    this.counts[WgCounter.handshakeResponsesSent]++;
  }

  /** Starts a handshake with peer s unless one went out less than REKEY_TIMEOUT ago. */
  sendHandshakeInitiation(s: number, isRetry: boolean): void {
    const peer = this.peers[s];
    if (peer === undefined) return;
    const now = this.now();
    if (!isRetry) this.handshakeAttempts[s] = 0;
    const hs = peer.handshake;
    if (now - hs.lastSentHandshake < this.timers.rekeyTimeoutMs) return;
    if (this.epFamily[s] === 0) {
      this.counts[WgCounter.dropNoEndpoint]++;
      return;
    }
    hs.lastSentHandshake = now;
    this.index.remove(hs.localIndex);
    const index = this.index.add(-s - 1);
    const msg = createInitiation(this.identity, peer.keys, hs, index, this.wallNow());
    if (msg === undefined) {
      this.index.remove(index);
      return;
    }
    peer.cookies.addMacs(msg, now);
    this.timersAnyAuthenticatedPacketTraversal(s, now);
    this.tSendKeepalive[s] = 0;
    this.sendToPeer(s, msg);
    this.counts[WgCounter.handshakeInitiationsSent]++;
    this.tRetransmit[s] =
      now + this.timers.rekeyTimeoutMs + Math.random() * REKEY_TIMEOUT_JITTER_MAX_MS;
  }

  /** Derives the session of a finished handshake and rotates peer s's keypairs (wireguard-go BeginSymmetricSession). */
  private beginSession(s: number, now: number): boolean {
    const peer = this.peers[s]!;
    const hs = peer.handshake;
    const localIndex = hs.localIndex;
    const remoteIndex = hs.remoteIndex;
    const derived = deriveKeys(hs);
    if (derived === undefined) return false;
    const kp = this.allocKeypair();
    this.kpPeer[kp] = s;
    this.keys.set(derived.send, kp * 64);
    this.keys.set(derived.receive, kp * 64 + 32);
    derived.send.fill(0);
    derived.receive.fill(0);
    this.kpCreated[kp] = now;
    this.kpSendCounter[kp] = 0;
    this.kpInitiator[kp] = derived.initiator ? 1 : 0;
    this.kpLocalIndex[kp] = localIndex;
    this.kpRemoteIndex[kp] = remoteIndex;
    this.replay.reset(kp);
    this.index.set(localIndex, kp);
    hs.localIndex = 0;
    const previous = this.pPrevious[s];
    const next = this.pNext[s];
    const current = this.pCurrent[s];
    if (derived.initiator) {
      if (next >= 0) {
        this.pNext[s] = -1;
        this.pPrevious[s] = next;
        this.deleteKeypair(current);
      } else {
        this.pPrevious[s] = current;
      }
      this.deleteKeypair(previous);
      this.pCurrent[s] = kp;
    } else {
      this.pNext[s] = kp;
      this.deleteKeypair(next);
      this.pPrevious[s] = -1;
      this.deleteKeypair(previous);
    }
    this.counts[WgCounter.sessionsStarted]++;
    this.tZeroKeys[s] = now + this.timers.rejectAfterTimeMs * 3; // timersSessionDerived
    return true;
  }

  private allocKeypair(): number {
    if (this.freeKeypairs.length === 0) this.grow(this.peerCapacity * 2);
    return this.freeKeypairs.pop()!;
  }

  private deleteKeypair(kp: number): void {
    if (kp < 0 || this.kpPeer[kp] < 0) return;
    this.index.remove(this.kpLocalIndex[kp]);
    this.keys.fill(0, kp * 64, kp * 64 + 64);
    this.kpPeer[kp] = -1;
    this.kpCreated[kp] = 0;
    this.freeKeypairs.push(kp);
  }

  private zeroAndFlushAll(s: number): void {
    this.deleteKeypair(this.pPrevious[s]);
    this.deleteKeypair(this.pCurrent[s]);
    this.deleteKeypair(this.pNext[s]);
    this.pPrevious[s] = -1;
    this.pCurrent[s] = -1;
    this.pNext[s] = -1;
    const peer = this.peers[s];
    if (peer) {
      this.index.remove(peer.handshake.localIndex);
      peer.handshake.clear();
      peer.handshake.lastSentHandshake = Number.NEGATIVE_INFINITY;
      peer.stagedCount = 0;
    }
  }

  // ---------------------------------------------------------------- sending our own messages

  /** Room for `len` bytes in `out`: flushes what is queued when it is full. */
  private reserve(len: number): number {
    if (this.outPos + len > this.out.length) this.flush();
    const at = this.outPos;
    this.outPos += (len + 15) & ~15;
    return at;
  }

  private sendToPeer(s: number, msg: Uint8Array): void {
    const at = this.reserve(msg.length);
    this.out.set(msg, at);
    this.sink?.send(at, msg.length, this.epFamily[s], this.epAddr, s * 4, this.epPort[s]);
    this.pTxBytes[s] += msg.length;
  }

  /** Sends what the engine queued through its sink. */
  flush(): void {
    this.sink?.flush();
    this.outPos = 0;
  }

  /** A keepalive (an empty transport message) unless packets are waiting; then those go. */
  private sendKeepalive(s: number): void {
    const peer = this.peers[s];
    if (peer === undefined) return;
    if (peer.stagedCount === 0) {
      peer.staged ??= Buffer.alloc(STAGED_PACKETS * this.stagedStride);
      peer.stagedLen ??= new Int32Array(STAGED_PACKETS);
      peer.stagedLen[peer.stagedHead] = 0;
      peer.stagedCount = 1;
    }
    this.sendStagedPackets(s);
  }

  /** Seals and sends peer s's staged packets on its current session, or starts a handshake. */
  private sendStagedPackets(s: number): void {
    const peer = this.peers[s];
    if (peer === undefined || peer.stagedCount === 0) return;
    const now = this.now();
    const kp = this.pCurrent[s];
    if (
      kp < 0 ||
      this.kpSendCounter[kp] >= REJECT_AFTER_MESSAGES ||
      now - this.kpCreated[kp] >= this.timers.rejectAfterTimeMs ||
      this.epFamily[s] === 0
    ) {
      this.sendHandshakeInitiation(s, false);
      return;
    }
    let data = false;
    const ops = this.sealOps;
    while (peer.stagedCount > 0) {
      const k = peer.stagedHead;
      peer.stagedHead = (peer.stagedHead + 1) % STAGED_PACKETS;
      peer.stagedCount--;
      const len = peer.stagedLen![k];
      const padded = wireguardPaddedLength(len, this.mtu);
      const total = WG_TRANSPORT_HEADER_BYTES + padded + 16;
      const at = this.reserve(total);
      const counter = this.kpSendCounter[kp]++;
      writeTransportHeader(this.out, at, this.kpRemoteIndex[kp], counter);
      ops[0] = k * this.stagedStride;
      ops[1] = len;
      ops[2] = padded - len;
      ops[3] = at;
      ops[4] = kp * 2;
      sealTransport(peer.staged!, this.out, this.keys, ops, 1);
      if (ops[5] < 0) continue;
      this.sink?.send(at, total, this.epFamily[s], this.epAddr, s * 4, this.epPort[s]);
      this.pTxBytes[s] += total;
      if (len === 0) this.counts[WgCounter.keepalivesSent]++;
      else data = true;
    }
    this.timersAnyAuthenticatedPacketTraversal(s, now);
    this.tSendKeepalive[s] = 0;
    if (data) this.timersDataSent(s, now);
    this.keepKeyFreshSending(s, now);
  }

  // ---------------------------------------------------------------- timers

  private timersDataSent(s: number, now: number): void {
    if (this.tNewHandshake[s] === 0)
      this.tNewHandshake[s] =
        now +
        this.timers.keepaliveTimeoutMs +
        this.timers.rekeyTimeoutMs +
        Math.random() * REKEY_TIMEOUT_JITTER_MAX_MS;
  }

  private timersDataReceived(s: number, now: number): void {
    if (this.tSendKeepalive[s] === 0) this.tSendKeepalive[s] = now + this.timers.keepaliveTimeoutMs;
    else this.needAnotherKeepalive[s] = 1;
  }

  private timersAnyAuthenticatedPacketTraversal(s: number, now: number): void {
    const k = this.keepaliveMs[s];
    if (k > 0) this.tPersistent[s] = now + k;
  }

  private timersHandshakeComplete(s: number): void {
    this.tRetransmit[s] = 0;
    this.handshakeAttempts[s] = 0;
    this.sentLastMinuteHandshake[s] = 0;
    this.lastHandshakeWall[s] = this.wallNow();
  }

  private keepKeyFreshSending(s: number, now: number): void {
    const kp = this.pCurrent[s];
    if (kp < 0) return;
    if (this.kpInitiator[kp] && now - this.kpCreated[kp] > this.timers.rekeyAfterTimeMs)
      this.sendHandshakeInitiation(s, false);
  }

  private keepKeyFreshReceiving(s: number, now: number): void {
    if (this.sentLastMinuteHandshake[s]) return;
    const kp = this.pCurrent[s];
    const t = this.timers;
    if (
      kp >= 0 &&
      this.kpInitiator[kp] &&
      now - this.kpCreated[kp] > t.rejectAfterTimeMs - t.keepaliveTimeoutMs - t.rekeyTimeoutMs
    ) {
      this.sentLastMinuteHandshake[s] = 1;
      this.sendHandshakeInitiation(s, false);
    }
  }

  /** Runs every timer that is due (the backend calls this a few times a second). */
  tick(): void {
    if (this.closed) return;
    const now = this.now();
    const maxAttempts = Math.floor(this.timers.rekeyAttemptTimeMs / this.timers.rekeyTimeoutMs);
    for (const peer of this.byKey.values()) {
      const s = peer.slot;
      if (this.tRetransmit[s] !== 0 && this.tRetransmit[s] <= now) {
        this.tRetransmit[s] = 0;
        if (this.handshakeAttempts[s] > maxAttempts) {
          // Give up: drop what waits, and zero the keys later unless a handshake succeeds.
          this.tSendKeepalive[s] = 0;
          peer.stagedCount = 0;
          if (this.tZeroKeys[s] === 0) this.tZeroKeys[s] = now + this.timers.rejectAfterTimeMs * 3;
        } else {
          this.handshakeAttempts[s]++;
          this.sendHandshakeInitiation(s, true);
        }
      }
      if (this.tSendKeepalive[s] !== 0 && this.tSendKeepalive[s] <= now) {
        this.tSendKeepalive[s] = 0;
        this.sendKeepalive(s);
        if (this.needAnotherKeepalive[s]) {
          this.needAnotherKeepalive[s] = 0;
          this.tSendKeepalive[s] = now + this.timers.keepaliveTimeoutMs;
        }
      }
      if (this.tNewHandshake[s] !== 0 && this.tNewHandshake[s] <= now) {
        this.tNewHandshake[s] = 0;
        this.sendHandshakeInitiation(s, false);
      }
      if (this.tZeroKeys[s] !== 0 && this.tZeroKeys[s] <= now) {
        this.tZeroKeys[s] = 0;
        this.zeroAndFlushAll(s);
      }
      if (this.tPersistent[s] !== 0 && this.tPersistent[s] <= now) {
        this.tPersistent[s] = 0;
        if (this.keepaliveMs[s] > 0) this.sendKeepalive(s);
      }
    }
    // Forget rate-limit entries idle for a second.
    for (const [key, e] of this.rate) if (now - e.last > 1000) this.rate.delete(key);
    this.flush();
  }

  /** A random 32-bit value (exported for the index table). */
  static random32(): number {
    return randomBytes(4).readUInt32LE(0);
  }
}

export type { KeyObject };
