import { readFileSync } from 'node:fs';
import { WeftError } from '@weft/core';
import type { Etcd3, IOptions, IWatchResponse, Watcher } from 'etcd3';
import { SubnetErrorCode } from './errors.js';
import {
  type StoredValue,
  type StoreEvent,
  type StoreWatch,
  SUBNETS_PREFIX,
  type SubnetStore,
  type WatchHandlers,
} from './store.js';

/**
 * The etcd v3 store, in flannel's layout: `<prefix>/config` and `<prefix>/subnets/<key>`,
 * default prefix `/coreos.com/network`, lease TTLs as etcd leases (a key without one is a
 * reservation), create-if-absent as a transaction on the key's version. `etcdctl` and flannel
 * itself see a weft cluster as a flannel cluster.
 */
export interface EtcdStoreOptions {
  /** e.g. ["http://127.0.0.1:2379"]. */
  endpoints: string[];
  /** Default `/coreos.com/network` (flannel's). */
  prefix?: string;
  /** TLS, as flannel's --etcd-cafile / --etcd-certfile / --etcd-keyfile. */
  caFile?: string;
  certFile?: string;
  keyFile?: string;
  /** As flannel's --etcd-username / --etcd-password. */
  username?: string;
  password?: string;
  /** Deadline of each request (default 5 s); watches have none. */
  requestTimeoutMs?: number;
}

/** flannel's default key prefix (`--etcd-prefix`). */
export const DEFAULT_ETCD_PREFIX = '/coreos.com/network';

let etcd3: Promise<typeof import('etcd3')> | undefined;

/** etcd3 (and gRPC under it) is loaded on first use, so the embedded store's users never load it. */
function loadEtcd3(): Promise<typeof import('etcd3')> {
  etcd3 ??= import('etcd3').catch((err: Error) => {
    etcd3 = undefined;
    throw new WeftError(
      SubnetErrorCode.unavailable,
      `etcd: cannot load the etcd3 client, a dependency of @weft/subnet (${err.message}): reinstall @weft/subnet`,
      { cause: err },
    );
  });
  return etcd3;
}

/** The key just past every key with this prefix (etcd's range end for a prefix). */
function prefixEnd(prefix: string): Buffer {
  const b = Buffer.from(prefix);
  for (let i = b.length - 1; i >= 0; i--) {
    if (b[i] < 0xff) {
      b[i]++;
      return b.subarray(0, i + 1);
    }
  }
  return Buffer.from([0]);
}

/**
 * The etcd v3 store in flannel's layout (see {@link EtcdStoreOptions}). The etcd3 client, and
 * gRPC under it, is loaded on the first request, not when this package is imported.
 */
export class EtcdStore implements SubnetStore {
  readonly description: string;
  readonly prefix: string;
  private clientPromise: Promise<Etcd3> | undefined;
  private closed = false;
  private readonly clientOptions: IOptions;
  private readonly watches = new Set<StoreWatch>();
  private readonly leaseDeadlines = new Map<string, Promise<number>>();

  constructor(readonly options: EtcdStoreOptions) {
    this.prefix = `${(options.prefix ?? DEFAULT_ETCD_PREFIX).replace(/\/+$/, '')}/`;
    this.description = `etcd ${options.endpoints.join(',')} ${this.prefix}`;
    const timeout = options.requestTimeoutMs ?? 5000;
    const config: IOptions = {
      hosts: options.endpoints,
      dialTimeout: timeout,
      defaultCallOptions: (context) => (context.isStream ? {} : { deadline: Date.now() + timeout }),
    };
    if (options.endpoints.length === 0)
      throw new WeftError(SubnetErrorCode.storeOptions, 'etcd: no endpoints given');
    if (Boolean(options.certFile) !== Boolean(options.keyFile))
      throw new WeftError(
        SubnetErrorCode.storeOptions,
        'etcd: certFile and keyFile go together (a client certificate and its key)',
      );
    if (options.password && !options.username)
      throw new WeftError(SubnetErrorCode.storeOptions, 'etcd: a password needs a username');
    if (options.caFile || options.certFile) {
      const read = (file: string) => {
        try {
          return readFileSync(file);
        } catch (err) {
          throw new WeftError(
            SubnetErrorCode.storeOptions,
            `etcd: cannot read the TLS file ${file}: ${(err as Error).message}`,
            { cause: err },
          );
        }
      };
      config.credentials = {
        // No CA file: the system's roots, as flannel does (grpc takes null for them).
        rootCertificate: (options.caFile ? read(options.caFile) : null) as Buffer,
        ...(options.keyFile ? { privateKey: read(options.keyFile) } : {}),
        ...(options.certFile ? { certChain: read(options.certFile) } : {}),
      };
    }
    if (options.username)
      config.auth = { username: options.username, password: options.password ?? '' };
    this.clientOptions = config;
  }

  /** The request client, made on first use (loading etcd3 then). */
  private client(): Promise<Etcd3> {
    if (this.closed) return Promise.reject(new Error('the store was closed'));
    this.clientPromise ??= loadEtcd3().then(({ Etcd3 }) => new Etcd3(this.clientOptions));
    return this.clientPromise;
  }

  /** Runs one request, turning etcd's failures into a WeftError that says which store. */
  private async call<T>(what: string, fn: (client: Etcd3) => Promise<T>): Promise<T> {
    try {
      return await fn(await this.client());
    } catch (err) {
      throw new WeftError(
        SubnetErrorCode.unavailable,
        `etcd ${what} failed (${this.options.endpoints.join(', ')}): ${(err as Error).message}`,
        { cause: err },
      );
    }
  }

  /**
   * Seconds left on an etcd lease. Each lease's deadline is looked up once and remembered (in
   * flight too): renewals grant a new lease rather than extend one, as flannel's do, so a
   * deadline never moves, and a listing costs no request per key after the first.
   */
  private async ttlOf(lease: string): Promise<number | undefined> {
    if (!lease || lease === '0') return undefined;
    let deadline = this.leaseDeadlines.get(lease);
    if (!deadline) {
      deadline = this.client()
        .then((client) => client.leaseClient.leaseTimeToLive({ ID: lease }))
        .then((res) => Date.now() + Math.max(Number(res.TTL), 0) * 1000);
      deadline.catch(() => this.leaseDeadlines.delete(lease));
      this.leaseDeadlines.set(lease, deadline);
      // Oldest first: a lease not seen for 4096 newer ones is long replaced.
      for (const old of this.leaseDeadlines.keys()) {
        if (this.leaseDeadlines.size <= 4096) break;
        this.leaseDeadlines.delete(old);
      }
    }
    return Math.max(0, Math.ceil(((await deadline) - Date.now()) / 1000));
  }

  getConfig(): Promise<string | undefined> {
    return this.call(
      'get config',
      async (etcd) => (await etcd.get(`${this.prefix}config`).string()) ?? undefined,
    );
  }

  async putConfig(json: string): Promise<void> {
    await this.call('put config', (etcd) => etcd.put(`${this.prefix}config`).value(json).exec());
  }

  listSubnets(): Promise<{ values: StoredValue[]; revision: number }> {
    return this.call('list subnets', async (etcd) => {
      const key = `${this.prefix}${SUBNETS_PREFIX}`;
      const res = await etcd.kv.range({ key: Buffer.from(key), range_end: prefixEnd(key) });
      const values = await Promise.all(
        res.kvs.map(
          async (kv): Promise<StoredValue> => ({
            key: kv.key.toString().slice(key.length),
            value: kv.value.toString(),
            modRevision: Number(kv.mod_revision),
            ttlSeconds: await this.ttlOf(kv.lease),
          }),
        ),
      );
      return { values, revision: Number(res.header.revision) };
    });
  }

  getSubnet(key: string): Promise<StoredValue | undefined> {
    return this.call('get subnet', async (etcd) => {
      const res = await etcd.kv.range({
        key: Buffer.from(`${this.prefix}${SUBNETS_PREFIX}${key}`),
      });
      const kv = res.kvs[0];
      if (!kv) return undefined;
      return {
        key,
        value: kv.value.toString(),
        modRevision: Number(kv.mod_revision),
        ttlSeconds: await this.ttlOf(kv.lease),
      };
    });
  }

  createSubnet(key: string, value: string, ttlSeconds: number): Promise<boolean> {
    return this.call('create subnet', async (etcd) => {
      const full = `${this.prefix}${SUBNETS_PREFIX}${key}`;
      const lease =
        ttlSeconds > 0 ? (await etcd.leaseClient.leaseGrant({ TTL: ttlSeconds })).ID : '0';
      const res = await etcd.kv.txn({
        compare: [{ key: Buffer.from(full), target: 'Version', result: 'Equal', version: 0 }],
        success: [{ request_put: { key: Buffer.from(full), value: Buffer.from(value), lease } }],
        failure: [],
      });
      if (!res.succeeded && lease !== '0') await etcd.leaseClient.leaseRevoke({ ID: lease });
      return res.succeeded;
    });
  }

  async putSubnet(key: string, value: string, ttlSeconds: number): Promise<void> {
    await this.call('update subnet', async (etcd) => {
      // As flannel: a fresh lease per renewal; the old one runs out unattached.
      const lease =
        ttlSeconds > 0 ? (await etcd.leaseClient.leaseGrant({ TTL: ttlSeconds })).ID : '0';
      await etcd.kv.put({
        key: Buffer.from(`${this.prefix}${SUBNETS_PREFIX}${key}`),
        value: Buffer.from(value),
        lease,
      });
    });
  }

  async deleteSubnet(key: string): Promise<void> {
    await this.call('delete subnet', (etcd) =>
      etcd.kv.deleteRange({ key: Buffer.from(`${this.prefix}${SUBNETS_PREFIX}${key}`) }),
    );
  }

  /**
   * Watches from a revision. etcd's client reconnects on its own, but can skip changes across a
   * second drop; so any reconnection (and any compaction) is reported as a resync, and the
   * caller re-lists: nothing is missed, and its diff emits nothing twice.
   *
   * Each watch has a client (one gRPC stream) of its own: etcd3's watch manager multiplexes every
   * watcher of a client on one stream and loses track of them when etcd cancels one at creation
   * (a compacted start revision), then throws from a stream handler (`Failed to find watcher for
   * IWatchResponse`), which no caller can catch. Alone on its stream a watch cannot disturb
   * another, and whatever its manager still throws is turned into a resync here.
   */
  watchSubnets(fromRevision: number, handlers: WatchHandlers): StoreWatch {
    const key = `${this.prefix}${SUBNETS_PREFIX}`;
    let client: Etcd3 | undefined;
    let watcher: Watcher | undefined;
    let closed = false;
    let wasDisconnected = false;
    const resync = (reason: string) => {
      if (closed) return;
      watch.close();
      handlers.onResync(reason);
    };
    const watch: StoreWatch = {
      close: () => {
        if (closed) return;
        closed = true;
        this.watches.delete(watch);
        watcher?.removeAllListeners();
        watcher?.on('error', () => undefined);
        // Closing the client ends the stream; the cancel is only manners.
        void Promise.resolve(watcher?.cancel())
          .catch(() => undefined)
          .finally(() => client?.close());
        setTimeout(() => client?.close(), 1000).unref();
      },
    };
    this.watches.add(watch);
    loadEtcd3()
      .then(({ Etcd3 }) => {
        if (closed) return undefined;
        client = new Etcd3(this.clientOptions);
        guardWatchManager(client, (err) => resync(`etcd's watch client failed: ${err.message}`));
        return client
          .watch()
          .prefix(key)
          .startRevision(String(fromRevision + 1))
          .create();
      })
      .then((w) => {
        if (!w) return;
        watcher = w;
        if (closed) {
          void w.cancel().catch(() => undefined);
          return;
        }
        // Responses are handled one at a time, in order: a put's TTL is looked up first.
        let chain = Promise.resolve();
        w.on('data', (res: IWatchResponse) => {
          chain = chain
            .then(async () => {
              if (closed) return;
              if (res.compact_revision && res.compact_revision !== '0') {
                resync(`etcd compacted history to revision ${res.compact_revision}`);
                return;
              }
              const events: StoreEvent[] = [];
              for (const e of res.events) {
                const event: StoreEvent = {
                  type: e.type === 'Put' ? 'put' : 'delete',
                  key: e.kv.key.toString().slice(key.length),
                  revision: Number(e.kv.mod_revision),
                };
                if (e.type === 'Put') {
                  event.value = e.kv.value.toString();
                  try {
                    event.ttlSeconds = await this.ttlOf(e.kv.lease);
                  } catch (err) {
                    // Without its TTL the lease would pass for a reservation: re-list instead.
                    resync(`etcd lease lookup failed: ${(err as Error).message}`);
                    return;
                  }
                }
                events.push(event);
              }
              if (!closed && events.length > 0) handlers.onEvents(events);
            })
            // A handler that throws must not become an unhandled rejection: re-list instead.
            .catch((err: Error) => resync(`handling an etcd watch event failed: ${err.message}`));
        });
        w.on('disconnected', (err: Error) => {
          wasDisconnected = true;
          handlers.onError?.(
            new WeftError(
              SubnetErrorCode.unavailable,
              `etcd watch disconnected (${this.options.endpoints.join(', ')}): ${err?.message ?? 'stream ended'}; reconnecting`,
            ),
          );
        });
        w.on('connected', () => {
          if (wasDisconnected) resync('the etcd watch reconnected');
        });
        w.on('error', (err: Error) => {
          // etcd cancels a watch whose start revision was compacted, often without saying why:
          // reading at that revision tells.
          this.client()
            .then((c) => c.kv.range({ key: Buffer.from(key), revision: String(fromRevision + 1) }))
            .then(
              () => resync(`etcd watch failed: ${err.message}`),
              (probe: Error) =>
                resync(
                  /compacted/i.test(probe.message)
                    ? `etcd compacted history past revision ${fromRevision}`
                    : `etcd watch failed: ${err.message}`,
                ),
            );
        });
      })
      .catch((err: Error) => {
        if (closed) return;
        handlers.onError?.(
          new WeftError(SubnetErrorCode.unavailable, `etcd watch failed to start: ${err.message}`),
        );
        setTimeout(() => resync('the etcd watch could not start'), 1000);
      });
    return watch;
  }

  /** etcd's revision right now (for compaction in tests and tools). */
  async revision(): Promise<number> {
    return this.call('status', async (etcd) =>
      Number((await etcd.kv.range({ key: Buffer.from(`${this.prefix}config`) })).header.revision),
    );
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const w of [...this.watches]) w.close();
    const client = this.clientPromise;
    this.clientPromise = undefined;
    if (client) (await client.catch(() => undefined))?.close();
  }
}

/**
 * etcd3's watch manager throws ClientRuntimeError from its stream's 'data' handler when its
 * bookkeeping and etcd's disagree; nothing can catch that but a wrapper around those handlers.
 * Wrapped, the throw reaches `onFailure` instead (the watch re-lists on a fresh client).
 */
function guardWatchManager(client: Etcd3, onFailure: (err: Error) => void): void {
  const manager = (client as unknown as { watchManager?: Record<string, unknown> }).watchManager;
  if (!manager) return;
  for (const name of ['handleResponse', 'handleCreatedResponse']) {
    const original = manager[name];
    if (typeof original !== 'function') continue;
    manager[name] = function guarded(this: unknown, ...args: unknown[]) {
      try {
        return original.apply(this, args);
      } catch (err) {
        onFailure(err as Error);
      }
    };
  }
}
