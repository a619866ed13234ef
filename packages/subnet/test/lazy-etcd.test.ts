import { mkdtempSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

// etcd3 is CommonJS: whatever of it (and of gRPC under it) was loaded is in require's cache.
const loaded = () =>
  Object.keys(createRequire(import.meta.url).cache).filter((p) =>
    /[\\/]node_modules[\\/](etcd3|@grpc[\\/]grpc-js)[\\/]/.test(p),
  );

describe('etcd3 is loaded only when the etcd store is used', () => {
  it('importing the package and using the embedded store loads neither etcd3 nor gRPC', async () => {
    const { EmbeddedStore, EtcdStore, SubnetManager } = await import('../src/index.js');
    const dir = mkdtempSync(join(tmpdir(), 'weft-lazy-etcd-'));
    try {
      const manager = new SubnetManager(new EmbeddedStore(join(dir, 'leases.json')));
      await manager.store.putConfig('{"Network": "10.244.0.0/16"}');
      expect((await manager.getNetworkConfig()).subnetLen).toBe(24);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    // Constructing an EtcdStore checks its options but connects to nothing yet.
    const store = new EtcdStore({ endpoints: ['http://127.0.0.1:9'], requestTimeoutMs: 200 });
    expect(loaded()).toEqual([]);
    // The first request loads the client; a refused connection is the store's usual error.
    await expect(store.getConfig()).rejects.toMatchObject({ code: 'ERR_STORE_UNAVAILABLE' });
    expect(loaded().length).toBeGreaterThan(0);
    await store.close();
    await expect(store.getConfig()).rejects.toThrow(/the store was closed/);
  });
});
