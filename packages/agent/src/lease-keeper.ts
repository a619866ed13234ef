import { type Cidr, parseCidr } from '@weft/core';
import {
  describeLease,
  type Lease,
  type LeaseAttrs,
  type LeaseEvent,
  LeaseWatcher,
  type RenewalHandle,
  type SubnetManager,
} from '@weft/subnet';
import type { Logger as PinoLogger } from 'pino';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** What {@link LeaseKeeper.start} reports. */
export interface LeaseKeeperHandlers {
  /** The other nodes' leases changed (the first call carries the snapshot). */
  onLeases(events: LeaseEvent[], initial: boolean): void;
  /**
   * Our subnet went to another node while ours was lost (`why`: how it was lost): the node must
   * be reconfigured.
   */
  onSubnetTaken(was: string, now: string, why: string): void;
}

/**
 * This node's lease for as long as weftd runs: acquired (the store's backoff while it cannot be
 * reached), renewed ahead of expiry, taken back when it vanishes from the store, and the other
 * nodes' leases watched.
 */
export class LeaseKeeper {
  private current: Lease | undefined;
  private renewal: RenewalHandle | undefined;
  private watcher: LeaseWatcher | undefined;
  private lostSince: number | undefined;
  private readonly abort = new AbortController();
  /** Whether the lease was created by this run (a failed start gives it back). */
  createdThisRun = false;

  constructor(
    private readonly manager: SubnetManager,
    private readonly log: PinoLogger,
  ) {}

  get lease(): Lease | undefined {
    return this.renewal?.current() ?? this.current;
  }

  /** Why the lease cannot be relied on now, if it cannot. */
  get lostReason(): string | undefined {
    return this.lostSince === undefined ? undefined : 'the lease was lost; acquiring it again';
  }

  /** The other nodes' leases as last seen. */
  leases(): Lease[] {
    return this.watcher?.leases() ?? [];
  }

  /**
   * Acquires this node's lease (SubnetManager.acquireLease, retrying until stop()); `existed`
   * says whether the node had one before, so a failed start gives back only a lease it made.
   */
  async acquire(
    attrs: LeaseAttrs,
    previous: { subnet?: Cidr; subnet6?: Cidr },
    existed: boolean,
  ): Promise<Lease> {
    this.current = await this.manager.acquireLease({
      attrs,
      previousSubnet: previous.subnet,
      previousSubnet6: previous.subnet6,
      signal: this.abort.signal,
    });
    this.createdThisRun = !existed;
    return this.current;
  }

  /** Starts renewing and watching. */
  start(handlers: LeaseKeeperHandlers): void {
    const lease = this.current!;
    this.renew(lease);
    this.watcher = new LeaseWatcher(
      this.manager,
      {
        onEvents: (events, initial) => {
          for (const e of events)
            this.log.debug(
              {
                event: e.type,
                subnet: e.lease.subnet,
                subnet6: e.lease.subnet6,
                publicIp: e.lease.attrs.publicIp,
                publicIpv6: e.lease.attrs.publicIpv6,
                backend: e.lease.attrs.backendType,
              },
              initial ? 'lease known' : 'lease changed',
            );
          if (!initial && events.length > 0)
            this.log.info(
              {
                changes: events.map(
                  (e) =>
                    `${e.type} ${describeLease(e.lease)} (${[e.lease.attrs.publicIp, e.lease.attrs.publicIpv6].filter(Boolean).join(' ')})`,
                ),
              },
              'leases changed',
            );
          handlers.onLeases(events, initial);
        },
        onOwnLeaseLost: () =>
          void this.reacquire(handlers, "this node's lease disappeared from the store"),
        onOwnLeaseTaken: (_key, taken) =>
          void this.reacquire(
            handlers,
            `this node's lease was overwritten by another node (${[taken.attrs.publicIp, taken.attrs.publicIpv6].filter(Boolean).join(' ')})`,
          ),
        onError: (err) =>
          this.log.warn({ err: err.message }, 'lease watch: the store is not answering; retrying'),
      },
      {
        ownKey: lease.key,
        ownPublicIp: lease.attrs.publicIp,
        ownPublicIpv6: lease.attrs.publicIpv6,
      },
    ).start();
  }

  private renew(lease: Lease): void {
    this.renewal = this.manager.keepRenewed(lease, {
      onRenewed: (l) => {
        this.current = l;
        this.log.debug({ subnet: describeLease(l), expiresAt: l.expiresAt }, 'lease renewed');
      },
    });
  }

  /**
   * Our lease vanished from the store or another node overwrote it: say so loudly, stop renewing
   * (a renewal would overwrite the other node in turn), and take the same subnet back if it is
   * free; if it is not, the node must be reconfigured (onSubnetTaken).
   */
  private async reacquire(handlers: LeaseKeeperHandlers, why: string): Promise<void> {
    const lost = this.lease;
    if (!lost || this.lostSince !== undefined || this.abort.signal.aborted) return;
    this.lostSince = Date.now();
    this.log.error({ subnet: describeLease(lost) }, `${why}; acquiring it again`);
    this.renewal?.stop();
    this.renewal = undefined;
    let wait = 1000;
    while (!this.abort.signal.aborted) {
      try {
        const again = await this.manager.acquireLease({
          attrs: lost.attrs,
          previousSubnet: lost.subnet ? parseCidr(lost.subnet) : undefined,
          previousSubnet6: lost.subnet6 ? parseCidr(lost.subnet6) : undefined,
          signal: this.abort.signal,
        });
        if (again.subnet !== lost.subnet || again.subnet6 !== lost.subnet6) {
          await this.manager.releaseLease(again).catch(() => undefined);
          handlers.onSubnetTaken(describeLease(lost), describeLease(again), why);
          return;
        }
        this.current = again;
        this.renew(again);
        this.lostSince = undefined;
        this.log.info({ subnet: describeLease(again) }, 'lease acquired again');
        return;
      } catch (err) {
        if (this.abort.signal.aborted) return;
        this.log.error(
          { err: (err as Error).message, retryInMs: wait },
          'acquiring the lease again failed',
        );
        await sleep(wait);
        wait = Math.min(wait * 2, 30_000);
      }
    }
  }

  /** Stops renewing, watching and any retrying; optionally gives the lease back. */
  async stop(release: boolean): Promise<void> {
    this.abort.abort(new Error('weftd is stopping'));
    this.watcher?.close();
    this.renewal?.stop();
    const lease = this.lease;
    if (release && lease)
      await this.manager
        .releaseLease(lease)
        .catch((err: Error) => this.log.error({ err: err.message }, 'releasing the lease failed'));
  }
}
