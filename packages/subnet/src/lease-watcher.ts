import { formatIpv6, tryParseIpv6 } from '@weft/core';
import { type Lease, leaseAttrsJson } from './lease.js';
import type { LeaseEvent, LeaseWatch, LeaseWatchHandlers, SubnetManager } from './manager.js';
import type { StoreEvent, StoreWatch } from './store.js';

/** Options of a new {@link LeaseWatcher}. */
export interface LeaseWatcherOptions {
  /**
   * This node's lease key: its changes are not events; its disappearance is onOwnLeaseLost, and
   * another node's public IP in it onOwnLeaseTaken.
   */
  ownKey?: string;
  /** This node's public IP: another lease claiming it is warned about (naming both). */
  ownPublicIp?: string;
  /** This node's public IPv6 address, likewise. */
  ownPublicIpv6?: string;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const same = (a: Lease, b: Lease) =>
  a.subnet === b.subnet &&
  a.subnet6 === b.subnet6 &&
  leaseAttrsJson(a.attrs) === leaseAttrsJson(b.attrs);

/**
 * The other nodes' leases as a stream of changes (flannel's subnet.WatchLeases): first the
 * snapshot (as `added`), then each change. On a reconnect or a compaction it re-lists and emits
 * the difference, so across both it neither misses a change nor repeats one. A malformed lease is
 * logged and skipped; the watch goes on. Two leases claiming one public IP are warned about once.
 */
export class LeaseWatcher implements LeaseWatch {
  private readonly state = new Map<string, Lease>();
  private storeWatch: StoreWatch | undefined;
  private closed = false;
  /** Whether our own key has been seen since it was last reported lost. */
  private ownSeen = false;
  private backoffMs = 500;
  private readonly warnedDuplicates = new Set<string>();
  /** The attributes another node wrote under our key, once reported. */
  private takenBy: string | undefined;

  constructor(
    private readonly manager: SubnetManager,
    private readonly handlers: LeaseWatchHandlers,
    private readonly options: LeaseWatcherOptions = {},
  ) {}

  /** Lists and starts watching; returns itself. */
  start(): this {
    void this.sync(true);
    return this;
  }

  leases(): Lease[] {
    return [...this.state.values()];
  }

  /** Stops watching; no handler runs after it. */
  close(): void {
    this.closed = true;
    this.storeWatch?.close();
  }

  private isOwn(key: string): boolean {
    return key === this.options.ownKey;
  }

  /** Whether `lease` (under our own key) names another node: a public IP of its own, not ours. */
  private namesAnotherNode(lease: Lease): boolean {
    const { ownPublicIp, ownPublicIpv6 } = this.options;
    const differs = (mine: string | undefined, theirs: string | undefined) => {
      if (mine === undefined) return false;
      if (theirs === undefined) return true;
      const a = tryParseIpv6(mine);
      const b = tryParseIpv6(theirs);
      return a && b ? formatIpv6(a) !== formatIpv6(b) : mine !== theirs;
    };
    return (
      differs(ownPublicIp, lease.attrs.publicIp) || differs(ownPublicIpv6, lease.attrs.publicIpv6)
    );
  }

  /** Our key seen in the store: ours still, or overwritten by another node. */
  private ownPresent(lease: Lease): void {
    if (!this.namesAnotherNode(lease)) {
      this.ownSeen = true;
      this.takenBy = undefined;
      return;
    }
    // Reported once per takeover: a later write of ours (or theirs again) starts over.
    if (this.takenBy === leaseAttrsJson(lease.attrs)) return;
    this.takenBy = leaseAttrsJson(lease.attrs);
    this.ownSeen = false;
    this.manager.log.error(
      {
        key: lease.key,
        publicIp: lease.attrs.publicIp,
        publicIpv6: lease.attrs.publicIpv6,
        ours: [this.options.ownPublicIp, this.options.ownPublicIpv6].filter(Boolean),
      },
      `this node's own lease was overwritten by another node (${[lease.attrs.publicIp, lease.attrs.publicIpv6].filter(Boolean).join(' ')}): two nodes claim one subnet`,
    );
    this.handlers.onOwnLeaseTaken?.(lease.key, lease);
  }

  private ownLost(key: string): void {
    this.ownSeen = false;
    this.manager.log.error({ key }, "this node's own lease is gone from the store");
    this.handlers.onOwnLeaseLost?.(key);
  }

  /** Lists every lease, emits the difference from what it held, and watches from there. */
  private async sync(initial: boolean): Promise<void> {
    for (;;) {
      if (this.closed) return;
      try {
        const listing = await this.manager.listLeases();
        this.backoffMs = 500;
        if (this.closed) return;
        this.reconcile(listing.leases, initial);
        this.watchFrom(listing.revision);
        return;
      } catch (err) {
        this.handlers.onError?.(err as Error);
        this.manager.log.debug?.(
          { err: (err as Error).message, retryInMs: this.backoffMs },
          'lease watch: listing failed; retrying',
        );
        await sleep(this.backoffMs);
        this.backoffMs = Math.min(this.backoffMs * 2, 10_000);
      }
    }
  }

  private reconcile(leases: Lease[], initial: boolean): void {
    const events: LeaseEvent[] = [];
    const seen = new Set<string>();
    let ownPresent = false;
    for (const lease of leases) {
      if (this.isOwn(lease.key)) {
        ownPresent = true;
        this.ownPresent(lease);
        continue;
      }
      seen.add(lease.key);
      const old = this.state.get(lease.key);
      if (!old) events.push({ type: 'added', lease });
      else if (!same(old, lease)) events.push({ type: 'changed', lease, previous: old });
      this.state.set(lease.key, lease);
    }
    for (const [key, old] of [...this.state]) {
      if (!seen.has(key)) {
        this.state.delete(key);
        events.push({ type: 'removed', lease: old });
      }
    }
    if (this.options.ownKey && !ownPresent && (this.ownSeen || !initial))
      this.ownLost(this.options.ownKey);
    this.manager.log.debug?.(
      { leases: this.state.size, changes: events.length, initial },
      'lease watch: listed and reconciled',
    );
    this.checkDuplicates();
    if (initial || events.length > 0) this.handlers.onEvents(events, initial);
  }

  private watchFrom(revision: number): void {
    this.storeWatch = this.manager.store.watchSubnets(revision, {
      onEvents: (evs) => this.apply(evs),
      onResync: (reason) => {
        this.manager.log.warn({ reason }, 'lease watch resynchronising: re-listing');
        void this.sync(false);
      },
      onError: (err) => this.handlers.onError?.(err),
    });
  }

  private apply(evs: StoreEvent[]): void {
    const events: LeaseEvent[] = [];
    for (const e of evs) {
      if (this.isOwn(e.key)) {
        if (e.type === 'delete') {
          this.takenBy = undefined;
          this.ownLost(e.key);
          continue;
        }
        const lease = this.manager.toLease(e);
        if (lease) this.ownPresent(lease);
        else this.ownSeen = true;
        continue;
      }
      const old = this.state.get(e.key);
      // An event at or before what we hold is one we have already reflected.
      if (old && e.revision <= old.revision) continue;
      if (e.type === 'delete') {
        if (old) {
          this.state.delete(e.key);
          events.push({ type: 'removed', lease: old });
        }
        continue;
      }
      const lease = this.manager.toLease(e);
      if (!lease) continue;
      this.state.set(e.key, lease);
      if (!old) events.push({ type: 'added', lease });
      else if (!same(old, lease)) events.push({ type: 'changed', lease, previous: old });
    }
    if (events.length === 0) return;
    this.checkDuplicates();
    this.handlers.onEvents(events, false);
  }

  /** Two nodes claiming one public IP (or IPv6) send each other's traffic astray: say so, naming both. */
  private checkDuplicates(): void {
    const byIp = new Map<string, string[]>();
    const claim = (ip: string | undefined, key: string) => {
      if (ip === undefined) return;
      const v6 = tryParseIpv6(ip);
      const id = v6 ? formatIpv6(v6) : ip;
      const list = byIp.get(id);
      if (list) list.push(key);
      else byIp.set(id, [key]);
    };
    if (this.options.ownKey) {
      claim(this.options.ownPublicIp, `${this.options.ownKey} (this node)`);
      claim(this.options.ownPublicIpv6, `${this.options.ownKey} (this node)`);
    }
    for (const l of this.state.values()) {
      claim(l.attrs.publicIp, l.key);
      claim(l.attrs.publicIpv6, l.key);
    }
    for (const [ip, keys] of byIp) {
      if (keys.length < 2) continue;
      const id = `${ip} ${keys.join(' ')}`;
      if (this.warnedDuplicates.has(id)) continue;
      this.warnedDuplicates.add(id);
      this.manager.log.warn(
        { publicIp: ip, leases: keys },
        `two nodes claim the public IP ${ip}: ${keys.join(' and ')}; traffic for one goes to the other (check --public-ip, --public-ipv6 and --iface on both)`,
      );
    }
  }
}
