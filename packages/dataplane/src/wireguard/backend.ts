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
import { type Segmented, segmentTcp4 } from '../offload.js';
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

/** Options of {@link WireguardBackend.open}. */
export interface WireguardBackendOptions extends CommonBackendOptions {
  /** This node's private key (base64, as `wg genkey` prints, or 32 bytes). */
  privateKey: string | Uint8Array;
  /** This node's overlay address, put on the device as a /32 (flannel: the lease's first address). */
  nodeAddress?: string;
  /** And its IPv6 overlay address, as a /128. */
  nodeAddress6?: string;
  /** The cluster networks routed into the device (flannel: the whole Network and IPv6Network). */
  network?: string;
  /** The IPv6 cluster network routed into the device. */
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
  /** Where the engine's status and errors go (default: nowhere). */
  log?: (message: string) => void;
}

/** The slab index the engine's own messages are sent from. */
const CONTROL_SLAB = 3;
/** The most segments one TSO super-packet is cut into (64 KiB at an MSS of 536 is 123). */
const SEGMENT_OPS = 160;

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
  /** The send descriptor each seal op fills. */
  private readonly opDesc: Int32Array;
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
  /** Offloads: a TSO super-packet is cut here before its segments are sealed into txStaging. */
  private readonly segTemp: Buffer;
  private readonly segOps = new Int32Array(SEGMENT_OPS * SealOp.words);
  private readonly wgSegmented: Segmented = { count: 0, segmentBytes: 0, totalBytes: 0 };

  private constructor(tun: DeviceIo, socket: UdpIo, options: WireguardBackendOptions) {
    super(tun, socket, options);
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
    this.opDesc = new Int32Array(this.batch);
    // With UDP GRO one slot holds many datagrams: room for 64 messages a slot.
    const opens = this.offload ? this.batch * 64 : this.batch;
    this.openOps = new Int32Array(opens * OpenOp.words);
    this.opSlot = new Int32Array(opens);
    this.opKp = new Int32Array(opens);
    this.opCounter = new Float64Array(opens);
    this.segTemp = Buffer.allocUnsafeSlow(this.offload ? 72 * 1024 : 0);
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
    if ((options.workers ?? 1) > 1)
      bad('the wireguard backend runs one pump (its sessions are shared state): use workers 1');
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
        offload: options.offload ?? true,
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
      return WireguardBackend.overIo(io, { ...options, offload: io.offload });
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

  /** As {@link Backend.counters}, with the engine's drops among `drops` and the rest under `wireguard`. */
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
    const h = this.deviceHeaderBytes;
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
    let sealed = 0;
    let replies = 0;
    this.txPos = 0;
    for (let i = 0; i < count; i++) {
      const base = i * stride + headroom;
      const gso = this.devicePacket(slab, base, lengths[i]);
      if (gso < 0) continue;
      const off = base + h;
      const len = lengths[i] - h;
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
      const kp = e.pCurrent[s];
      const live =
        kp >= 0 &&
        now - e.kpCreated[kp] < reject &&
        e.kpSendCounter[kp] < REJECT_AFTER_MESSAGES &&
        e.epFamily[s] !== 0;
      if (gso !== 0) {
        // A TSO super-packet: cut into segments, each sealed into its own datagram, one GSO send.
        n = this.queueSealedSegments(slab, off, len, s, live ? kp : -1, n);
      } else {
        const padded = wireguardPaddedLength(len, mtu);
        if (padded + WG_TRANSPORT_HEADER_BYTES + h > room || len > mtu) {
          e.counts[WgCounter.dropTooBig]++;
          continue;
        }
        if (!live) {
          e.stage(s, slab, off, len);
          continue;
        }
        const counter = e.kpSendCounter[kp]++;
        const hdr = off - WG_TRANSPORT_HEADER_BYTES;
        writeTransportHeader(slab, hdr, e.kpRemoteIndex[kp], counter);
        const o = sealed * SealOp.words;
        ops[o] = off;
        ops[o + 1] = len;
        ops[o + 2] = padded - len;
        ops[o + 3] = hdr;
        ops[o + 4] = kp * 2;
        this.opDesc[sealed] = n;
        sealed++;
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
      }
      if (mark[s] !== batchId) {
        mark[s] = batchId;
        this.touched[touched++] = s;
      }
    }
    if (sealed > 0) {
      sealTransport(slab, slab, e.keys, ops, sealed);
      n = this.dropUnsealed(sealed, n);
    }
    if (touched > 0) e.afterDataSent(this.touched, touched);
    this.sendDeviceReplies(replies);
    return n;
  }

  /**
   * Offloads: cuts the super-packet at slab[off] into segments (segTemp), seals each into its own
   * transport message in txStaging (all but the last the same size), and queues them as UDP GSO
   * sends. Without a live session (`kp` -1) the segments wait, each, for the handshake.
   */
  private queueSealedSegments(
    slab: Buffer,
    off: number,
    len: number,
    s: number,
    kp: number,
    n: number,
  ): number {
    const e = this.engine;
    const r = segmentTcp4(
      slab,
      off,
      len,
      this.gsoSize,
      this.segTemp,
      0,
      0,
      false,
      this.wgSegmented,
    );
    if (r === undefined || r.count > SEGMENT_OPS) {
      this.counts[Counter.dropUnsupported]++;
      return n;
    }
    const full = r.segmentBytes;
    const lastBytes = r.totalBytes - (r.count - 1) * full;
    if (kp < 0) {
      for (let k = 0; k < r.count; k++)
        e.stage(s, this.segTemp, k * full, k === r.count - 1 ? lastBytes : full);
      return n;
    }
    const mtu = e.mtu;
    const padded = wireguardPaddedLength(full, mtu);
    const paddedLast = wireguardPaddedLength(lastBytes, mtu);
    const wgStride = padded + 2 * WG_TRANSPORT_HEADER_BYTES;
    const bytes = (r.count - 1) * wgStride + paddedLast + 2 * WG_TRANSPORT_HEADER_BYTES;
    if (full > mtu || this.txPos + bytes > this.txStaging.length) {
      e.counts[WgCounter.dropTooBig] += r.count;
      return n;
    }
    const ops = this.segOps;
    const out = this.txStaging;
    const remote = e.kpRemoteIndex[kp];
    for (let k = 0; k < r.count; k++) {
      const dst = this.txPos + k * wgStride;
      const plain = k === r.count - 1 ? lastBytes : full;
      writeTransportHeader(out, dst, remote, e.kpSendCounter[kp]++);
      const o = k * SealOp.words;
      ops[o] = k * full;
      ops[o + 1] = plain;
      ops[o + 2] = (k === r.count - 1 ? paddedLast : padded) - plain;
      ops[o + 3] = dst;
      ops[o + 4] = kp * 2;
    }
    sealTransport(this.segTemp, out, e.keys, ops, r.count);
    // A UDP datagram is at most 64 KiB before the kernel cuts it: some super-packets take two sends.
    const perSend = Math.max(1, Math.floor(65_000 / wgStride));
    const table = this.toUdp;
    const a = s * 4;
    for (let k = 0; k < r.count; k += perSend) {
      if (n >= this.udpReplyBase) {
        this.counts[Counter.dropSendError] += r.count - k;
        break;
      }
      const segs = Math.min(perSend, r.count - k);
      const start = this.txPos + k * wgStride;
      table.slabs[n] = UdpSlab.staging;
      table.offsets[n] = start;
      table.lengths[n] = k + segs === r.count ? bytes - k * wgStride : segs * wgStride;
      table.addrs[n * 4] = e.epAddr[a];
      table.addrs[n * 4 + 1] = e.epAddr[a + 1];
      table.addrs[n * 4 + 2] = e.epAddr[a + 2];
      table.addrs[n * 4 + 3] = e.epAddr[a + 3];
      table.ports[n] = e.epPort[s];
      table.gso[n] = segs > 1 ? wgStride : 0;
      n++;
    }
    this.txPos += (bytes + 15) & ~15;
    e.pTxBytes[s] += bytes;
    this.counts[Counter.txPackets] += r.count;
    this.counts[Counter.txBytes] += r.totalBytes;
    return n;
  }

  /** Removes descriptors whose seal failed (OpenSSL refused: never seen, but never sent as garbage). */
  private dropUnsealed(sealed: number, n: number): number {
    const ops = this.sealOps;
    const t = this.toUdp;
    let bad = 0;
    for (let k = 0; k < sealed; k++)
      if (ops[k * SealOp.words + SealOp.result] < 0) {
        t.lengths[this.opDesc[k]] = -1;
        bad++;
      }
    if (bad === 0) return n;
    let w = 0;
    for (let k = 0; k < n; k++) {
      if (t.lengths[k] < 0) continue;
      t.slabs[w] = t.slabs[k];
      t.offsets[w] = t.offsets[k];
      t.lengths[w] = t.lengths[k];
      for (let q = 0; q < 4; q++) t.addrs[w * 4 + q] = t.addrs[k * 4 + q];
      t.ports[w] = t.ports[k];
      t.gso[w] = t.gso[k];
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
    const capacity = this.opKp.length;
    let m = 0;
    for (let i = 0; i < count; i++) {
      const len = lengths[i];
      if (len <= 0) {
        c[Counter.dropTruncated]++;
        continue;
      }
      const base = i * stride + headroom;
      // With UDP GRO one slot may hold several datagrams of ring.gso[i] bytes each.
      const step = ring.gso[i] > 0 ? ring.gso[i] : len;
      for (let at = 0; at < len; at += step) {
        const off = base + at;
        const dlen = Math.min(step, len - at);
        const type = wireguardMessageType(slab, off, dlen);
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
          if (m === capacity) {
            c[Counter.dropSendError]++;
            continue;
          }
          const o = m * OpenOp.words;
          ops[o] = off;
          ops[o + 1] = dlen;
          ops[o + 2] = kp * 2 + 1;
          this.opSlot[m] = i;
          this.opKp[m] = kp;
          this.opCounter[m] = counter;
          m++;
        } else if (type > 0) {
          e.enqueueHandshake(slab, off, dlen, ring.families[i], ring.addrs, i * 4, ring.ports[i]);
        } else if (type === 0) {
          c[Counter.dropBadHeader]++;
        } else {
          c[Counter.dropTruncated]++;
        }
      }
    }
    if (m === 0) return 0;
    openTransport(slab, e.keys, ops, m);
    const table = this.toDevice;
    const coalescer = this.coalescer;
    const mark = this.peerMark;
    const batchId = ++this.batchId;
    const routes = e.routes;
    let touched = 0;
    let n = 0;
    this.devOut = 0;
    coalescer?.reset();
    for (let j = 0; j < m; j++) {
      const o = j * OpenOp.words;
      const plain = ops[o + OpenOp.result];
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
      e.pRxBytes[s] += ops[o + 1];
      if (plain === 0) {
        wg[WgCounter.keepalivesReceived]++;
        continue;
      }
      this.touchedData[t] = 1;
      const p = ops[o] + WG_TRANSPORT_HEADER_BYTES;
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
      if (coalescer) {
        const ok =
          version === 4 ? coalescer.push(slab, p, total) : coalescer.passThrough(slab, p, total);
        if (!ok) {
          c[Counter.dropSendError]++;
          continue;
        }
      } else {
        table.setLocal(n++, DeviceSlab.udpRing, p, total);
      }
      c[Counter.rxPackets]++;
      c[Counter.rxBytes] += total;
    }
    for (let t = 0; t < touched; t++) {
      const s = this.touched[t];
      const i = this.touchedSlot[t];
      e.setEndpointTo(s, ring.families[i], ring.addrs, i * 4, ring.ports[i]);
    }
    if (touched > 0) e.afterReceived(this.touched, this.touchedData, touched);
    if (coalescer) {
      coalescer.flush();
      return this.devOut;
    }
    return n;
  }

  override close(): void {
    if (this.ticker) clearInterval(this.ticker);
    this.ticker = undefined;
    this.engine.close();
    super.close();
  }
}
