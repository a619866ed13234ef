import {
  type Cidr,
  type Cidr4,
  type Cidr6,
  cidrNetwork,
  formatCidr,
  formatIpv4,
  formatIpv6,
  tryParseIpv6,
  WeftError,
} from '@weft/core';
import { fromBig, type NetworkConfig, parseNetworkConfig, toBig } from './config.js';
import { SubnetErrorCode } from './errors.js';
import { EtcdStore } from './etcd-store.js';
import {
  describeLease,
  type Lease,
  type LeaseAttrs,
  leaseAttrsJson,
  parseLeaseAttrs,
  parseSubnetKey,
  subnetKey,
} from './lease.js';
import { LeaseWatcher, type LeaseWatcherOptions } from './lease-watcher.js';
import { consoleLogger, type Logger } from './logger.js';
import type { SubnetStore } from './store.js';

/** flannel's lease lifetime and renewal margin. */
export const LEASE_TTL_SECONDS = 24 * 3600;
/** A lease is renewed this long before it expires (flannel's 1 h). */
export const RENEW_MARGIN_SECONDS = 3600;
/** A failed renewal is tried again after this long (flannel's 1 min). */
export const RENEW_RETRY_SECONDS = 60;

/** Options of a new {@link SubnetManager}. */
export interface SubnetManagerOptions {
  /** Where the manager logs (default: JSON lines on stderr). */
  logger?: Logger;
  /** How long a lease lasts unrenewed (default {@link LEASE_TTL_SECONDS}, flannel's 24 h). */
  leaseTtlSeconds?: number;
  /** Renew this long before expiry (default {@link RENEW_MARGIN_SECONDS}). */
  renewMarginSeconds?: number;
  /** Retry a failed renewal after this long (default {@link RENEW_RETRY_SECONDS}). */
  renewRetrySeconds?: number;
  /** How many times to pick again when another node takes the subnet first (default 32). */
  raceRetries?: number;
  /**
   * acquireLease's backoff while the store cannot be reached or racing nodes keep winning:
   * first and longest wait in ms (default 200 and 10 000), each doubled with jitter.
   */
  acquireBackoffMs?: { initial: number; max: number };
  /** Random numbers in [0, 1) for picking a free subnet and jitter (default `Math.random`). */
  random?: () => number;
  /** The clock, in milliseconds (default `Date.now`). */
  now?: () => number;
}

/** What {@link SubnetManager.acquireLease} needs: what this node publishes, and hints. */
export interface AcquireRequest {
  attrs: LeaseAttrs;
  /** The subnets recorded in this node's subnet.env: each asked for again if it is free. */
  previousSubnet?: Cidr;
  previousSubnet6?: Cidr;
  /** Stops the retrying (acquireLease then rejects with the signal's reason). */
  signal?: AbortSignal;
}

/** What happened to a lease. */
export type LeaseEventType = 'added' | 'removed' | 'changed';

/** A change to another node's lease. */
export interface LeaseEvent {
  type: LeaseEventType;
  lease: Lease;
  previous?: Lease;
}

/** Callbacks of a lease watch. */
export interface LeaseWatchHandlers {
  /** Other nodes' lease changes; the first call (`initial`) carries the snapshot as `added`. */
  onEvents(events: LeaseEvent[], initial: boolean): void;
  /** This node's own lease vanished from the store (expired, deleted by an operator). */
  onOwnLeaseLost?(key: string): void;
  /**
   * This node's own lease key now names another node: its public IP (or IPv6) is not ours, so
   * another node overwrote it and traffic for our subnet goes there. Needs `ownPublicIp` (or
   * `ownPublicIpv6`) in the watcher's options.
   */
  onOwnLeaseTaken?(key: string, lease: Lease): void;
  /** The store cannot be reached for now (the watch keeps retrying). */
  onError?(err: Error): void;
}

/** A running watch of the other nodes' leases. */
export interface LeaseWatch {
  /** The other nodes' leases as the watch knows them. */
  leases(): Lease[];
  /** Stops the watch; no handler runs after it. */
  close(): void;
}

/** The renewal loop of this node's lease. */
export interface RenewalHandle {
  /** The lease as last renewed. */
  current(): Lease;
  /** Stops renewing (the lease stays until it expires). */
  stop(): void;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function abortableSleep(ms: number, signal?: AbortSignal): Promise<void> {
  if (!signal) return sleep(ms) as Promise<void>;
  signal.throwIfAborted();
  return new Promise((resolve, reject) => {
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal.reason);
    };
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

/** The subnets of a key already in the store (a malformed lease still occupies its subnets). */
type Taken = { subnet?: Cidr4; subnet6?: Cidr6 };

/**
 * Whether two lease attributes name one node: by public IP (flannel's findLeaseByIP), or by
 * public IPv6 when neither has an IPv4 one (an IPv6-only node, where flannel's "0.0.0.0" would
 * match every node).
 */
export function sameNode(
  a: { publicIp?: string; publicIpv6?: string },
  b: { publicIp?: string; publicIpv6?: string },
): boolean {
  if (a.publicIp !== undefined || b.publicIp !== undefined) return a.publicIp === b.publicIp;
  return a.publicIpv6 !== undefined && sameIpv6(a.publicIpv6, b.publicIpv6);
}

function sameIpv6(a: string, b: string | undefined): boolean {
  if (b === undefined) return false;
  const x = tryParseIpv6(a);
  const y = tryParseIpv6(b);
  return x !== undefined && y !== undefined && formatIpv6(x) === formatIpv6(y);
}

function overlaps(a: Cidr, b: Cidr): boolean {
  if (a.family !== b.family) return false;
  const len = Math.min(a.prefixLength, b.prefixLength);
  const na = cidrNetwork({ ...a, prefixLength: len } as Cidr);
  const nb = cidrNetwork({ ...b, prefixLength: len } as Cidr);
  return formatCidr(na) === formatCidr(nb);
}

/**
 * The lease manager: flannel's LocalManager over any SubnetStore. It acquires a node's subnet in
 * flannel's order, renews it, releases it, makes reservations, and watches the other nodes'
 * leases as a stream of changes that survives reconnects and compaction.
 */
export class SubnetManager {
  readonly log: Logger;
  private readonly ttl: number;
  private readonly margin: number;
  private readonly retry: number;
  private readonly raceRetries: number;
  private readonly acquireBackoff: { initial: number; max: number };
  private readonly random: () => number;
  private readonly now: () => number;

  constructor(
    readonly store: SubnetStore,
    options: SubnetManagerOptions = {},
  ) {
    this.log = options.logger ?? consoleLogger;
    this.ttl = options.leaseTtlSeconds ?? LEASE_TTL_SECONDS;
    this.margin = options.renewMarginSeconds ?? RENEW_MARGIN_SECONDS;
    this.retry = options.renewRetrySeconds ?? RENEW_RETRY_SECONDS;
    this.raceRetries = options.raceRetries ?? 32;
    this.acquireBackoff = options.acquireBackoffMs ?? { initial: 200, max: 10_000 };
    this.random = options.random ?? Math.random;
    this.now = options.now ?? Date.now;
  }

  /** Reads and checks the network config; a missing one says how to create it. */
  async getNetworkConfig(): Promise<NetworkConfig> {
    const json = await this.store.getConfig();
    if (json === undefined) {
      const where =
        this.store instanceof EtcdStore
          ? `etcdctl put ${this.store.prefix}config`
          : 'weftd put-config';
      throw new WeftError(
        SubnetErrorCode.noConfig,
        `no network config in ${this.store.description}: create it, e.g. ${where} '{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}'`,
      );
    }
    return parseNetworkConfig(json);
  }

  /** @internal A stored value as a lease; a malformed one is logged and skipped (undefined). */
  toLease(v: {
    key: string;
    value?: string;
    modRevision?: number;
    revision?: number;
    ttlSeconds?: number;
  }): Lease | undefined {
    const subnets = parseSubnetKey(v.key);
    if (!subnets) {
      this.log.warn({ key: v.key }, 'skipping a key under subnets/ that is not a subnet');
      return undefined;
    }
    try {
      const attrs = parseLeaseAttrs(v.value ?? '', v.key);
      const lease: Lease = { key: v.key, attrs, revision: v.modRevision ?? v.revision ?? 0 };
      if (subnets.subnet) lease.subnet = formatCidr(subnets.subnet);
      if (subnets.subnet6) lease.subnet6 = formatCidr(subnets.subnet6);
      if (v.ttlSeconds !== undefined) lease.expiresAt = this.now() + v.ttlSeconds * 1000;
      return lease;
    } catch (err) {
      this.log.warn({ key: v.key, err: (err as Error).message }, 'skipping a malformed lease');
      return undefined;
    }
  }

  /** Every lease in the store (malformed ones skipped), with the revision the listing is as of. */
  async listLeases(): Promise<{ leases: Lease[]; revision: number }> {
    return this.listing();
  }

  /** Leases, plus the subnets of every key (a malformed lease still occupies its subnet). */
  private async listing(): Promise<{
    leases: Lease[];
    revision: number;
    taken: Taken[];
  }> {
    const { values, revision } = await this.store.listSubnets();
    return {
      leases: values.map((v) => this.toLease(v)).filter((l): l is Lease => l !== undefined),
      revision,
      taken: values.map((v) => parseSubnetKey(v.key)).filter((k) => k !== undefined),
    };
  }

  /**
   * The lease held by the node with this public IP (an IPv6-only node, with no IPv4 one: by its
   * public IPv6), if any.
   */
  async leaseFor(publicIp: string | undefined, publicIpv6?: string): Promise<Lease | undefined> {
    const { leases } = await this.listLeases();
    return leases.find((l) => sameNode(l.attrs, { publicIp, publicIpv6 }));
  }

  private fits4(config: NetworkConfig, subnet: Cidr4 | undefined): boolean {
    if (!config.enableIpv4) return subnet === undefined;
    return (
      subnet !== undefined &&
      subnet.prefixLength === config.subnetLen &&
      subnet.address >= config.subnetMin &&
      subnet.address <= config.subnetMax
    );
  }

  private fits6(config: NetworkConfig, subnet6: Cidr6 | undefined): boolean {
    if (!config.enableIpv6) return subnet6 === undefined;
    if (!subnet6 || subnet6.prefixLength !== config.ipv6SubnetLen) return false;
    const n = toBig(subnet6.address);
    return n >= toBig(config.ipv6SubnetMin!) && n <= toBig(config.ipv6SubnetMax!);
  }

  /** flannel's isSubnetConfigCompat and isIPv6SubnetConfigCompat, each family on its own. */
  private compatible(config: NetworkConfig, lease: Lease): boolean {
    const keys = parseSubnetKey(lease.key);
    return !!keys && this.fits4(config, keys.subnet) && this.fits6(config, keys.subnet6);
  }

  /** Up to 100 free subnets from SubnetMin on, per family, as flannel looks; one is picked at random. */
  private pickFree4(config: NetworkConfig, taken: Taken[]): Cidr4 {
    const free4: number[] = [];
    const size = 2 ** (32 - config.subnetLen);
    for (let ip = config.subnetMin; ip <= config.subnetMax && free4.length < 100; ip += size) {
      const c: Cidr4 = { family: 4, address: ip, prefixLength: config.subnetLen };
      if (!taken.some((t) => t.subnet && overlaps(t.subnet, c))) free4.push(ip);
    }
    if (free4.length === 0) {
      const range = `${formatIpv4(config.subnetMin)}/${config.subnetLen} .. ${formatIpv4(config.subnetMax)}/${config.subnetLen}`;
      throw new WeftError(
        SubnetErrorCode.noFreeSubnet,
        `no free subnet in ${config.network ? formatCidr(config.network) : 'the network'} (${range}): all ${taken.length} are leased; widen the network, or release a lease`,
      );
    }
    return {
      family: 4,
      address: free4[Math.floor(this.random() * free4.length)],
      prefixLength: config.subnetLen,
    };
  }

  private pickFree6(config: NetworkConfig, taken: Taken[]): Cidr6 {
    const free6: bigint[] = [];
    const step = 1n << BigInt(128 - config.ipv6SubnetLen);
    for (
      let n = toBig(config.ipv6SubnetMin!);
      n <= toBig(config.ipv6SubnetMax!) && free6.length < 100;
      n += step
    ) {
      const c: Cidr6 = { family: 6, address: fromBig(n), prefixLength: config.ipv6SubnetLen };
      if (!taken.some((t) => t.subnet6 && overlaps(t.subnet6, c))) free6.push(n);
    }
    if (free6.length === 0) {
      const len = config.ipv6SubnetLen;
      throw new WeftError(
        SubnetErrorCode.noFreeSubnet,
        `no free IPv6 subnet in ${formatCidr(config.ipv6Network!)} (${formatIpv6(config.ipv6SubnetMin!)}/${len} .. ${formatIpv6(config.ipv6SubnetMax!)}/${len}): all ${taken.length} are leased; widen the IPv6Network, or release a lease`,
      );
    }
    return {
      family: 6,
      address: fromBig(free6[Math.floor(this.random() * free6.length)]),
      prefixLength: config.ipv6SubnetLen,
    };
  }

  /**
   * The subnet of one family this node asks for: the one in its subnet.env when it fits the
   * config and no other lease holds it, else a random free one.
   */
  private pick<C extends Cidr4 | Cidr6>(
    config: NetworkConfig,
    taken: Taken[],
    previous: Cidr | undefined,
    family: 4 | 6,
  ): C {
    const fits = family === 4 ? this.fits4.bind(this) : this.fits6.bind(this);
    if (previous?.family === family) {
      const inUse = taken.some((t) => {
        const s = family === 4 ? t.subnet : t.subnet6;
        return s !== undefined && overlaps(s, previous);
      });
      if (inUse)
        this.log.info(
          { subnet: formatCidr(previous) },
          'the subnet in subnet.env is leased by another node: picking another',
        );
      else if (!fits(config, previous as never))
        this.log.warn(
          { subnet: formatCidr(previous) },
          'the subnet in subnet.env does not fit the network config: ignoring it',
        );
      else return previous as C;
    }
    return (family === 4 ? this.pickFree4(config, taken) : this.pickFree6(config, taken)) as C;
  }

  /**
   * Acquires this node's lease, in flannel's order: its existing lease (same public IP) if it
   * still fits the config; else the subnet from its subnet.env if free; else a random one of the
   * first free subnets. The create is atomic (create-if-absent): racing nodes never share a
   * subnet; the loser picks again. A store that cannot be reached (ERR_STORE_UNAVAILABLE) or
   * racers that keep winning (ERR_SUBNET_RETRIES) mean waiting and trying again, with backoff,
   * until it succeeds, the subnet space is full (ERR_SUBNET_NONE_FREE), or `signal` aborts.
   */
  async acquireLease(request: AcquireRequest): Promise<Lease> {
    let wait = this.acquireBackoff.initial;
    for (let attempt = 1; ; attempt++) {
      request.signal?.throwIfAborted();
      try {
        return await this.acquireOnce(request);
      } catch (err) {
        const retryable =
          err instanceof WeftError &&
          (err.code === SubnetErrorCode.unavailable || err.code === SubnetErrorCode.tooManyRetries);
        if (!retryable) throw err;
        const delay = Math.round(wait / 2 + this.random() * (wait / 2));
        this.log.warn(
          { err: err.message, attempt, retryInMs: delay },
          'acquiring a lease failed; retrying',
        );
        await abortableSleep(delay, request.signal);
        wait = Math.min(wait * 2, this.acquireBackoff.max);
      }
    }
  }

  private async acquireOnce(request: AcquireRequest): Promise<Lease> {
    const config = await this.getNetworkConfig();
    const value = leaseAttrsJson(request.attrs);
    for (let attempt = 0; attempt < this.raceRetries; attempt++) {
      const { leases, taken } = await this.listing();
      const own = leases.find((l) => sameNode(l.attrs, request.attrs));
      if (own) {
        if (this.compatible(config, own)) {
          // A reservation stays one: no TTL.
          const ttl = own.expiresAt === undefined ? 0 : this.ttl;
          await this.store.putSubnet(own.key, value, ttl);
          this.log.info(
            {
              subnet: own.subnet,
              subnet6: own.subnet6,
              publicIp: request.attrs.publicIp,
              publicIpv6: request.attrs.publicIpv6,
            },
            'reusing the lease this node already holds',
          );
          return {
            ...own,
            attrs: request.attrs,
            expiresAt: ttl ? this.now() + ttl * 1000 : undefined,
          };
        }
        this.log.warn(
          { subnet: own.subnet, subnet6: own.subnet6 },
          "this node's lease does not fit the network config any more: deleting it",
        );
        await this.store.deleteSubnet(own.key);
        continue;
      }
      const pick = {
        subnet: config.enableIpv4
          ? this.pick<Cidr4>(config, taken, request.previousSubnet, 4)
          : undefined,
        subnet6: config.enableIpv6
          ? this.pick<Cidr6>(config, taken, request.previousSubnet6, 6)
          : undefined,
      };
      const key = subnetKey(pick.subnet, pick.subnet6);
      if (await this.store.createSubnet(key, value, this.ttl)) {
        const lease: Lease = {
          key,
          attrs: request.attrs,
          expiresAt: this.now() + this.ttl * 1000,
          revision: 0,
        };
        if (pick.subnet) lease.subnet = formatCidr(pick.subnet);
        if (pick.subnet6) lease.subnet6 = formatCidr(pick.subnet6);
        this.log.info(
          {
            subnet: lease.subnet,
            subnet6: lease.subnet6,
            publicIp: request.attrs.publicIp,
            publicIpv6: request.attrs.publicIpv6,
          },
          'leased a subnet',
        );
        return lease;
      }
      // Another node created it first: look again, after a short random pause.
      await sleep(5 + this.random() * 20 * (attempt + 1));
    }
    throw new WeftError(
      SubnetErrorCode.tooManyRetries,
      `gave up leasing a subnet after ${this.raceRetries} tries: other nodes kept taking the subnets picked`,
    );
  }

  /** Writes the lease again with a fresh TTL; returns it with the new expiry. */
  async renewLease(lease: Lease): Promise<Lease> {
    const ttl = lease.expiresAt === undefined ? 0 : this.ttl;
    await this.store.putSubnet(lease.key, leaseAttrsJson(lease.attrs), ttl);
    return { ...lease, expiresAt: ttl ? this.now() + ttl * 1000 : undefined };
  }

  /** Deletes the lease from the store, freeing its subnet for another node. */
  async releaseLease(lease: Lease): Promise<void> {
    await this.store.deleteSubnet(lease.key);
    this.log.info({ subnet: describeLease(lease) }, 'released the lease');
  }

  /** Reserves a subnet for a node (an IPv6-only one: `undefined` and its IPv6 subnet): a lease with no TTL, never reassigned. */
  async reserve(subnet: Cidr4 | undefined, attrs: LeaseAttrs, subnet6?: Cidr6): Promise<Lease> {
    const key = subnetKey(subnet, subnet6);
    await this.store.putSubnet(key, leaseAttrsJson(attrs), 0);
    return {
      key,
      ...(subnet ? { subnet: formatCidr(subnet) } : {}),
      ...(subnet6 ? { subnet6: formatCidr(subnet6) } : {}),
      attrs,
      revision: 0,
    };
  }

  /**
   * Renews the lease before it expires (renewMarginSeconds ahead), retrying every
   * renewRetrySeconds on failure, for as long as it runs. Reservations need no renewal.
   */
  keepRenewed(
    lease: Lease,
    handlers: { onRenewed?(lease: Lease): void; onRenewFailed?(err: Error): void } = {},
  ): RenewalHandle {
    let current = lease;
    let timer: NodeJS.Timeout | undefined;
    let stopped = false;
    const schedule = (ms: number) => {
      if (stopped) return;
      timer = setTimeout(() => void renew(), Math.max(0, Math.min(ms, 2 ** 31 - 1)));
    };
    const delay = () =>
      current.expiresAt === undefined
        ? undefined
        : current.expiresAt - this.margin * 1000 - this.now();
    const renew = async () => {
      try {
        current = await this.renewLease(current);
        this.log.info(
          { subnet: describeLease(current), expiresAt: current.expiresAt },
          'lease renewed',
        );
        handlers.onRenewed?.(current);
        const next = delay();
        if (next !== undefined) schedule(next);
      } catch (err) {
        this.log.error(
          { subnet: describeLease(current), err: (err as Error).message },
          `renewing the lease failed: trying again in ${this.retry} s`,
        );
        handlers.onRenewFailed?.(err as Error);
        schedule(this.retry * 1000);
      }
    };
    const first = delay();
    if (first !== undefined) schedule(first);
    return {
      current: () => current,
      stop: () => {
        stopped = true;
        if (timer) clearTimeout(timer);
      },
    };
  }

  /**
   * Watches the other nodes' leases: first the snapshot (as `added`), then each change; see
   * LeaseWatcher. Kept for callers of the closure-era API: it starts a LeaseWatcher.
   */
  watchLeases(handlers: LeaseWatchHandlers, options: LeaseWatcherOptions = {}): LeaseWatch {
    return new LeaseWatcher(this, handlers, options).start();
  }
}
