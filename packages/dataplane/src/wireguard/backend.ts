import { formatCidr, parseCidr, parseIp, WeftError } from '@weft/core';
import {
  IcmpCode,
  IcmpType,
  ipv4Dst,
  ipv4Src,
  ipv4TotalLength,
  ipv6PayloadLength,
  overlayMtu,
  WG_TRANSPORT_HEADER_BYTES,
  WIREGUARD_PORT,
  WireguardType,
  wireguardCounter,
  wireguardMessageType,
  wireguardPaddedLength,
  writeTransportHeader,
} from '@weft/encap';
import type { RouteDump } from '@weft/fdb';
import { OpenOp, openTransport, SealOp, sealTransport } from '@weft/tun';
import {
  Backend,
  type BackendIo,
  type CommonBackendOptions,
  type DeviceIo,
  openBackendIo,
} from '../backend.js';
import { Counter, type CounterSnapshot } from '../counters.js';
import type { ParsedNode, RemoteNode } from '../nodes.js';
import { DeviceSlab, type UdpIo, UdpSlab } from '../pump.js';
import {
  type WireguardEngine as Engine,
  REJECT_AFTER_MESSAGES,
  WgCounter,
  WireguardEngine,
  type WireguardPeerConfig,
  type WireguardPeerStatus,
  type WireguardSink,
  type WireguardTimers,
} from './engine.js';
import { NO_INDEX } from './index-table.js';
import { parseKey, WireguardErrorCode } from './keys.js';

/** A remote node with the WireGuard public key its lease publishes (flannel's BackendData). */
export interface WireguardNode extends RemoteNode {
  /** The node's public key, base64 (`{"PublicKey": ...}` in its lease). */
  publicKey: string;
}

export interface WireguardBackendOptions extends CommonBackendOptions {
  /** This node's private key (base64, as `wg genkey` prints, or 32 bytes). */
  privateKey: string | Uint8Array;
  /** This node's overlay address, put on the device as a /32 (flannel: the lease's first address). */
  nodeAddress?: string;
  /** And its IPv6 overlay address, as a /128. */
  nodeAddress6?: string;
  /** The cluster networks routed into the device (flannel: the whole Network and IPv6Network). */
  network?: string;
  network6?: string;
  /** The UDP port we listen on and, unless a node says otherwise, peers listen on (default 51820). */
  listenPort?: number;
  /** A pre-shared key for every peer (flannel's `PSK`), base64. */
  presharedKey?: string;
  /** Seconds between keepalives to every peer when idle (flannel's PersistentKeepaliveInterval; 0 off). */
  persistentKeepaliveSeconds?: number;
  /** Protocol timers, shortened by tests; the defaults are the paper's. */
  timers?: Partial<WireguardTimers>;
  /** Timer resolution in ms (default 100). */
  tickMs?: number;
  log?: (message: string) => void;
}

/** The slab index the engine's own messages are sent from. */
const CONTROL_SLAB = 3;

type WireguardCounterSnapshot = CounterSnapshot & { wireguard: Record<string, number> };

/**
 * WireGuard (the paper; byte-compatible with the kernel's and wireguard-go) on weft's pump: a TUN
 * device whose packets are sealed per peer with ChaCha20-Poly1305 in batches (the addon, through
 * Node's OpenSSL), and a UDP socket carrying transport and handshake messages. Peers come from
 * nodes (their public key, public IP, subnets as AllowedIPs); the protocol state lives in a
 * WireguardEngine.
 */
export class WireguardBackend extends Backend {
  readonly type = 'wireguard' as const;
  protected readonly needs = { subnet: false, vtepMac: false };
  readonly engine: Engine;
  private readonly listenPort: number;
  private readonly psk: string | undefined;
  private readonly keepaliveSeconds: number;
  private readonly sealOps: Int32Array;
  private readonly openOps: Int32Array;
  private readonly opSlot: Int32Array;
  private readonly opKp: Int32Array;
  private readonly opCounter: Float64Array;
  private readonly touched: Int32Array;
  private readonly touchedData: Uint8Array;
  private readonly touchedSlot: Int32Array;
  private peerMark = new Int32Array(0);
  private batchId = 0;
  private controlCount = 0;
  private ticker: NodeJS.Timeout | undefined;
  private readonly icmpSource4: number;

  private constructor(tun: DeviceIo, socket: UdpIo, options: WireguardBackendOptions) {
    super(tun, socket, { ...options, offload: false });
    this.listenPort = options.listenPort ?? WIREGUARD_PORT;
    this.psk = options.presharedKey;
    this.keepaliveSeconds = options.persistentKeepaliveSeconds ?? 0;
    this.engine = new WireguardEngine({
      privateKey: options.privateKey,
      mtu: tun.mtu,
      timers: options.timers,
      log: options.log,
    });
    this.sealOps = new Int32Array(this.batch * SealOp.words);
    this.openOps = new Int32Array(this.batch * OpenOp.words);
    this.opSlot = new Int32Array(this.batch);
    this.opKp = new Int32Array(this.batch);
    this.opCounter = new Float64Array(this.batch);
    this.touched = new Int32Array(this.batch);
    this.touchedData = new Uint8Array(this.batch);
    this.touchedSlot = new Int32Array(this.batch);
    this.icmpSource4 =
      options.nodeAddress !== undefined ? (parseIp(options.nodeAddress).address as number) : -1;
    const sink: WireguardSink = {
      send: (off, len, family, addr, addrOff, port) =>
        this.queueControl(off, len, family, addr, addrOff, port),
      flush: () => this.flushControl(),
    };
    this.engine.sink = sink;
  }

  /** Checks the options a node agent passes; a bad one is a WeftError naming it. */
  private static check(options: WireguardBackendOptions): void {
    const bad = (message: string) => {
      throw new WeftError(WireguardErrorCode.badOption, message);
    };
    if (options.privateKey === undefined)
      bad('privateKey is required: generate one with `wg genkey`');
    if (typeof options.privateKey === 'string') parseKey(options.privateKey, 'privateKey');
    if (options.presharedKey !== undefined) parseKey(options.presharedKey, 'presharedKey (PSK)');
    const port = options.listenPort ?? WIREGUARD_PORT;
    if (!Number.isInteger(port) || port < 0 || port > 65535)
      bad(`listenPort ${options.listenPort} is not a UDP port`);
    const k = options.persistentKeepaliveSeconds ?? 0;
    if (!Number.isInteger(k) || k < 0 || k > 65535)
      bad(`persistentKeepaliveSeconds ${k} must be a whole number of seconds, 0..65535`);
    if (options.nodeAddress !== undefined && parseIp(options.nodeAddress).family !== 4)
      bad(`nodeAddress ${options.nodeAddress} must be IPv4 (nodeAddress6 takes IPv6)`);
    if (options.nodeAddress6 !== undefined && parseIp(options.nodeAddress6).family !== 6)
      bad(`nodeAddress6 ${options.nodeAddress6} must be IPv6`);
    for (const n of [options.network, options.network6]) if (n !== undefined) parseCidr(n);
  }

  /** Opens the TUN device (named as asked, e.g. flannel-wg) and the UDP socket, and starts. */
  static open(options: WireguardBackendOptions): WireguardBackend {
    WireguardBackend.check(options);
    const mtu = overlayMtu(options.underlayMtu ?? 1500, 'wireguard');
    const io = openBackendIo(
      {
        deviceName: options.deviceName ?? 'weft%d',
        mode: 'tun',
        netns: options.netns,
        offload: false,
        address: options.publicIp ?? '0.0.0.0',
        port: options.listenPort ?? WIREGUARD_PORT,
        socketBufferBytes: options.socketBufferBytes ?? 4 << 20,
      },
      (tun) => {
        tun.setMtu(mtu);
        if (options.nodeAddress6 === undefined && options.network6 === undefined) tun.disableIpv6();
        if (options.nodeAddress !== undefined) tun.addAddress(`${options.nodeAddress}/32`);
        if (options.nodeAddress6 !== undefined) tun.addAddress(`${options.nodeAddress6}/128`);
        tun.up();
        if (options.network !== undefined) tun.addRoute(formatCidr(parseCidr(options.network)));
        if (options.network6 !== undefined) tun.addRoute(formatCidr(parseCidr(options.network6)));
      },
    );
    try {
      return WireguardBackend.overIo(io, options);
    } catch (err) {
      io.socket.close();
      io.device.close();
      throw err;
    }
  }

  /** Runs over given I/O (the device is not configured): simulations and benchmarks. */
  static overIo(io: BackendIo, options: WireguardBackendOptions): WireguardBackend {
    WireguardBackend.check(options);
    const backend = new WireguardBackend(io.device, io.socket, options);
    backend.socket.attachSlab(CONTROL_SLAB, backend.engine.out);
    backend.startPump();
    const tickMs = options.tickMs ?? 100;
    backend.ticker = setInterval(() => backend.engine.tick(), tickMs);
    backend.ticker.unref();
    return backend;
  }

  /** Replaces the peer set: each node's public key, public IP and subnets (see Backend.setNodes). */
  override setNodes(nodes: readonly WireguardNode[]): void {
    super.setNodes(nodes);
  }

  /** Adds a peer, or replaces the one with the same subnet. */
  override addNode(node: WireguardNode): void {
    super.addNode(node);
  }

  /** This node's public key, base64: what its lease publishes. */
  get publicKey(): string {
    return this.engine.publicKeyText;
  }

  /** Peers as `wg show` describes them. */
  peers(): WireguardPeerStatus[] {
    return this.engine.peerStatus();
  }

  /** Drops every session (as a long silence would): the next packet to a peer handshakes anew. */
  expireSessions(): void {
    this.engine.expireSessions();
  }

  protected install(nodes: readonly ParsedNode[]): void {
    const configs: WireguardPeerConfig[] = nodes.map((n) => {
      const input = n.input as WireguardNode;
      const allowedIps = [n.subnet, n.subnet6].filter((s): s is string => s !== undefined);
      if (allowedIps.length === 0)
        throw new WeftError(
          WireguardErrorCode.badPeer,
          `remote node ${n.input.name ?? n.key}: a subnet (or subnet6) is required: it is the peer's AllowedIPs`,
        );
      return {
        publicKey: input.publicKey,
        endpoint: { address: n.input.publicIp, port: n.port ?? this.listenPort },
        allowedIps,
        presharedKey: this.psk,
        persistentKeepaliveSeconds: this.keepaliveSeconds,
        name: n.input.name ?? n.key,
      };
    });
    this.engine.setPeers(configs, this.socket.family);
    if (this.peerMark.length < this.engine.pCurrent.length)
      this.peerMark = new Int32Array(this.engine.pCurrent.length);
  }

  dumpTables(): { routes: RouteDump[] } {
    return {
      routes: this.engine.routes
        .dump()
        .map(({ dst, tag }) => ({ dst, port: this.listenPort, tag })),
    };
  }

  override counters(): WireguardCounterSnapshot {
    const snapshot = super.counters() as WireguardCounterSnapshot;
    const wg = this.engine.counterSnapshot();
    const rest: Record<string, number> = {};
    for (const [name, value] of Object.entries(wg)) {
      if (name.startsWith('drop')) snapshot.drops[name[4].toLowerCase() + name.slice(5)] = value;
      else rest[name] = value;
    }
    snapshot.wireguard = rest;
    return snapshot;
  }

  // ---------------------------------------------------------------- control messages

  private queueControl(
    off: number,
    len: number,
    family: number,
    addr: Uint32Array,
    addrOff: number,
    port: number,
  ): void {
    if (this.controlCount === this.batch) this.flushControl();
    const t = this.toUdp;
    const i = this.udpReplyBase + this.controlCount++;
    t.slabs[i] = CONTROL_SLAB;
    t.offsets[i] = off;
    t.lengths[i] = len;
    t.addrs[i * 4] = addr[addrOff];
    t.addrs[i * 4 + 1] = family === 6 ? addr[addrOff + 1] : 0;
    t.addrs[i * 4 + 2] = family === 6 ? addr[addrOff + 2] : 0;
    t.addrs[i * 4 + 3] = family === 6 ? addr[addrOff + 3] : 0;
    t.ports[i] = port;
    t.gso[i] = 0;
  }

  private flushControl(): void {
    const n = this.controlCount;
    this.controlCount = 0;
    this.sendUdpReplies(n);
  }

  // ---------------------------------------------------------------- hot paths

  /** Device -> underlay: route by destination to a peer, seal in place, one sendmmsg. */
  protected outbound(count: number): number {
    const ring = this.deviceRing;
    const slab = ring.slab;
    const lengths = ring.lengths;
    const stride = ring.stride;
    const headroom = ring.headroom;
    const room = stride - headroom;
    const c = this.counts;
    const e = this.engine;
    const routes = e.routes;
    const now = e.now();
    const reject = e.timers.rejectAfterTimeMs;
    const mtu = e.mtu;
    const ops = this.sealOps;
    const table = this.toUdp;
    const mark = this.peerMark;
    const batchId = ++this.batchId;
    let touched = 0;
    let n = 0;
    let replies = 0;
    for (let i = 0; i < count; i++) {
      const off = i * stride + headroom;
      const len = this.devicePacket(slab, off, lengths[i]) < 0 ? -1 : lengths[i];
      if (len < 0) continue;
      const version = slab[off] >> 4;
      let hop: { port: number } | undefined;
      if (version === 4 && len >= 20) hop = routes.lookup4(ipv4Dst(slab, off));
      else if (version === 6 && len >= 40) hop = routes.lookup6(slab, off + 24);
      else {
        c[Counter.dropUnsupported]++;
        continue;
      }
      if (hop === undefined) {
        // The kernel's WireGuard answers a packet with no peer by ICMP host unreachable.
        c[Counter.dropNoRoute]++;
        if (version === 4)
          replies += this.queueIcmpError(
            off,
            len,
            replies,
            IcmpType.destinationUnreachable,
            IcmpCode.hostUnreachable,
            this.icmpSource4,
          );
        continue;
      }
      const s = hop.port - 1;
      const padded = wireguardPaddedLength(len, mtu);
      if (padded + WG_TRANSPORT_HEADER_BYTES > room || len > mtu) {
        e.counts[WgCounter.dropTooBig]++;
        continue;
      }
      const kp = e.pCurrent[s];
      if (
        kp < 0 ||
        now - e.kpCreated[kp] >= reject ||
        e.kpSendCounter[kp] >= REJECT_AFTER_MESSAGES ||
        e.epFamily[s] === 0
      ) {
        e.stage(s, slab, off, len);
        continue;
      }
      const counter = e.kpSendCounter[kp]++;
      const hdr = off - WG_TRANSPORT_HEADER_BYTES;
      writeTransportHeader(slab, hdr, e.kpRemoteIndex[kp], counter);
      const o = n * SealOp.words;
      ops[o] = off;
      ops[o + 1] = len;
      ops[o + 2] = padded - len;
      ops[o + 3] = hdr;
      ops[o + 4] = kp * 2;
      const total = padded + 2 * WG_TRANSPORT_HEADER_BYTES;
      table.slabs[n] = UdpSlab.deviceRing;
      table.offsets[n] = hdr;
      table.lengths[n] = total;
      const a = s * 4;
      table.addrs[n * 4] = e.epAddr[a];
      table.addrs[n * 4 + 1] = e.epAddr[a + 1];
      table.addrs[n * 4 + 2] = e.epAddr[a + 2];
      table.addrs[n * 4 + 3] = e.epAddr[a + 3];
      table.ports[n] = e.epPort[s];
      table.gso[n] = 0;
      n++;
      e.pTxBytes[s] += total;
      c[Counter.txPackets]++;
      c[Counter.txBytes] += len;
      if (mark[s] !== batchId) {
        mark[s] = batchId;
        this.touched[touched++] = s;
      }
    }
    if (n > 0) {
      sealTransport(slab, slab, e.keys, ops, n);
      n = this.dropUnsealed(n);
    }
    if (touched > 0) e.afterDataSent(this.touched, touched);
    this.sendDeviceReplies(replies);
    return n;
  }

  /** Removes descriptors whose seal failed (OpenSSL refused: never seen, but never sent as garbage). */
  private dropUnsealed(n: number): number {
    const ops = this.sealOps;
    let bad = 0;
    for (let k = 0; k < n; k++) if (ops[k * SealOp.words + SealOp.result] < 0) bad++;
    if (bad === 0) return n;
    const t = this.toUdp;
    let w = 0;
    for (let k = 0; k < n; k++) {
      if (ops[k * SealOp.words + SealOp.result] < 0) continue;
      t.slabs[w] = t.slabs[k];
      t.offsets[w] = t.offsets[k];
      t.lengths[w] = t.lengths[k];
      for (let q = 0; q < 4; q++) t.addrs[w * 4 + q] = t.addrs[k * 4 + q];
      t.ports[w] = t.ports[k];
      t.gso[w] = 0;
      w++;
    }
    this.counts[Counter.dropSendError] += bad;
    return w;
  }

  /** Underlay -> device: transport messages opened in one batch; handshakes queued. */
  protected inbound(count: number): number {
    const ring = this.udpRing;
    const slab = ring.slab;
    const lengths = ring.lengths;
    const stride = ring.stride;
    const headroom = ring.headroom;
    const c = this.counts;
    const e = this.engine;
    const wg = e.counts;
    const now = e.now();
    const reject = e.timers.rejectAfterTimeMs;
    const ops = this.openOps;
    let m = 0;
    for (let i = 0; i < count; i++) {
      const len = lengths[i];
      const off = i * stride + headroom;
      const type = len > 0 ? wireguardMessageType(slab, off, len) : -1;
      if (type === WireguardType.transport) {
        // The receiver index as int32 (never a boxed u32: see IndexTable).
        const kp = e.index.lookup(
          slab[off + 4] | (slab[off + 5] << 8) | (slab[off + 6] << 16) | (slab[off + 7] << 24),
        );
        if (kp === NO_INDEX || kp < 0) {
          wg[WgCounter.dropUnknownIndex]++;
          continue;
        }
        if (now - e.kpCreated[kp] >= reject) {
          wg[WgCounter.dropExpiredKey]++;
          continue;
        }
        const counter = wireguardCounter(slab, off);
        if (counter < 0 || !e.replay.wouldAccept(kp, counter)) {
          wg[WgCounter.dropReplay]++;
          continue;
        }
        const o = m * OpenOp.words;
        ops[o] = off;
        ops[o + 1] = len;
        ops[o + 2] = kp * 2 + 1;
        this.opSlot[m] = i;
        this.opKp[m] = kp;
        this.opCounter[m] = counter;
        m++;
      } else if (type > 0) {
        e.enqueueHandshake(slab, off, len, ring.families[i], ring.addrs, i * 4, ring.ports[i]);
      } else if (type === 0) {
        c[Counter.dropBadHeader]++;
      } else {
        c[Counter.dropTruncated]++;
      }
    }
    if (m === 0) return 0;
    openTransport(slab, e.keys, ops, m);
    const table = this.toDevice;
    const mark = this.peerMark;
    const batchId = ++this.batchId;
    const routes = e.routes;
    let touched = 0;
    let n = 0;
    for (let j = 0; j < m; j++) {
      const plain = ops[j * OpenOp.words + OpenOp.result];
      if (plain < 0) {
        wg[WgCounter.dropDecrypt]++;
        continue;
      }
      const kp = this.opKp[j];
      // Accepted only now that it authenticated: a forged counter cannot move the window.
      if (!e.replay.accept(kp, this.opCounter[j])) {
        wg[WgCounter.dropReplay]++;
        continue;
      }
      const s = e.kpPeer[kp];
      const i = this.opSlot[j];
      if (e.pNext[s] === kp) {
        e.setEndpointTo(s, ring.families[i], ring.addrs, i * 4, ring.ports[i]);
        e.receivedWithKeypair(s, kp);
      }
      let t: number;
      if (mark[s] !== batchId) {
        mark[s] = batchId;
        t = touched++;
        this.touched[t] = s;
        this.touchedData[t] = 0;
      } else {
        t = 0;
        while (this.touched[t] !== s) t++;
      }
      this.touchedSlot[t] = i;
      e.pRxBytes[s] += lengths[i];
      if (plain === 0) {
        wg[WgCounter.keepalivesReceived]++;
        continue;
      }
      this.touchedData[t] = 1;
      const p = i * stride + headroom + WG_TRANSPORT_HEADER_BYTES;
      const version = slab[p] >> 4;
      let total: number;
      let hop: { port: number } | undefined;
      if (version === 4 && plain >= 20) {
        total = ipv4TotalLength(slab, p);
        if (total < 20 || total > plain) {
          c[Counter.dropBadHeader]++;
          continue;
        }
        hop = routes.lookup4(ipv4Src(slab, p));
      } else if (version === 6 && plain >= 40) {
        total = 40 + ipv6PayloadLength(slab, p);
        if (total > plain) {
          c[Counter.dropBadHeader]++;
          continue;
        }
        hop = routes.lookup6(slab, p + 8);
      } else {
        c[Counter.dropBadHeader]++;
        continue;
      }
      // Cryptokey routing: the inner source must be one of this peer's AllowedIPs.
      if (hop === undefined || hop.port !== s + 1) {
        wg[WgCounter.dropNotAllowedSource]++;
        continue;
      }
      table.setLocal(n++, DeviceSlab.udpRing, p, total);
      c[Counter.rxPackets]++;
      c[Counter.rxBytes] += total;
    }
    for (let t = 0; t < touched; t++) {
      const s = this.touched[t];
      const i = this.touchedSlot[t];
      e.setEndpointTo(s, ring.families[i], ring.addrs, i * 4, ring.ports[i]);
    }
    if (touched > 0) e.afterReceived(this.touched, this.touchedData, touched);
    return n;
  }

  override close(): void {
    if (this.ticker) clearInterval(this.ticker);
    this.ticker = undefined;
    this.engine.close();
    super.close();
  }
}
