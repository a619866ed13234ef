import { type Cidr, formatCidr, formatIp, type IpAddress, parseCidr, parseIp } from '@weft/core';
import { FdbErrorCode, fdbError, validateEach } from './errors.js';
import { type ChangeEvent, Emitter, type Listener } from './events.js';
import { Ipv6Map } from './ipv6-key.js';

/** A route as the control plane gives it: strings at the edge. */
export interface RouteInput {
  /** Destination network, e.g. `10.244.2.0/24`; host bits must be clear. */
  dst: string;
  /** Gateway inside the overlay, e.g. the remote VTEP address `10.244.2.0`; same family as dst. */
  via?: string;
  /** The underlay address to send to (a remote node's public IP); either family. */
  underlay?: string;
  /** The underlay UDP port; 0 means the backend's default. */
  port?: number;
  /** A free label shown in dumps, e.g. the remote node's name or lease key. */
  tag?: string;
}

/** What a lookup returns: built once per route, read per packet. */
export interface NextHop {
  readonly dst: Cidr;
  readonly gateway: IpAddress | undefined;
  /** The gateway as a number for IPv4 routes, -1 when there is none. */
  readonly gateway4: number;
  readonly underlay: IpAddress | undefined;
  /** The underlay address as a number when it is IPv4, -1 otherwise. */
  readonly underlay4: number;
  readonly port: number;
  readonly tag: string | undefined;
}

/** A route as a plain value, for status output and tests. */
export interface RouteDump {
  dst: string;
  via?: string;
  underlay?: string;
  port: number;
  tag?: string;
}

/** Changes applied together by {@link RouteTable.applyDiff}: removals first. */
export interface RouteDiff {
  add?: readonly RouteInput[];
  /** Destinations to remove, e.g. `10.244.2.0/24`. Removing an absent route is not an error. */
  remove?: readonly string[];
}

function toNextHop(input: RouteInput): NextHop {
  const dst = parseCidr(input.dst);
  const gateway = input.via === undefined ? undefined : parseIp(input.via);
  if (gateway && gateway.family !== dst.family) {
    throw fdbError(
      FdbErrorCode.familyMismatch,
      `gateway ${input.via} is IPv${gateway.family} but the route to ${input.dst} is IPv${dst.family}`,
    );
  }
  const underlay = input.underlay === undefined ? undefined : parseIp(input.underlay);
  const port = input.port ?? 0;
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw fdbError(FdbErrorCode.badPort, `port ${input.port} is not a UDP port (0..65535)`);
  }
  return {
    dst,
    gateway,
    gateway4: gateway?.family === 4 ? gateway.address : -1,
    underlay,
    underlay4: underlay?.family === 4 ? underlay.address : -1,
    port,
    tag: input.tag,
  };
}

function dumpOf(hop: NextHop): RouteDump {
  const out: RouteDump = { dst: formatCidr(hop.dst), port: hop.port };
  if (hop.gateway) out.via = formatIp(hop.gateway);
  if (hop.underlay) out.underlay = formatIp(hop.underlay);
  if (hop.tag !== undefined) out.tag = hop.tag;
  return out;
}

function sameRoute(a: NextHop, b: NextHop): boolean {
  return JSON.stringify(dumpOf(a)) === JSON.stringify(dumpOf(b));
}

/**
 * IPv4 longest-prefix match on a 16-8-8 multibit trie in typed arrays (controlled prefix
 * expansion): a lookup is at most three array reads whatever the number of routes. Entries hold
 * a next-hop index + 1, 0 for no route, or the bitwise complement of a child chunk's index.
 * Built whole from the route list, so an update swaps in a finished table: a reader never sees a
 * half-applied change.
 */
class Ipv4Lpm {
  private readonly l1 = new Int32Array(1 << 16);
  private readonly l2: Int32Array;
  private readonly l3: Int32Array;
  private chunks2 = 0;
  private chunks3 = 0;

  constructor(readonly hops: readonly NextHop[]) {
    const v4 = hops
      .map((hop, i) => ({ hop, value: i + 1 }))
      .filter((r) => r.hop.dst.family === 4)
      .sort((a, b) => a.hop.dst.prefixLength - b.hop.dst.prefixLength);
    const need2 = new Set<number>();
    const need3 = new Set<number>();
    for (const { hop } of v4) {
      const p = hop.dst.address as number;
      if (hop.dst.prefixLength > 16) need2.add(p >>> 16);
      if (hop.dst.prefixLength > 24) need3.add(p >>> 8);
    }
    this.l2 = new Int32Array(need2.size << 8);
    this.l3 = new Int32Array(need3.size << 8);
    // Shorter prefixes first, so a longer one paints over them and a chunk created for a longer
    // one inherits what the shorter ones painted.
    for (const { hop, value } of v4)
      this.paint(hop.dst.address as number, hop.dst.prefixLength, value);
  }

  private paint(p: number, len: number, value: number): void {
    if (len <= 16) {
      const start = p >>> 16;
      this.l1.fill(value, start, start + (1 << (16 - len)));
      return;
    }
    const i1 = p >>> 16;
    let e1 = this.l1[i1];
    if (e1 >= 0) {
      const chunk = this.chunks2++;
      this.l2.fill(e1, chunk << 8, (chunk + 1) << 8);
      e1 = ~chunk;
      this.l1[i1] = e1;
    }
    const base2 = ~e1 << 8;
    if (len <= 24) {
      const start = base2 | ((p >>> 8) & 0xff);
      this.l2.fill(value, start, start + (1 << (24 - len)));
      return;
    }
    const i2 = base2 | ((p >>> 8) & 0xff);
    let e2 = this.l2[i2];
    if (e2 >= 0) {
      const chunk = this.chunks3++;
      this.l3.fill(e2, chunk << 8, (chunk + 1) << 8);
      e2 = ~chunk;
      this.l2[i2] = e2;
    }
    const start = (~e2 << 8) | (p & 0xff);
    this.l3.fill(value, start, start + (1 << (32 - len)));
  }

  lookup(ip: number): NextHop | undefined {
    let v = this.l1[ip >>> 16];
    if (v < 0) {
      v = this.l2[(~v << 8) | ((ip >>> 8) & 0xff)];
      if (v < 0) v = this.l3[(~v << 8) | (ip & 0xff)];
    }
    return v === 0 ? undefined : this.hops[v - 1];
  }
}

/**
 * IPv6 longest-prefix match: one hash table per prefix length in use, probed from the longest.
 * The bound is the number of distinct prefix lengths (a handful in an overlay), not the routes.
 */
class Ipv6Lpm {
  private readonly lengths: number[];
  private readonly tables: Ipv6Map<NextHop>[];

  constructor(hops: readonly NextHop[]) {
    const byLength = new Map<number, Ipv6Map<NextHop>>();
    for (const hop of hops) {
      if (hop.dst.family !== 6) continue;
      let table = byLength.get(hop.dst.prefixLength);
      if (!table) {
        table = new Ipv6Map<NextHop>(hop.dst.prefixLength);
        byLength.set(hop.dst.prefixLength, table);
      }
      table.set(hop.dst.address, hop);
    }
    this.lengths = [...byLength.keys()].sort((a, b) => b - a);
    this.tables = this.lengths.map((l) => byLength.get(l)!);
  }

  lookup(buf: Uint8Array, off: number): NextHop | undefined {
    for (let i = 0; i < this.tables.length; i++) {
      const hop = this.tables[i].get(buf, off);
      if (hop !== undefined) return hop;
    }
    return undefined;
  }
}

const EMPTY = new Ipv4Lpm([]);
const EMPTY6 = new Ipv6Lpm([]);

/** Routes: prefix -> next hop, longest-prefix match for IPv4 and IPv6. */
export class RouteTable {
  private byDst = new Map<string, NextHop>();
  private v4: Ipv4Lpm = EMPTY;
  private v6: Ipv6Lpm = EMPTY6;
  private readonly emitter = new Emitter<RouteDump>();

  get size(): number {
    return this.byDst.size;
  }

  /**
   * Hot path: the next hop for an IPv4 destination (host order, as an unsigned or a signed 32-bit
   * number: pass `ip | 0`, which no call boxes), or undefined.
   */
  lookup4(dst: number): NextHop | undefined {
    return this.v4.lookup(dst);
  }

  /** Hot path: the next hop for the IPv6 destination stored at buf[off..off+16). */
  lookup6(buf: Uint8Array, off = 0): NextHop | undefined {
    return this.v6.lookup(buf, off);
  }

  /** Checked lookup by text, for tools and tests. */
  lookup(dst: string): RouteDump | undefined {
    const ip = parseIp(dst);
    const hop = ip.family === 4 ? this.lookup4(ip.address) : this.lookup6(ip.address, 0);
    return hop && dumpOf(hop);
  }

  /** Calls `listener` with every change; returns the function that stops it. */
  onChange(listener: Listener<RouteDump>): () => void {
    return this.emitter.on(listener);
  }

  /** Replaces every route with `routes`. Applying the same snapshot twice changes nothing. */
  applySnapshot(routes: readonly RouteInput[]): ChangeEvent<RouteDump>[] {
    const next = this.validate(routes);
    return this.commit(next);
  }

  /** Removes, then adds (an add replaces a route with the same destination). All or nothing. */
  applyDiff(diff: RouteDiff): ChangeEvent<RouteDump>[] {
    const removes = validateEach(
      'route remove',
      diff.remove ?? [],
      (d) => d,
      (d) => formatCidr(parseCidr(d)),
    );
    const adds = this.validate(diff.add ?? []);
    const next = new Map(this.byDst);
    for (const dst of removes) next.delete(dst);
    for (const [dst, hop] of adds) next.set(dst, hop);
    return this.commit(next);
  }

  /** Adds a route, replacing one to the same destination. */
  add(route: RouteInput): ChangeEvent<RouteDump>[] {
    return this.applyDiff({ add: [route] });
  }

  /** Removes the route to `dst` (e.g. `10.244.2.0/24`; an absent one is not an error). */
  remove(dst: string): ChangeEvent<RouteDump>[] {
    return this.applyDiff({ remove: [dst] });
  }

  /** Every route, as text. */
  dump(): RouteDump[] {
    return [...this.byDst.values()].map(dumpOf);
  }

  private validate(routes: readonly RouteInput[]): Map<string, NextHop> {
    const hops = validateEach('route', routes, (r) => r.dst, toNextHop);
    const out = new Map<string, NextHop>();
    for (const hop of hops) {
      const key = formatCidr(hop.dst);
      const other = out.get(key);
      if (other && !sameRoute(other, hop)) {
        throw fdbError(
          FdbErrorCode.duplicate,
          `two different routes to ${key} in one batch; nothing in this batch was applied`,
        );
      }
      out.set(key, hop);
    }
    return out;
  }

  private commit(next: Map<string, NextHop>): ChangeEvent<RouteDump>[] {
    const events: ChangeEvent<RouteDump>[] = [];
    const merged = new Map<string, NextHop>();
    for (const [dst, hop] of next) {
      const old = this.byDst.get(dst);
      if (!old) events.push({ kind: 'added', entry: dumpOf(hop) });
      else if (!sameRoute(old, hop))
        events.push({ kind: 'changed', entry: dumpOf(hop), previous: dumpOf(old) });
      // Keep the old object when nothing changed, so references held by readers stay valid.
      merged.set(dst, old && sameRoute(old, hop) ? old : hop);
    }
    for (const [dst, old] of this.byDst)
      if (!next.has(dst)) events.push({ kind: 'removed', entry: dumpOf(old) });
    if (events.length === 0) return events;
    const hops = [...merged.values()];
    const v4 = new Ipv4Lpm(hops);
    const v6 = new Ipv6Lpm(hops);
    // The swap: readers between batches see the old tables or the new, never a mix.
    this.byDst = merged;
    this.v4 = v4;
    this.v6 = v6;
    this.emitter.emit(events);
    return events;
  }
}
