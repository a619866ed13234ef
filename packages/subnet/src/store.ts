/**
 * What the lease manager needs of a store: flannel's key layout over a small key-value API with
 * revisions, TTLs and watches. Keys are relative to the network prefix: `config` and
 * `subnets/<subnet key>`.
 */
export interface StoredValue {
  key: string;
  value: string;
  /** The revision of the last change to this key. */
  modRevision: number;
  /** Seconds left when the key has a TTL; undefined for one without (a reservation). */
  ttlSeconds?: number;
}

/** A change under `subnets/`, as a store's watch reports it. */
export interface StoreEvent {
  type: 'put' | 'delete';
  key: string;
  /** For put. */
  value?: string;
  revision: number;
  ttlSeconds?: number;
}

/** Callbacks of a store watch. */
export interface WatchHandlers {
  /** Changes in revision order. */
  onEvents(events: StoreEvent[]): void;
  /**
   * The watch may have missed changes (the store compacted past its revision, or the connection
   * dropped and came back): the caller must re-list and reconcile. The watch goes on from the
   * revision `list` reports.
   */
  onResync(reason: string): void;
  /** The store cannot be reached for now; the watch keeps retrying. */
  onError?(err: Error): void;
}

/** A running store watch. */
export interface StoreWatch {
  /** Stops it; no handler runs after. */
  close(): void;
}

/**
 * A store of flannel's keys: the network config and one key per subnet lease, with revisions,
 * TTLs and watches. {@link EmbeddedStore} and {@link EtcdStore} implement it.
 */
export interface SubnetStore {
  /** A short name for logs: "embedded /var/lib/weft/store.json", "etcd http://...". */
  readonly description: string;
  /** The network config JSON (`<prefix>/config`), or undefined when there is none. */
  getConfig(): Promise<string | undefined>;
  /** Writes the network config JSON. */
  putConfig(json: string): Promise<void>;
  /** Every lease key under subnets/, with the revision the listing is as of. */
  listSubnets(): Promise<{ values: StoredValue[]; revision: number }>;
  /** One lease key's value, or undefined. */
  getSubnet(key: string): Promise<StoredValue | undefined>;
  /** Creates the key only if absent (atomically); ttlSeconds 0 means no TTL. */
  createSubnet(key: string, value: string, ttlSeconds: number): Promise<boolean>;
  /** Writes the key with a fresh TTL (renewal); ttlSeconds 0 means no TTL. */
  putSubnet(key: string, value: string, ttlSeconds: number): Promise<void>;
  /** Deletes a lease key (an absent one is not an error). */
  deleteSubnet(key: string): Promise<void>;
  /** Watches subnets/ from `fromRevision` (exclusive). */
  watchSubnets(fromRevision: number, handlers: WatchHandlers): StoreWatch;
  /** Ends every watch and releases the store's resources (connections, file handles). */
  close(): Promise<void>;
}

export const SUBNETS_PREFIX = 'subnets/';
