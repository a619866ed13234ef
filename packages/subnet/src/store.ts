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

export interface StoreEvent {
  type: 'put' | 'delete';
  key: string;
  /** For put. */
  value?: string;
  revision: number;
  ttlSeconds?: number;
}

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

export interface StoreWatch {
  close(): void;
}

export interface SubnetStore {
  /** A short name for logs: "embedded /var/lib/weft/store.json", "etcd http://...". */
  readonly description: string;
  getConfig(): Promise<string | undefined>;
  putConfig(json: string): Promise<void>;
  /** Every lease key under subnets/, with the revision the listing is as of. */
  listSubnets(): Promise<{ values: StoredValue[]; revision: number }>;
  getSubnet(key: string): Promise<StoredValue | undefined>;
  /** Creates the key only if absent (atomically); ttlSeconds 0 means no TTL. */
  createSubnet(key: string, value: string, ttlSeconds: number): Promise<boolean>;
  /** Writes the key with a fresh TTL (renewal); ttlSeconds 0 means no TTL. */
  putSubnet(key: string, value: string, ttlSeconds: number): Promise<void>;
  deleteSubnet(key: string): Promise<void>;
  /** Watches subnets/ from `fromRevision` (exclusive). */
  watchSubnets(fromRevision: number, handlers: WatchHandlers): StoreWatch;
  close(): Promise<void>;
}

export const SUBNETS_PREFIX = 'subnets/';
