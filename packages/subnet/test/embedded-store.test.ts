import { execFile, spawnSync } from 'node:child_process';
import { readdirSync, readFileSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { isWeftError } from '@weft/core';
import { tempDir, waitFor } from '@weft/testkit';
import { afterAll, describe, expect, it } from 'vitest';
import {
  EmbeddedStore,
  LeaseWatcher,
  SubnetManager,
  type SubnetStore,
  silentLogger,
} from '../src/index.js';
import { CONFIG, storeSuite } from './store-suite.js';

const execFileAsync = promisify(execFile);
const dir = tempDir('weft-embedded-');
afterAll(() => dir.remove());
let n = 0;

/** The pid of a process that has exited: what a lock left by a crashed agent holds. */
function deadPid(): number {
  const child = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))']);
  return Number(child.stdout.toString());
}

describe('the embedded store', () => {
  storeSuite({
    fresh: async () => new EmbeddedStore(join(dir.path, `store-${n++}.json`), { pollMs: 50 }),
    open: async (sameAs: SubnetStore) =>
      new EmbeddedStore((sameAs as EmbeddedStore).path, { pollMs: 50 }),
  });

  it('is shared safely by several processes: 12 agents racing, past a dead agent’s lock, get 12 subnets', async () => {
    const path = join(dir.path, 'shared', 'store.json');
    await new EmbeddedStore(path).putConfig(CONFIG);
    // A crashed agent's lock: every process sees its owner dead at once; only one may break it.
    writeFileSync(`${path}.lock`, String(deadPid()));
    const script = fileURLToPath(new URL('./fixtures/acquire.mjs', import.meta.url));
    const results = await Promise.all(
      Array.from({ length: 12 }, (_, i) =>
        execFileAsync(process.execPath, [script, path, `198.18.2.${i + 1}`]),
      ),
    );
    const subnets = results.map((r) => r.stdout.trim());
    expect(new Set(subnets).size).toBe(12);
    const stored = JSON.parse(readFileSync(path, 'utf8'));
    expect(Object.keys(stored.keys).filter((k) => k.startsWith('subnets/')).length).toBe(12);
    // No lock, breaker or temp file left behind.
    expect(readdirSync(join(dir.path, 'shared'))).toEqual(['store.json']);
  }, 60_000);

  it('refuses a truncated or corrupt file with an error naming it, never an empty network', async () => {
    const path = join(dir.path, 'corrupt.json');
    const store = new EmbeddedStore(path);
    await store.putConfig(CONFIG);
    const m = new SubnetManager(store, { logger: silentLogger });
    await m.acquireLease({ attrs: { publicIp: '198.18.0.1', backendType: 'udp' } });
    const whole = readFileSync(path, 'utf8');
    for (const damage of [
      () => truncateSync(path, Math.floor(whole.length / 2)),
      () => truncateSync(path, 0),
      () => writeFileSync(path, '{"format":"something else"}'),
      () => {
        const state = JSON.parse(whole);
        for (const e of Object.values(state.keys) as { value: unknown }[]) e.value = 42;
        writeFileSync(path, JSON.stringify(state));
      },
      () => {
        const state = JSON.parse(whole);
        state.history.push({ type: 'put', key: 7 });
        writeFileSync(path, JSON.stringify(state));
      },
    ]) {
      damage();
      const err = await m.listLeases().catch((e) => e);
      expect(isWeftError(err, 'ERR_STORE_CORRUPT')).toBe(true);
      expect(err.message).toContain(path);
      expect(err.message).toMatch(/will not treat it as an empty network/);
      await expect(
        m.acquireLease({ attrs: { publicIp: '198.18.0.2', backendType: 'udp' } }),
      ).rejects.toThrow(/is corrupt/);
      writeFileSync(path, whole);
    }
    // A watcher meeting a corrupt file reports it and keeps trying; it never sees an empty network.
    truncateSync(path, 10);
    const errors: unknown[] = [];
    const snapshots: number[] = [];
    const watch = m.watchLeases({
      onEvents: (events, initial) => {
        if (initial) snapshots.push(events.length);
      },
      onError: (err) => errors.push(err),
    });
    await waitFor(() => errors.length > 0, 'the corrupt-store error');
    expect(isWeftError(errors[0], 'ERR_STORE_CORRUPT')).toBe(true);
    expect(snapshots).toEqual([]);
    writeFileSync(path, whole);
    await waitFor(() => snapshots.length === 1, 'the snapshot once the file is restored');
    expect(snapshots).toEqual([1]);
    watch.close();
  });

  it('a LeaseWatcher warns once, naming both leases, when two nodes claim one public IP', async () => {
    const path = join(dir.path, 'dup.json');
    const store = new EmbeddedStore(path, { pollMs: 50 });
    await store.putConfig(CONFIG);
    const warnings: { msg: string; obj: Record<string, unknown> }[] = [];
    const m = new SubnetManager(store, {
      logger: { ...silentLogger, warn: (obj, msg) => warnings.push({ msg, obj: obj as never }) },
    });
    const own = await m.acquireLease({ attrs: { publicIp: '198.18.7.1', backendType: 'udp' } });
    const other = await m.acquireLease({ attrs: { publicIp: '198.18.7.2', backendType: 'udp' } });
    const seen: string[] = [];
    const watcher = new LeaseWatcher(
      m,
      { onEvents: (evs) => seen.push(...evs.map((e) => `${e.type} ${e.lease.subnet}`)) },
      { ownKey: own.key, ownPublicIp: '198.18.7.1' },
    ).start();
    await waitFor(() => seen.length === 1, 'the snapshot');
    expect(warnings.filter((w) => /two nodes claim/.test(w.msg))).toEqual([]);
    // A node that was given this node's address as its --public-ip, under its own subnet.
    await store.createSubnet('10.244.200.0-24', '{"PublicIP":"198.18.7.1","BackendType":"udp"}', 0);
    await waitFor(() => seen.length === 2, 'the second claimant');
    await store.putSubnet(other.key, '{"PublicIP":"198.18.7.2","BackendType":"udp"}', 0);
    await new Promise((r) => setTimeout(r, 200));
    const dup = warnings.filter((w) => /two nodes claim the public IP 198\.18\.7\.1/.test(w.msg));
    expect(dup.length).toBe(1);
    expect(dup[0].msg).toContain(`${own.key} (this node)`);
    expect(dup[0].msg).toContain('10.244.200.0-24');
    expect(dup[0].obj.leases).toEqual([`${own.key} (this node)`, '10.244.200.0-24']);
    watcher.close();
  });

  it('takes over a lock left by a process that died', async () => {
    const path = join(dir.path, 'stale.json');
    writeFileSync(`${path}.lock`, String(deadPid()));
    const store = new EmbeddedStore(path, { lockTimeoutMs: 2000 });
    await store.putConfig(CONFIG);
    expect(await store.getConfig()).toBe(CONFIG);
  });

  it('waits for a lock a live process holds, then gives up naming it', async () => {
    const path = join(dir.path, 'held.json');
    await new EmbeddedStore(path).putConfig(CONFIG);
    writeFileSync(`${path}.lock`, String(process.ppid));
    const store = new EmbeddedStore(path, { lockTimeoutMs: 300 });
    const err = await store.putConfig('{"Network": "10.1.0.0/16"}').catch((e) => e);
    expect(isWeftError(err, 'ERR_STORE_UNAVAILABLE')).toBe(true);
    expect(err.message).toContain(`could not lock the embedded store ${path} within 300 ms`);
    expect(err.message).toContain(`held by live process ${process.ppid}`);
    // Reads go on; the lock is left to its owner.
    expect(await store.getConfig()).toBe(CONFIG);
    expect(readFileSync(`${path}.lock`, 'utf8')).toBe(String(process.ppid));
  });

  it('tells a watcher that fell behind the kept history to re-list', async () => {
    const path = join(dir.path, 'history.json');
    const store = new EmbeddedStore(path, { historyLength: 5, pollMs: 50 });
    await store.putConfig(CONFIG);
    const { revision } = await store.listSubnets();
    for (let i = 1; i <= 8; i++)
      await store.putSubnet(`10.244.${i}.0-24`, '{"PublicIP":"198.18.0.1"}', 0);
    const reason = await new Promise<string>((resolve) =>
      store.watchSubnets(revision, { onEvents: () => undefined, onResync: resolve }),
    );
    expect(reason).toMatch(/history before revision \d+ is gone/);
    await store.close();
  });
});
