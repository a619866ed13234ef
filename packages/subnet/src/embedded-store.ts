import {
  closeSync,
  fsyncSync,
  linkSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { dirname } from 'node:path';
import { WeftError } from '@weft/core';
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
 * The embedded store: one JSON file that several agent processes on a host share. Every change
 * is a read-modify-write under an advisory lock file (created atomically with its owner's pid; a
 * lock whose owner died is broken, once), written crash-safely (temp file, fsync, rename, fsync of the directory).
 * It keeps revisions and a bounded history so watches work as they do on etcd: a watcher that
 * falls behind the kept history is told to re-list. TTLs expire keys, and the expiry is written
 * like any change, so every watcher sees the delete.
 *
 * A missing file is an empty store; a truncated or corrupt one is an error that names it, never
 * a silently empty network.
 */
interface Entry {
  value: string;
  modRevision: number;
  /** ms since the epoch; absent for no TTL. */
  expiresAt?: number;
}

interface State {
  format: 'weft-subnet-store/1';
  revision: number;
  /** Watchers behind this revision missed history and must re-list. */
  compactedRevision: number;
  config?: string;
  keys: Record<string, Entry>;
  history: StoreEvent[];
}

/** Options of a new {@link EmbeddedStore}. */
export interface EmbeddedStoreOptions {
  /** How many changes the history keeps for watchers (default 1000). */
  historyLength?: number;
  /** How often watchers look at the file (default 100 ms). */
  pollMs?: number;
  /** How long to wait for the lock before giving up (default 10 s). */
  lockTimeoutMs?: number;
  /** The clock, in milliseconds (default `Date.now`; TTLs count on it). */
  now?: () => number;
}

const FORMAT = 'weft-subnet-store/1';

function emptyState(): State {
  return { format: FORMAT, revision: 0, compactedRevision: 0, keys: {}, history: [] };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The pid in a lock file; undefined when there is none or it cannot be read. */
function lockOwner(path: string): number | undefined {
  try {
    const pid = Number(readFileSync(path, 'utf8'));
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

/** How old a breaker file must be to count as left by a process that died holding it. */
const STALE_BREAKER_MS = 5000;

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * The default store: one JSON file on the host that several agents share (a lock file around
 * each read-modify-write, crash-safe writes), with revisions, TTLs and watches as etcd has them.
 */
export class EmbeddedStore implements SubnetStore {
  readonly description: string;
  private readonly historyLength: number;
  private readonly pollMs: number;
  private readonly lockTimeoutMs: number;
  private readonly now: () => number;
  private readonly lockPath: string;
  /** Serialises this process's own changes; the lock file serialises processes. */
  private queue: Promise<unknown> = Promise.resolve();
  private readonly watches = new Set<{ close(): void }>();

  constructor(
    readonly path: string,
    options: EmbeddedStoreOptions = {},
  ) {
    this.description = `embedded ${path}`;
    this.historyLength = options.historyLength ?? 1000;
    this.pollMs = options.pollMs ?? 100;
    this.lockTimeoutMs = options.lockTimeoutMs ?? 10_000;
    this.now = options.now ?? Date.now;
    this.lockPath = `${path}.lock`;
    mkdirSync(dirname(path), { recursive: true });
  }

  /** Reads the file; ENOENT is an empty store, anything unreadable is an error naming the file. */
  private read(): State {
    let text: string;
    try {
      text = readFileSync(this.path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return emptyState();
      throw new WeftError(
        SubnetErrorCode.unavailable,
        `cannot read the embedded store ${this.path}: ${(err as Error).message}`,
        { cause: err },
      );
    }
    const corrupt = (why: string) =>
      new WeftError(
        SubnetErrorCode.corruptStore,
        `the embedded store ${this.path} is corrupt (${why}); weft will not treat it as an empty network: restore it from a backup, or remove it to start over (every node then leases again)`,
      );
    let state: State;
    try {
      state = JSON.parse(text) as State;
    } catch (err) {
      throw corrupt(
        text.length === 0 ? 'the file is empty' : `not JSON: ${(err as Error).message}`,
      );
    }
    if (typeof state !== 'object' || state === null || state.format !== FORMAT)
      throw corrupt('not a weft subnet store');
    if (
      !Number.isInteger(state.revision) ||
      !Number.isInteger(state.compactedRevision) ||
      (state.config !== undefined && typeof state.config !== 'string') ||
      typeof state.keys !== 'object' ||
      state.keys === null ||
      Array.isArray(state.keys) ||
      !Array.isArray(state.history)
    ) {
      throw corrupt('fields are missing or of the wrong type');
    }
    for (const [key, e] of Object.entries(state.keys)) {
      if (
        typeof e !== 'object' ||
        e === null ||
        typeof e.value !== 'string' ||
        !Number.isInteger(e.modRevision) ||
        (e.expiresAt !== undefined && !Number.isFinite(e.expiresAt))
      )
        throw corrupt(`the entry ${JSON.stringify(key)} is malformed`);
    }
    for (const e of state.history) {
      if (
        typeof e !== 'object' ||
        e === null ||
        (e.type !== 'put' && e.type !== 'delete') ||
        typeof e.key !== 'string' ||
        !Number.isInteger(e.revision)
      )
        throw corrupt('an entry of the change history is malformed');
    }
    return state;
  }

  /** Writes the whole state crash-safely: temp file, fsync, rename over, fsync the directory. */
  private write(state: State): void {
    const tmp = `${this.path}.tmp-${process.pid}-${Math.random().toString(36).slice(2)}`;
    try {
      const fd = openSync(tmp, 'w', 0o600);
      try {
        writeSync(fd, `${JSON.stringify(state)}\n`);
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
      renameSync(tmp, this.path);
    } catch (err) {
      // The old file stays whole; only the half-written temp goes.
      try {
        rmSync(tmp, { force: true });
      } catch {}
      throw new WeftError(
        SubnetErrorCode.unavailable,
        `cannot write the embedded store ${this.path}: ${(err as Error).message}`,
        { cause: err },
      );
    }
    const dir = openSync(dirname(this.path), 'r');
    try {
      fsyncSync(dir);
    } finally {
      closeSync(dir);
    }
  }

  private async lock(): Promise<void> {
    const deadline = Date.now() + this.lockTimeoutMs;
    let wait = 2;
    for (;;) {
      if (this.tryLock()) return;
      this.breakStaleLock();
      if (Date.now() > deadline) {
        throw new WeftError(
          SubnetErrorCode.unavailable,
          `could not lock the embedded store ${this.path} within ${this.lockTimeoutMs} ms (${this.lockPath} is held by live process ${lockOwner(this.lockPath) ?? 'unknown'})`,
        );
      }
      await sleep(wait + Math.random() * wait);
      wait = Math.min(wait * 2, 50);
    }
  }

  /**
   * Creates the lock with our pid already in it: written to a temp file, then hard-linked into
   * place (link fails if the lock exists), so nobody ever reads a lock without its owner.
   */
  private tryLock(): boolean {
    const tmp = `${this.lockPath}.${process.pid}-${Math.random().toString(36).slice(2)}`;
    try {
      writeFileSync(tmp, String(process.pid), { mode: 0o600 });
      linkSync(tmp, this.lockPath);
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
      throw new WeftError(
        SubnetErrorCode.unavailable,
        `cannot lock the embedded store ${this.path} (${this.lockPath}): ${(err as Error).message}`,
        { cause: err },
      );
    } finally {
      rmSync(tmp, { force: true });
    }
  }

  /**
   * Removes a lock whose owner died mid-change. Only under a second lock (`.break`), and only if
   * the lock still names the dead owner: two processes that both saw it dead cannot each remove
   * it, the second deleting the lock the first has since taken.
   */
  private breakStaleLock(): void {
    const owner = lockOwner(this.lockPath);
    if (owner === undefined || pidAlive(owner)) return;
    const breaker = `${this.lockPath}.break`;
    try {
      closeSync(openSync(breaker, 'wx', 0o600));
    } catch {
      // Held for microseconds; one this old was left by a process that died holding it.
      try {
        if (Date.now() - statSync(breaker).mtimeMs > STALE_BREAKER_MS)
          rmSync(breaker, { force: true });
      } catch {}
      return;
    }
    try {
      if (lockOwner(this.lockPath) === owner) rmSync(this.lockPath, { force: true });
    } finally {
      rmSync(breaker, { force: true });
    }
  }

  private unlock(): void {
    // Only our own: this process's queue holds it once at a time.
    if (lockOwner(this.lockPath) === process.pid) rmSync(this.lockPath, { force: true });
  }

  /** Runs a change under the lock; expired keys are removed (and recorded) first. */
  private mutate<T>(
    change: (state: State, record: (e: Omit<StoreEvent, 'revision'>) => number) => T,
  ): Promise<T> {
    const run = async () => {
      await this.lock();
      try {
        const state = this.read();
        let changed = false;
        const record = (e: Omit<StoreEvent, 'revision'>) => {
          changed = true;
          state.revision++;
          state.history.push({ ...e, revision: state.revision });
          return state.revision;
        };
        this.expire(state, record);
        const result = change(state, record);
        if (changed) {
          const excess = state.history.length - this.historyLength;
          if (excess > 0) {
            state.compactedRevision = state.history[excess - 1].revision;
            state.history.splice(0, excess);
          }
          this.write(state);
        }
        return result;
      } finally {
        this.unlock();
      }
    };
    const next = this.queue.then(run, run);
    this.queue = next.catch(() => undefined);
    return next;
  }

  private expire(state: State, record: (e: Omit<StoreEvent, 'revision'>) => number): void {
    const now = this.now();
    for (const [key, entry] of Object.entries(state.keys)) {
      if (entry.expiresAt !== undefined && entry.expiresAt <= now) {
        delete state.keys[key];
        record({ type: 'delete', key: key.slice(SUBNETS_PREFIX.length) });
      }
    }
  }

  private ttlOf(entry: Entry): number | undefined {
    return entry.expiresAt === undefined
      ? undefined
      : Math.max(0, Math.ceil((entry.expiresAt - this.now()) / 1000));
  }

  private live(entry: Entry | undefined): entry is Entry {
    return entry !== undefined && (entry.expiresAt === undefined || entry.expiresAt > this.now());
  }

  async getConfig(): Promise<string | undefined> {
    return this.read().config;
  }

  async putConfig(json: string): Promise<void> {
    await this.mutate((state, record) => {
      state.config = json;
      record({ type: 'put', key: 'config', value: json });
    });
  }

  async listSubnets(): Promise<{ values: StoredValue[]; revision: number }> {
    const state = this.read();
    const values: StoredValue[] = [];
    for (const [key, entry] of Object.entries(state.keys)) {
      if (!key.startsWith(SUBNETS_PREFIX) || !this.live(entry)) continue;
      values.push({
        key: key.slice(SUBNETS_PREFIX.length),
        value: entry.value,
        modRevision: entry.modRevision,
        ttlSeconds: this.ttlOf(entry),
      });
    }
    return { values, revision: state.revision };
  }

  async getSubnet(key: string): Promise<StoredValue | undefined> {
    const entry = this.read().keys[SUBNETS_PREFIX + key];
    if (!this.live(entry)) return undefined;
    return {
      key,
      value: entry.value,
      modRevision: entry.modRevision,
      ttlSeconds: this.ttlOf(entry),
    };
  }

  createSubnet(key: string, value: string, ttlSeconds: number): Promise<boolean> {
    return this.mutate((state, record) => {
      const full = SUBNETS_PREFIX + key;
      if (state.keys[full] !== undefined) return false;
      const expiresAt = ttlSeconds > 0 ? this.now() + ttlSeconds * 1000 : undefined;
      const revision = record({
        type: 'put',
        key,
        value,
        ttlSeconds: ttlSeconds > 0 ? ttlSeconds : undefined,
      });
      state.keys[full] = {
        value,
        modRevision: revision,
        ...(expiresAt === undefined ? {} : { expiresAt }),
      };
      return true;
    });
  }

  async putSubnet(key: string, value: string, ttlSeconds: number): Promise<void> {
    await this.mutate((state, record) => {
      const expiresAt = ttlSeconds > 0 ? this.now() + ttlSeconds * 1000 : undefined;
      const revision = record({
        type: 'put',
        key,
        value,
        ttlSeconds: ttlSeconds > 0 ? ttlSeconds : undefined,
      });
      state.keys[SUBNETS_PREFIX + key] = {
        value,
        modRevision: revision,
        ...(expiresAt === undefined ? {} : { expiresAt }),
      };
    });
  }

  async deleteSubnet(key: string): Promise<void> {
    await this.mutate((state, record) => {
      const full = SUBNETS_PREFIX + key;
      if (state.keys[full] === undefined) return;
      delete state.keys[full];
      record({ type: 'delete', key });
    });
  }

  /** Removes keys whose TTL ran out now, so watchers see their deletes without waiting for a write. */
  async expireNow(): Promise<void> {
    await this.mutate(() => undefined);
  }

  watchSubnets(fromRevision: number, handlers: WatchHandlers): StoreWatch {
    let last = fromRevision;
    let closed = false;
    let busy = false;
    const tick = async () => {
      if (closed || busy) return;
      busy = true;
      try {
        const state = this.read();
        const now = this.now();
        if (
          Object.values(state.keys).some((e) => e.expiresAt !== undefined && e.expiresAt <= now)
        ) {
          await this.expireNow();
          return;
        }
        if (state.revision <= last) return;
        if (last < state.compactedRevision) {
          closed = true;
          clearInterval(timer);
          this.watches.delete(watch);
          handlers.onResync(`the history before revision ${state.compactedRevision} is gone`);
          return;
        }
        const events = state.history.filter((e) => e.revision > last && e.key !== 'config');
        last = state.revision;
        if (events.length > 0) handlers.onEvents(events);
      } catch (err) {
        handlers.onError?.(err as Error);
      } finally {
        busy = false;
      }
    };
    const timer = setInterval(() => void tick(), this.pollMs);
    const watch = {
      close: () => {
        closed = true;
        clearInterval(timer);
        this.watches.delete(watch);
      },
    };
    this.watches.add(watch);
    void tick();
    return watch;
  }

  async close(): Promise<void> {
    for (const w of [...this.watches]) w.close();
    await this.queue;
  }
}
