import { formatIp, parseIp, WeftError } from '@weft/core';
import { type FdbDump, Ipv6Map, type NeighborDump, type RouteDump } from '@weft/fdb';

import { DataplaneErrorCode, type ParsedNode, parseNode, type RemoteNode } from './nodes.js';
import { type PacketIo, Pump, type PumpOptions, type UdpIo } from './pump.js';

/** The device side of a backend: @weft/tun's TunDevice, or a stand-in with the same shape. */
export interface DeviceIo {
  readonly name: string;
  readonly mtu: number;
  readonly queues: readonly PacketIo[];
  close(): void;
}

/** What a backend runs over; `open` makes real ones, `overIo` takes any. */
export interface BackendIo {
  device: DeviceIo;
  socket: UdpIo;
}

export type BackendType = 'udp' | 'vxlan';

/** What every backend shares: the options a node agent sets. */
export interface CommonBackendOptions extends PumpOptions {
  /** The device name or pattern (default `weft%d`). */
  deviceName?: string;
  /** The underlay address to bind (default 0.0.0.0); an IPv6 address makes an IPv6 underlay. */
  publicIp?: string;
  /** The underlay MTU the device's MTU is derived from (default 1500). */
  underlayMtu?: number;
  /** Create the device and socket in this network namespace (a name under /run/netns, or a path). */
  netns?: string;
  /**
   * Drop (and count) encapsulated packets whose underlay source is not a known remote node.
   * The kernel and flannel accept them from anyone; default true.
   */
  dropUnknownSources?: boolean;
  /** UDP socket buffer sizes (default 4 MiB each). */
  socketBufferBytes?: number;
}

/**
 * A running backend: the pump plus the set of remote nodes. A node agent drives it with
 * setNodes / addNode / removeNode from lease events and reads counters; close() tears it down.
 */
export abstract class Backend extends Pump {
  abstract readonly type: BackendType;
  readonly tun: DeviceIo;
  protected nodeMap = new Map<string, ParsedNode>();
  protected knownSources4 = new Set<number>();
  protected knownSources6 = new Ipv6Map<true>();
  protected readonly dropUnknownSources: boolean;
  private readonly source6 = new Uint8Array(16);
  private closed = false;

  protected constructor(tun: DeviceIo, socket: UdpIo, options: CommonBackendOptions) {
    super(tun.queues[0], socket, options);
    this.tun = tun;
    this.dropUnknownSources = options.dropUnknownSources ?? true;
  }

  get deviceName(): string {
    return this.tun.name;
  }

  get mtu(): number {
    return this.tun.mtu;
  }

  /** The local UDP port. */
  get port(): number {
    return this.socket.port;
  }

  /** Which node fields this backend requires. */
  protected abstract readonly needs: { subnet: boolean; vtepMac: boolean };

  /** Installs the whole node set into the backend's tables (a snapshot: idempotent, atomic). */
  protected abstract install(nodes: readonly ParsedNode[]): void;

  /** Addresses besides the nodes' own that may send to us (e.g. default FDB destinations). */
  protected extraSources(): readonly string[] {
    return [];
  }

  /**
   * Replaces the set of remote nodes. Every node is validated before anything changes: a bad one
   * throws a WeftError naming it and leaves the backend as it was.
   */
  setNodes(nodes: readonly RemoteNode[]): void {
    this.ensureOpen();
    const parsed = nodes.map((n) => parseNode(n, this.needs));
    const next = new Map<string, ParsedNode>();
    for (const p of parsed) next.set(p.key, p);
    this.install([...next.values()]);
    this.nodeMap = next;
    this.rebuildSources();
  }

  /** Adds a node, or replaces the node with the same subnet (or public IP when it has none). */
  addNode(node: RemoteNode): void {
    const parsed = parseNode(node, this.needs);
    const others = [...this.nodeMap.values()]
      .filter((n) => n.key !== parsed.key)
      .map((n) => n.input);
    this.setNodes([...others, node]);
  }

  /** Removes the node with this subnet (or public IP); removing an unknown node does nothing. */
  removeNode(key: string): boolean {
    const found = [...this.nodeMap.values()].find(
      (n) => n.key === key || n.subnet === key || formatIp(n.publicIp) === key,
    );
    if (!found) return false;
    this.setNodes([...this.nodeMap.values()].filter((n) => n !== found).map((n) => n.input));
    return true;
  }

  nodes(): RemoteNode[] {
    return [...this.nodeMap.values()].map((n) => ({ ...n.input }));
  }

  protected rebuildSources(): void {
    const v4 = new Set<number>();
    const v6 = new Ipv6Map<true>();
    const addresses = [
      ...[...this.nodeMap.values()].map((n) => formatIp(n.publicIp)),
      ...this.extraSources(),
    ];
    for (const text of addresses) {
      const ip = parseIp(text);
      if (ip.family === 4) v4.add(ip.address);
      else v6.set(ip.address, true);
    }
    this.knownSources4 = v4;
    this.knownSources6 = v6;
  }

  /** Hot path: whether UDP ring slot i came from a known remote node. */
  protected knownSource(i: number): boolean {
    const ring = this.udpRing;
    if (ring.families[i] === 4) return this.knownSources4.has(ring.addrs[i * 4]);
    const b = this.source6;
    for (let w = 0; w < 4; w++) {
      const word = ring.addrs[i * 4 + w];
      b[w * 4] = word >>> 24;
      b[w * 4 + 1] = word >>> 16;
      b[w * 4 + 2] = word >>> 8;
      b[w * 4 + 3] = word;
    }
    return this.knownSources6.get(b, 0) !== undefined;
  }

  counters() {
    return this.counterSnapshot();
  }

  /** The forwarding tables as plain values, for status output. */
  abstract dumpTables(): { routes: RouteDump[]; neighbors?: NeighborDump[]; fdb?: FdbDump[] };

  protected ensureOpen(): void {
    if (this.closed)
      throw new WeftError(
        DataplaneErrorCode.closed,
        `the ${this.type} backend on ${this.tun.name} is closed`,
      );
  }

  /** Stops the pump, closes the socket and removes the device. Safe to call twice. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.stopPump();
    this.tun.close();
  }
}
