import { formatIp, formatMac, type IpAddress, parseIp, parseMac } from '@weft/core';
import { checkOption, FdbErrorCode, fdbError, validateEach } from './errors.js';
import { type ChangeEvent, Emitter, type Listener } from './events.js';
import { Ipv6Map } from './ipv6-key.js';
import { NumberMap } from './number-map.js';

/**
 * Neighbor states, after the kernel's NUD states: `permanent` never ages (what flannel installs
 * for each remote VTEP); `reachable` was confirmed recently and becomes `stale` after
 * `reachableMs`; a stale entry is still used, as the kernel uses one while it re-probes.
 */
export type NeighborState = 'permanent' | 'reachable' | 'stale';

/** A neighbor entry as `ip neigh add` takes it: an address and the MAC it resolves to. */
export interface NeighborInput {
  /** The IPv4 or IPv6 address. */
  ip: string;
  /** Its MAC. */
  mac: string;
  /** Default `permanent`. */
  state?: 'permanent' | 'reachable';
  /** Answer ARP (and ND) requests for this address with this MAC: an address we own or proxy. */
  proxy?: boolean;
}

/** A neighbor entry as the table holds it (numbers, for the hot path). */
export interface NeighborEntry {
  /** The address. */
  readonly ip: IpAddress;
  /** Its MAC, as a 48-bit number. */
  mac: number;
  /** Configured permanent: never ages. */
  permanent: boolean;
  /** Answer ARP and ND requests for this address with this MAC. */
  proxy: boolean;
  /** Learned from traffic rather than configured. */
  learned: boolean;
  /** When the entry was last confirmed (the table's clock, milliseconds). */
  confirmedMs: number;
}

/** A neighbor entry as text, the way `ip neigh show` lists it. */
export interface NeighborDump {
  ip: string;
  mac: string;
  state: NeighborState;
  proxy: boolean;
  learned: boolean;
}

/** Changes applied together by {@link NeighborTable.applyDiff}: removals first. */
export interface NeighborDiff {
  add?: readonly NeighborInput[];
  /** Addresses to remove. */
  remove?: readonly string[];
}

/** Options of a new {@link NeighborTable}. */
export interface NeighborTableOptions {
  /** How long a confirmed entry stays reachable (the kernel's base_reachable_time, 30 s). */
  reachableMs?: number;
  /**
   * The most learned entries kept (default 4096, as the FDB); beyond it the least recently
   * confirmed is evicted and counted in `overflows`. Configured entries do not count.
   */
  maxLearned?: number;
  /** `expire()` removes learned entries unconfirmed for this long (default 300 s, as the FDB). */
  ageingMs?: number;
  /** The clock, in milliseconds (default `Date.now`). */
  now?: () => number;
}

/** A learned entry's place in the eviction order moves at most this often (as the FDB's). */
const LRU_REFRESH_MS = 1000;

function keyOf(ip: IpAddress): string {
  return formatIp(ip);
}

/** Neighbors: IPv4/IPv6 address -> MAC, with states; answers "do we reply to ARP for this IP". */
export class NeighborTable {
  private readonly v4 = new NumberMap<NeighborEntry>();
  private readonly v6 = new Ipv6Map<NeighborEntry>();
  /** Learned IPv4 entries, least recently confirmed first (a Set keeps insertion order). */
  private readonly learnedOrder = new Set<NeighborEntry>();
  private readonly emitter = new Emitter<NeighborDump>();
  private readonly reachableMs: number;
  private readonly maxLearned: number;
  private readonly ageingMs: number;
  private readonly now: () => number;
  /** Learned entries evicted because the table held maxLearned already. */
  overflows = 0;

  constructor(options: NeighborTableOptions = {}) {
    this.reachableMs = checkOption('reachableMs', options.reachableMs ?? 30_000, 1);
    this.maxLearned = checkOption('maxLearned', options.maxLearned ?? 4096, 1);
    this.ageingMs = checkOption('ageingMs', options.ageingMs ?? 300_000, 1);
    this.now = options.now ?? Date.now;
  }

  /** Learned entries held now (at most maxLearned). */
  get learnedCount(): number {
    return this.learnedOrder.size;
  }

  get size(): number {
    return this.v4.size + this.v6.size;
  }

  /** The MAC for an IPv4 neighbor, or -1. */
  lookup4(ip: number): number {
    const entry = this.entry4(ip);
    return entry === undefined ? -1 : entry.mac;
  }

  /**
   * Hot path: the entry for an IPv4 neighbor (the address as an unsigned or a signed 32-bit
   * number: pass `ip | 0`, which no call boxes), or undefined.
   */
  entry4(ip: number): NeighborEntry | undefined {
    return this.v4.getWords(0, ip | 0);
  }

  /** The MAC for the IPv6 neighbor at buf[off..off+16), or -1. */
  lookup6(buf: Uint8Array, off = 0): number {
    const entry = this.v6.get(buf, off);
    return entry === undefined ? -1 : entry.mac;
  }

  /** Hot path: the entry for the IPv6 neighbor at buf[off..off+16), or undefined. */
  entry6(buf: Uint8Array, off = 0): NeighborEntry | undefined {
    return this.v6.get(buf, off);
  }

  /** Hot path: the MAC to answer an ARP request for `ip` with, or -1 when we do not answer. */
  answerArp4(ip: number): number {
    const entry = this.entry4(ip);
    return entry?.proxy ? entry.mac : -1;
  }

  /** Hot path: the MAC to answer an ND solicitation for the address at buf[off], or -1. */
  answerNd6(buf: Uint8Array, off = 0): number {
    const entry = this.v6.get(buf, off);
    return entry?.proxy ? entry.mac : -1;
  }

  /**
   * Learns (or confirms) an IPv4 neighbor from traffic, e.g. an ARP request's sender. A
   * configured entry is never overridden. No allocation when the entry exists and is unchanged.
   * Returns true when the table changed.
   */
  learn4(ip: number, mac: number, nowMs = this.now()): boolean {
    const entry = this.entry4(ip);
    if (entry !== undefined) {
      if (!entry.learned) return false;
      if (nowMs - entry.confirmedMs >= LRU_REFRESH_MS) {
        this.learnedOrder.delete(entry);
        this.learnedOrder.add(entry);
      }
      entry.confirmedMs = nowMs;
      if (entry.mac === mac) return false;
      const previous = this.dumpEntry(entry, nowMs);
      entry.mac = mac;
      this.emitter.emit([{ kind: 'changed', entry: this.dumpEntry(entry, nowMs), previous }]);
      return true;
    }
    if (!Number.isInteger(ip) || ip < -0x80000000 || ip > 0xffffffff) return false;
    ip >>>= 0;
    const created: NeighborEntry = {
      ip: { family: 4, address: ip },
      mac,
      permanent: false,
      proxy: false,
      learned: true,
      confirmedMs: nowMs,
    };
    const events: ChangeEvent<NeighborDump>[] = [];
    if (this.learnedOrder.size >= this.maxLearned) {
      const oldest = this.learnedOrder.values().next().value as NeighborEntry;
      this.forgetLearned(oldest);
      this.overflows++;
      events.push({ kind: 'removed', entry: this.dumpEntry(oldest, nowMs) });
    }
    this.v4.set(ip, created);
    this.learnedOrder.add(created);
    events.push({ kind: 'added', entry: this.dumpEntry(created, nowMs) });
    this.emitter.emit(events);
    return true;
  }

  /** Removes learned entries unconfirmed for ageingMs; call it now and then (e.g. every second). */
  expire(nowMs = this.now()): ChangeEvent<NeighborDump>[] {
    const stale: NeighborEntry[] = [];
    for (const entry of this.learnedOrder) {
      // Least recently confirmed first, to within LRU_REFRESH_MS: past that window, stop.
      if (nowMs - entry.confirmedMs < this.ageingMs - LRU_REFRESH_MS) break;
      if (nowMs - entry.confirmedMs >= this.ageingMs) stale.push(entry);
    }
    const events = stale.map((entry): ChangeEvent<NeighborDump> => {
      this.forgetLearned(entry);
      return { kind: 'removed', entry: this.dumpEntry(entry, nowMs) };
    });
    this.emitter.emit(events);
    return events;
  }

  private forgetLearned(entry: NeighborEntry): void {
    this.learnedOrder.delete(entry);
    if (entry.ip.family === 4 && this.v4.get(entry.ip.address) === entry)
      this.v4.delete(entry.ip.address);
  }

  /** The entry for `ip`, as text, or undefined. */
  get(ip: string): NeighborDump | undefined {
    const entry = this.entryFor(parseIp(ip));
    return entry && this.dumpEntry(entry, this.now());
  }

  /** Calls `listener` with every change; returns the function that stops it. */
  onChange(listener: Listener<NeighborDump>): () => void {
    return this.emitter.on(listener);
  }

  /**
   * Replaces every configured entry with `entries`; learned entries stay unless the snapshot names
   * the same address. Applying the same snapshot twice changes nothing.
   */
  applySnapshot(entries: readonly NeighborInput[]): ChangeEvent<NeighborDump>[] {
    const next = this.validate(entries);
    const removes = this.entries()
      .filter((e) => !e.learned && !next.has(keyOf(e.ip)))
      .map((e) => e.ip);
    return this.commit(removes, next);
  }

  /** Removes, then adds (an add replaces the entry for its address). All or nothing. */
  applyDiff(diff: NeighborDiff): ChangeEvent<NeighborDump>[] {
    const removes = validateEach('neighbor remove', diff.remove ?? [], (ip) => ip, parseIp);
    return this.commit(removes, this.validate(diff.add ?? []));
  }

  /** Adds or replaces one entry. */
  add(entry: NeighborInput): ChangeEvent<NeighborDump>[] {
    return this.applyDiff({ add: [entry] });
  }

  /** Removes the entry for `ip` (an absent one is not an error). */
  remove(ip: string): ChangeEvent<NeighborDump>[] {
    return this.applyDiff({ remove: [ip] });
  }

  /** Every entry, as text. */
  dump(): NeighborDump[] {
    const nowMs = this.now();
    return this.entries().map((e) => this.dumpEntry(e, nowMs));
  }

  private entries(): NeighborEntry[] {
    return [...this.v4.values(), ...[...this.v6.entries()].map(([, e]) => e)];
  }

  private entryFor(ip: IpAddress): NeighborEntry | undefined {
    return ip.family === 4 ? this.v4.get(ip.address) : this.v6.get(ip.address, 0);
  }

  private dumpEntry(e: NeighborEntry, nowMs: number): NeighborDump {
    const state: NeighborState = e.permanent
      ? 'permanent'
      : nowMs - e.confirmedMs < this.reachableMs
        ? 'reachable'
        : 'stale';
    return { ip: formatIp(e.ip), mac: formatMac(e.mac), state, proxy: e.proxy, learned: e.learned };
  }

  private validate(entries: readonly NeighborInput[]): Map<string, NeighborEntry> {
    const nowMs = this.now();
    const parsed = validateEach(
      'neighbor',
      entries,
      (e) => `${e.ip} -> ${e.mac}`,
      (e): NeighborEntry => {
        const state = e.state ?? 'permanent';
        if (state !== 'permanent' && state !== 'reachable') {
          throw fdbError(
            FdbErrorCode.badEntry,
            `state ${JSON.stringify(state)}: configure permanent or reachable`,
          );
        }
        return {
          ip: parseIp(e.ip),
          mac: parseMac(e.mac),
          permanent: state === 'permanent',
          proxy: e.proxy ?? false,
          learned: false,
          confirmedMs: nowMs,
        };
      },
    );
    const out = new Map<string, NeighborEntry>();
    for (const entry of parsed) {
      const key = keyOf(entry.ip);
      const other = out.get(key);
      if (
        other &&
        (other.mac !== entry.mac ||
          other.permanent !== entry.permanent ||
          other.proxy !== entry.proxy)
      ) {
        throw fdbError(
          FdbErrorCode.duplicate,
          `two different entries for ${key} in one batch; nothing in this batch was applied`,
        );
      }
      out.set(key, entry);
    }
    return out;
  }

  private commit(
    removes: readonly IpAddress[],
    adds: Map<string, NeighborEntry>,
  ): ChangeEvent<NeighborDump>[] {
    const nowMs = this.now();
    const events: ChangeEvent<NeighborDump>[] = [];
    for (const ip of removes) {
      if (adds.has(keyOf(ip))) continue;
      const old = this.entryFor(ip);
      if (!old) continue;
      this.learnedOrder.delete(old);
      if (ip.family === 4) this.v4.delete(ip.address);
      else this.v6.delete(ip.address);
      events.push({ kind: 'removed', entry: this.dumpEntry(old, nowMs) });
    }
    for (const entry of adds.values()) {
      const old = this.entryFor(entry.ip);
      if (
        old &&
        !old.learned &&
        old.mac === entry.mac &&
        old.permanent === entry.permanent &&
        old.proxy === entry.proxy
      )
        continue;
      if (old) this.learnedOrder.delete(old);
      if (entry.ip.family === 4) this.v4.set(entry.ip.address, entry);
      else this.v6.set(entry.ip.address, entry);
      events.push(
        old
          ? {
              kind: 'changed',
              entry: this.dumpEntry(entry, nowMs),
              previous: this.dumpEntry(old, nowMs),
            }
          : { kind: 'added', entry: this.dumpEntry(entry, nowMs) },
      );
    }
    this.emitter.emit(events);
    return events;
  }
}
