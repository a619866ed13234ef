import { formatIp, formatMac, type IpAddress, MAC_ZERO, parseIp, parseMac } from '@weft/core';
import { checkOption, FdbErrorCode, fdbError, validateEach } from './errors.js';
import { type ChangeEvent, Emitter, type Listener } from './events.js';
import { ipv6PrefixEquals } from './ipv6-key.js';
import { NumberMap } from './number-map.js';

/** Where frames for a MAC go: a remote VTEP's underlay address, UDP port and VNI. */
export interface FdbEntry {
  readonly mac: number;
  remote: IpAddress;
  /** The remote address as a number when IPv4, -1 when IPv6. */
  remote4: number;
  port: number;
  vni: number;
  readonly isStatic: boolean;
  /** When a learned entry was last seen as a source (ms). */
  seenMs: number;
  /** This entry alone, as a destination list: lets `destinations` return without allocating. */
  readonly asList: readonly FdbEntry[];
}

/** A static FDB entry as `bridge fdb add` takes it: MAC, remote VTEP, port and VNI. */
export interface FdbEntryInput {
  /** The inner destination MAC; `00:00:00:00:00:00` adds a destination to the default (flood) list. */
  mac: string;
  /** The remote VTEP's underlay address. */
  dst: string;
  /** Default: the table's defaultPort. */
  port?: number;
  /** Default: the table's defaultVni. */
  vni?: number;
}

/** An FDB entry as text, the way `bridge fdb show` lists it. */
export interface FdbDump {
  mac: string;
  dst: string;
  port: number;
  vni: number;
  static: boolean;
  /** Seconds since a learned entry was last seen. */
  ageSeconds?: number;
}

/** An FDB entry to remove, by MAC (and for the default list, by destination). */
export interface FdbRemove {
  mac: string;
  /** For the all-zeros MAC: which destination of the default list. */
  dst?: string;
}

/** Changes applied together by {@link Fdb.applyDiff}: removals first, then additions. */
export interface FdbDiff {
  add?: readonly FdbEntryInput[];
  remove?: readonly FdbRemove[];
}

/** Options of a new {@link Fdb}. */
export interface FdbOptions {
  /** Learned entries age out after this long unseen (the Linux bridge default: 300 s). */
  ageingMs?: number;
  /** The most learned entries kept; beyond it the least recently seen is evicted. Static entries do not count. */
  maxLearned?: number;
  /** The UDP port of entries that name none (default 8472, the Linux VXLAN port flannel uses). */
  defaultPort?: number;
  /** The VNI of entries that name none (default 1, flannel's). */
  defaultVni?: number;
  /** The clock, in milliseconds (default `Date.now`; tests pass a fake one). */
  now?: () => number;
}

const LRU_REFRESH_MS = 1000;

/**
 * The learned entries, bounded, least recently seen evicted first: lookups by MAC in a NumberMap
 * (no boxing of the 48-bit key per packet); the eviction order in a Set of entries, which keeps
 * insertion order, so re-inserting on touch makes the first the least recent.
 */
class LearnedEntries {
  private readonly byMac = new NumberMap<FdbEntry>();
  private readonly order = new Set<FdbEntry>();
  constructor(private readonly max: number) {}
  get size(): number {
    return this.byMac.size;
  }
  get(mac: number): FdbEntry | undefined {
    return this.byMac.get(mac);
  }
  /** Hot path: by the MAC's high 16 bits and low 32 bits (see NumberMap). */
  getWords(high: number, low: number): FdbEntry | undefined {
    return this.byMac.getWords(high, low);
  }
  /** Inserts or marks as most recently seen; returns the entry evicted to make room, if any. */
  touch(entry: FdbEntry): FdbEntry | undefined {
    const old = this.byMac.get(entry.mac);
    if (old !== undefined) this.order.delete(old);
    this.byMac.set(entry.mac, entry);
    this.order.add(entry);
    if (this.order.size <= this.max) return undefined;
    const oldest = this.order.values().next().value as FdbEntry;
    this.delete(oldest.mac);
    return oldest;
  }
  delete(mac: number): boolean {
    const entry = this.byMac.get(mac);
    if (entry === undefined) return false;
    this.order.delete(entry);
    return this.byMac.delete(mac);
  }
  values(): IterableIterator<FdbEntry> {
    return this.order.values();
  }
}

function sameRemote(e: FdbEntry, remote: IpAddress): boolean {
  if (remote.family === 4) return e.remote.family === 4 && e.remote4 === remote.address;
  return e.remote.family === 6 && ipv6PrefixEquals(remote.address, 0, e.remote.address);
}

function makeEntry(
  mac: number,
  remote: IpAddress,
  port: number,
  vni: number,
  isStatic: boolean,
  seenMs: number,
): FdbEntry {
  const entry = {
    mac,
    remote,
    remote4: remote.family === 4 ? remote.address : -1,
    port,
    vni,
    isStatic,
    seenMs,
    asList: [] as FdbEntry[],
  };
  entry.asList.push(entry);
  return entry;
}

/**
 * The FDB: MAC -> remote VTEP, as `bridge fdb` shows for a VXLAN device. Static entries are what
 * the control plane installs per node; learned entries come from received frames' source MACs,
 * age out, and are bounded in number; a learned entry never overrides a static one. The all-zeros
 * MAC holds the default destination list for broadcast, multicast and unknown unicast, which is
 * replicated to every listed VTEP (head-end replication, `bridge fdb append 00:00:00:00:00:00`).
 */
export class Fdb {
  private readonly statics = new NumberMap<FdbEntry>();
  private defaultList: FdbEntry[] = [];
  private readonly learned: LearnedEntries;
  private readonly emitter = new Emitter<FdbDump>();
  private readonly ageingMs: number;
  private readonly defaultPort: number;
  private readonly defaultVni: number;
  private readonly now: () => number;
  /** Learned entries evicted because the table held maxLearned already. */
  overflows = 0;
  /** The time of the last expire() (or tick()): what the hot path's lookups and learning go by. */
  private clockMs: number;

  constructor(options: FdbOptions = {}) {
    this.ageingMs = checkOption('ageingMs', options.ageingMs ?? 300_000, 1);
    this.defaultPort = checkOption('defaultPort', options.defaultPort ?? 8472, 1);
    if (this.defaultPort > 65535)
      throw fdbError(
        FdbErrorCode.badPort,
        `defaultPort ${this.defaultPort} is not a UDP port (1..65535)`,
      );
    this.defaultVni = checkOption('defaultVni', options.defaultVni ?? 1, 0);
    if (this.defaultVni > 0xffffff)
      throw fdbError(
        FdbErrorCode.badVni,
        `defaultVni ${this.defaultVni} does not fit 24 bits (0..16777215)`,
      );
    this.now = options.now ?? Date.now;
    this.clockMs = this.now();
    const max = checkOption('maxLearned', options.maxLearned ?? 4096, 1);
    // Removed in 0.2 (the built-in table measured faster than lru-cache): say so rather than ignore it.
    if ((options as { learnedStore?: unknown }).learnedStore !== undefined) {
      throw fdbError(
        FdbErrorCode.badOption,
        'learnedStore was removed: learned entries are always kept in the built-in table (measured faster than lru-cache); drop the option',
      );
    }
    this.learned = new LearnedEntries(max);
  }

  get size(): number {
    return this.statics.size + this.learned.size + this.defaultList.length;
  }

  get learnedCount(): number {
    return this.learned.size;
  }

  /** Hot path: the entry for a unicast MAC (static first, then a learned one still fresh), or undefined. */
  lookup(mac: number, nowMs = this.now()): FdbEntry | undefined {
    const s = this.statics.get(mac);
    if (s !== undefined) return s;
    const l = this.learned.get(mac);
    if (l === undefined || nowMs - l.seenMs >= this.ageingMs) return undefined;
    return l;
  }

  /**
   * Hot path: `lookup` by the MAC's words (macHigh(mac) and mac | 0, small integers, which no
   * call boxes), judging a learned entry's age by the time of the last expire() or tick().
   */
  lookupWords(high: number, low: number): FdbEntry | undefined {
    const s = this.statics.getWords(high, low);
    if (s !== undefined) return s;
    const l = this.learned.getWords(high, low);
    if (l === undefined || this.clockMs - l.seenMs >= this.ageingMs) return undefined;
    return l;
  }

  /** Hot path: `destinations` for the MAC in the 6 bytes at buf[off], e.g. a frame's destination. */
  destinationsAt(buf: Uint8Array, off: number): readonly FdbEntry[] {
    const entry = this.lookupWords(
      (buf[off] << 8) | buf[off + 1],
      (buf[off + 2] << 24) | (buf[off + 3] << 16) | (buf[off + 4] << 8) | buf[off + 5],
    );
    return entry === undefined ? this.defaultList : entry.asList;
  }

  /**
   * Hot path: `learn4` for the MAC in the 6 bytes at buf[off] (a frame's source), behind the IPv4
   * underlay address `remote4` (either sign), seen at the time of the last expire() or tick().
   */
  learn4At(buf: Uint8Array, off: number, remote4: number, port: number, vni: number): boolean {
    // Never a group address (I/G bit) or all zeros.
    if ((buf[off] & 1) === 1) return false;
    const high = (buf[off] << 8) | buf[off + 1];
    const low = (buf[off + 2] << 24) | (buf[off + 3] << 16) | (buf[off + 4] << 8) | buf[off + 5];
    if ((high === 0 && low === 0) || this.statics.getWords(high, low) !== undefined) return false;
    const entry = this.learned.getWords(high, low);
    if (
      entry !== undefined &&
      entry.remote4 === remote4 >>> 0 &&
      entry.port === port &&
      entry.vni === vni
    ) {
      if (this.clockMs - entry.seenMs >= LRU_REFRESH_MS) this.learned.touch(entry);
      entry.seenMs = this.clockMs;
      return false;
    }
    return this.learnSlow(
      high * 0x100000000 + (low >>> 0),
      { family: 4, address: remote4 >>> 0 },
      port,
      vni,
      this.clockMs,
    );
  }

  /** Sets the time the hot path's lookups and learning go by (expire() sets it too). */
  tick(nowMs = this.now()): void {
    this.clockMs = nowMs;
  }

  /** Hot path: the default (flood) list, for broadcast, multicast and unknown unicast. */
  get defaults(): readonly FdbEntry[] {
    return this.defaultList;
  }

  /**
   * Hot path: where a frame to `mac` goes: its entry alone, or for a MAC without one (unknown
   * unicast, and broadcast or multicast unless a static entry names them) the default list,
   * possibly empty: drop. The kernel's VXLAN does the same: exact match first, then all-zeros.
   * Never allocates.
   */
  destinations(mac: number, nowMs = this.now()): readonly FdbEntry[] {
    const entry = this.lookup(mac, nowMs);
    return entry === undefined ? this.defaultList : entry.asList;
  }

  /**
   * Hot path: learns `mac` behind the IPv4 underlay address `remote4` from a received frame. No
   * allocation when the entry exists and is unchanged. Never overrides a static entry; never
   * learns group or all-zeros MACs. Returns true when the table changed.
   */
  learn4(mac: number, remote4: number, port: number, vni: number, nowMs = this.now()): boolean {
    if (mac === MAC_ZERO || Math.floor(mac / 0x10000000000) % 2 === 1 || this.statics.has(mac))
      return false;
    const entry = this.learned.get(mac);
    if (
      entry !== undefined &&
      entry.remote4 === remote4 &&
      entry.port === port &&
      entry.vni === vni
    ) {
      this.refresh(entry, nowMs);
      return false;
    }
    return this.learnSlow(mac, { family: 4, address: remote4 }, port, vni, nowMs);
  }

  /** Learns `mac` behind an IPv6 underlay address (16 bytes at buf[off]). */
  learn6(
    mac: number,
    buf: Uint8Array,
    off: number,
    port: number,
    vni: number,
    nowMs = this.now(),
  ): boolean {
    if (mac === MAC_ZERO || Math.floor(mac / 0x10000000000) % 2 === 1 || this.statics.has(mac))
      return false;
    const entry = this.learned.get(mac);
    if (
      entry !== undefined &&
      entry.remote.family === 6 &&
      ipv6PrefixEquals(buf, off, entry.remote.address) &&
      entry.port === port &&
      entry.vni === vni
    ) {
      this.refresh(entry, nowMs);
      return false;
    }
    return this.learnSlow(
      mac,
      { family: 6, address: Uint8Array.from(buf.subarray(off, off + 16)) },
      port,
      vni,
      nowMs,
    );
  }

  /**
   * Marks a learned entry seen. Its place in the eviction order moves at most once a second: a
   * busy MAC seen on every packet then costs one comparison, not a reinsertion, and eviction is
   * least-recently-seen to within a second.
   */
  private refresh(entry: FdbEntry, nowMs: number): void {
    if (nowMs - entry.seenMs >= LRU_REFRESH_MS) this.learned.touch(entry);
    entry.seenMs = nowMs;
  }

  private learnSlow(
    mac: number,
    remote: IpAddress,
    port: number,
    vni: number,
    nowMs: number,
  ): boolean {
    const old = this.learned.get(mac);
    const events: ChangeEvent<FdbDump>[] = [];
    if (old !== undefined) {
      const previous = this.dumpEntry(old, nowMs);
      old.remote = remote;
      old.remote4 = remote.family === 4 ? remote.address : -1;
      old.port = port;
      old.vni = vni;
      old.seenMs = nowMs;
      this.learned.touch(old);
      events.push({ kind: 'changed', entry: this.dumpEntry(old, nowMs), previous });
    } else {
      const entry = makeEntry(mac, remote, port, vni, false, nowMs);
      const evicted = this.learned.touch(entry);
      events.push({ kind: 'added', entry: this.dumpEntry(entry, nowMs) });
      if (evicted) {
        this.overflows++;
        events.push({ kind: 'removed', entry: this.dumpEntry(evicted, nowMs) });
      }
    }
    this.emitter.emit(events);
    return true;
  }

  /** Removes learned entries unseen for the ageing time; call it now and then (e.g. every second). */
  expire(nowMs = this.now()): ChangeEvent<FdbDump>[] {
    this.clockMs = nowMs;
    const events: ChangeEvent<FdbDump>[] = [];
    for (const entry of [...this.learned.values()]) {
      if (nowMs - entry.seenMs >= this.ageingMs) {
        this.learned.delete(entry.mac);
        events.push({ kind: 'removed', entry: this.dumpEntry(entry, nowMs) });
      }
    }
    this.emitter.emit(events);
    return events;
  }

  /** Forgets every learned entry (like `bridge fdb flush dynamic`). */
  flushLearned(): ChangeEvent<FdbDump>[] {
    const nowMs = this.now();
    const events = [...this.learned.values()].map(
      (e): ChangeEvent<FdbDump> => ({ kind: 'removed', entry: this.dumpEntry(e, nowMs) }),
    );
    for (const e of [...this.learned.values()]) this.learned.delete(e.mac);
    this.emitter.emit(events);
    return events;
  }

  /** Calls `listener` with every change; returns the function that stops it. */
  onChange(listener: Listener<FdbDump>): () => void {
    return this.emitter.on(listener);
  }

  /**
   * Replaces every static entry and the whole default list with `entries`. Learned entries stay,
   * except those for a MAC that becomes static. Applying the same snapshot twice changes nothing.
   */
  applySnapshot(entries: readonly FdbEntryInput[]): ChangeEvent<FdbDump>[] {
    const { statics, defaults } = this.validate(entries);
    const removes: FdbEntry[] = [];
    for (const [mac, e] of this.statics.entries()) if (!statics.has(mac)) removes.push(e);
    for (const e of this.defaultList) if (!defaults.some((d) => sameStatic(d, e))) removes.push(e);
    return this.commit(removes, [...statics.values(), ...defaults]);
  }

  /** Removes, then adds; an add for a static MAC replaces it; default destinations are appended. All or nothing. */
  applyDiff(diff: FdbDiff): ChangeEvent<FdbDump>[] {
    const removals = validateEach(
      'fdb remove',
      diff.remove ?? [],
      (r) => `${r.mac}${r.dst ? ` dst ${r.dst}` : ''}`,
      (r) => ({
        mac: parseMac(r.mac),
        dst: r.dst === undefined ? undefined : parseIp(r.dst),
      }),
    );
    const { statics, defaults } = this.validate(diff.add ?? []);
    const removes: FdbEntry[] = [];
    for (const r of removals) {
      if (r.mac === MAC_ZERO) {
        for (const e of this.defaultList)
          if (r.dst === undefined || sameRemote(e, r.dst)) removes.push(e);
      } else {
        const e = this.statics.get(r.mac);
        if (e && (r.dst === undefined || sameRemote(e, r.dst))) removes.push(e);
      }
    }
    return this.commit(removes, [...statics.values(), ...defaults]);
  }

  /** Adds (or replaces) one static entry; `00:00:00:00:00:00` appends to the default list. */
  add(entry: FdbEntryInput): ChangeEvent<FdbDump>[] {
    return this.applyDiff({ add: [entry] });
  }

  /** `bridge fdb append 00:00:00:00:00:00 ... dst X`: adds X to the default list (a duplicate is a no-op). */
  appendDefault(dst: string, port?: number, vni?: number): ChangeEvent<FdbDump>[] {
    return this.applyDiff({ add: [{ mac: '00:00:00:00:00:00', dst, port, vni }] });
  }

  /** Removes one destination from the default (flood) list. */
  removeDefault(dst: string): ChangeEvent<FdbDump>[] {
    return this.applyDiff({ remove: [{ mac: '00:00:00:00:00:00', dst }] });
  }

  /** Removes the static entry for `mac` (the all-zeros MAC: the default list), only at `dst` if given. */
  remove(mac: string, dst?: string): ChangeEvent<FdbDump>[] {
    return this.applyDiff({ remove: [{ mac, dst }] });
  }

  /** Every entry as text: static ones, the default list, then learned ones not yet aged out. */
  dump(): FdbDump[] {
    const nowMs = this.now();
    return [...this.statics.values(), ...this.defaultList, ...this.learned.values()]
      .filter((e) => e.isStatic || nowMs - e.seenMs < this.ageingMs)
      .map((e) => this.dumpEntry(e, nowMs));
  }

  private dumpEntry(e: FdbEntry, nowMs: number): FdbDump {
    const out: FdbDump = {
      mac: formatMac(e.mac),
      dst: formatIp(e.remote),
      port: e.port,
      vni: e.vni,
      static: e.isStatic,
    };
    if (!e.isStatic) out.ageSeconds = Math.floor((nowMs - e.seenMs) / 1000);
    return out;
  }

  private validate(entries: readonly FdbEntryInput[]): {
    statics: Map<number, FdbEntry>;
    defaults: FdbEntry[];
  } {
    const nowMs = this.now();
    const parsed = validateEach(
      'fdb',
      entries,
      (e) => `${e.mac} dst ${e.dst}`,
      (e) => {
        const port = e.port ?? this.defaultPort;
        const vni = e.vni ?? this.defaultVni;
        if (!Number.isInteger(port) || port < 1 || port > 65535)
          throw fdbError(FdbErrorCode.badPort, `port ${port} is not a UDP port (1..65535)`);
        if (!Number.isInteger(vni) || vni < 0 || vni > 0xffffff)
          throw fdbError(FdbErrorCode.badVni, `VNI ${vni} does not fit 24 bits (0..16777215)`);
        return makeEntry(parseMac(e.mac), parseIp(e.dst), port, vni, true, nowMs);
      },
    );
    const statics = new Map<number, FdbEntry>();
    const defaults: FdbEntry[] = [];
    for (const entry of parsed) {
      if (entry.mac === MAC_ZERO) {
        if (!defaults.some((d) => sameStatic(d, entry))) defaults.push(entry);
        continue;
      }
      const other = statics.get(entry.mac);
      if (other && !sameStatic(other, entry)) {
        throw fdbError(
          FdbErrorCode.duplicate,
          `two different entries for ${formatMac(entry.mac)} in one batch; nothing in this batch was applied`,
        );
      }
      statics.set(entry.mac, entry);
    }
    return { statics, defaults };
  }

  private commit(removes: readonly FdbEntry[], adds: readonly FdbEntry[]): ChangeEvent<FdbDump>[] {
    const nowMs = this.now();
    const events: ChangeEvent<FdbDump>[] = [];
    let defaultList = this.defaultList;
    for (const e of removes) {
      if (adds.some((a) => sameStatic(a, e))) continue;
      if (e.mac === MAC_ZERO) defaultList = defaultList.filter((d) => d !== e);
      else this.statics.delete(e.mac);
      events.push({ kind: 'removed', entry: this.dumpEntry(e, nowMs) });
    }
    for (const e of adds) {
      if (e.mac === MAC_ZERO) {
        if (defaultList.some((d) => sameStatic(d, e))) continue;
        defaultList = [...defaultList, e];
        events.push({ kind: 'added', entry: this.dumpEntry(e, nowMs) });
        continue;
      }
      const old = this.statics.get(e.mac);
      if (old && sameStatic(old, e)) continue;
      this.statics.set(e.mac, e);
      const shadowed = this.learned.get(e.mac);
      if (shadowed) {
        this.learned.delete(e.mac);
        events.push({ kind: 'removed', entry: this.dumpEntry(shadowed, nowMs) });
      }
      events.push(
        old
          ? {
              kind: 'changed',
              entry: this.dumpEntry(e, nowMs),
              previous: this.dumpEntry(old, nowMs),
            }
          : { kind: 'added', entry: this.dumpEntry(e, nowMs) },
      );
    }
    // A new array, never a mutated one: a reader holding the old list keeps a consistent copy.
    this.defaultList = defaultList;
    this.emitter.emit(events);
    return events;
  }
}

function sameStatic(a: FdbEntry, b: FdbEntry): boolean {
  return a.mac === b.mac && sameRemote(a, b.remote) && a.port === b.port && a.vni === b.vni;
}
