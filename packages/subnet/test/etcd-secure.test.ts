import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { isWeftError } from '@weft/core';
import { type EtcdServer, haveTools, startEtcd, tempDir, waitFor } from '@weft/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EtcdStore, type LeaseEvent, SubnetManager, silentLogger } from '../src/index.js';
import { CONFIG } from './store-suite.js';

// flannel's --etcd-cafile/-certfile/-keyfile and --etcd-username/-password, against a real etcd.
const canRun = haveTools(
  'the etcd TLS and auth tests',
  '/usr/bin/etcd',
  '/usr/bin/etcdctl',
  'openssl',
);

const attrs = (publicIp: string) => ({
  publicIp,
  backendType: 'vxlan',
  backendData: { VNI: 1, VtepMAC: '02:00:00:00:00:01' },
});
const manager = (store: EtcdStore) => new SubnetManager(store, { logger: silentLogger });

/** Acquires a lease through one store and sees it arrive on a watch through another. */
async function leaseAndWatch(writer: EtcdStore, reader: EtcdStore): Promise<string> {
  await writer.putConfig(CONFIG);
  const seen: string[] = [];
  const watch = manager(reader).watchLeases({
    onEvents: (evs: LeaseEvent[]) => seen.push(...evs.map((e) => `${e.type} ${e.lease.subnet}`)),
  });
  try {
    const lease = await manager(writer).acquireLease({ attrs: attrs('198.18.9.1') });
    await waitFor(() => seen.includes(`added ${lease.subnet}`), 'the lease on the watch');
    return lease.key;
  } finally {
    watch.close();
  }
}

const dir = tempDir('weft-etcd-tls-');
afterAll(() => dir.remove());

describe.skipIf(!canRun)('the etcd store over TLS with client certificates', () => {
  const file = (name: string) => join(dir.path, name);
  let etcd: EtcdServer | undefined;

  beforeAll(async () => {
    // A throwaway CA, a server certificate for 127.0.0.1 and a client certificate.
    const ssl = (...args: string[]) => execFileSync('openssl', args, { stdio: 'pipe' });
    const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
    const subj = (cn: string) => ['-days', '1', '-subj', `/CN=${cn}`];
    ssl('req', '-x509', ...ec, '-keyout', file('ca.key'), '-out', file('ca.crt'), ...subj('CA'));
    for (const [name, usage] of [
      ['server', 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n'],
      ['client', 'extendedKeyUsage=clientAuth\n'],
    ]) {
      writeFileSync(file(`${name}.ext`), usage);
      ssl('req', ...ec, '-keyout', file(`${name}.key`), '-out', file(`${name}.csr`), ...subj(name));
      const ca = ['-CA', file('ca.crt'), '-CAkey', file('ca.key'), '-CAcreateserial'];
      const ext = ['-extfile', file(`${name}.ext`), '-days', '1'];
      ssl('x509', '-req', '-in', file(`${name}.csr`), ...ca, ...ext, '-out', file(`${name}.crt`));
    }
    etcd = await startEtcd({
      tls: {
        caFile: file('ca.crt'),
        certFile: file('server.crt'),
        keyFile: file('server.key'),
        clientCertFile: file('client.crt'),
        clientKeyFile: file('client.key'),
      },
    });
  }, 60_000);
  afterAll(async () => {
    await etcd?.stop();
  });

  it('leases and watches with the CA, certificate and key as flannel takes them', async () => {
    const server = etcd!;
    expect(server.endpoint).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
    const tls = {
      caFile: file('ca.crt'),
      certFile: file('client.crt'),
      keyFile: file('client.key'),
    };
    const writer = new EtcdStore({ endpoints: [server.endpoint], ...tls });
    const reader = new EtcdStore({ endpoints: [server.endpoint], ...tls });
    try {
      const key = await leaseAndWatch(writer, reader);
      const out = await server.etcdctl([
        'get',
        `/coreos.com/network/subnets/${key}`,
        '--print-value-only',
      ]);
      expect(JSON.parse(out)).toMatchObject({ PublicIP: '198.18.9.1', BackendType: 'vxlan' });
    } finally {
      await writer.close();
      await reader.close();
    }
  });

  it('is refused without a client certificate, with an error naming the endpoint', async () => {
    const server = etcd!;
    const store = new EtcdStore({
      endpoints: [server.endpoint],
      caFile: file('ca.crt'),
      requestTimeoutMs: 2000,
    });
    try {
      const err = await store.getConfig().catch((e) => e);
      expect(isWeftError(err, 'ERR_STORE_UNAVAILABLE')).toBe(true);
      expect(err.message).toContain(`etcd get config failed (${server.endpoint})`);
    } finally {
      await store.close();
    }
  }, 15_000);

  it('refuses TLS options that cannot work before connecting', () => {
    const endpoints = ['https://127.0.0.1:2379'];
    const options = (o: object) => {
      try {
        new EtcdStore({ endpoints, ...o });
      } catch (err) {
        return isWeftError(err, 'ERR_STORE_OPTIONS') ? err.message : `other: ${err}`;
      }
      return 'accepted';
    };
    expect(options({ caFile: file('missing-ca.crt') })).toMatch(
      /etcd: cannot read the TLS file .*missing-ca\.crt: ENOENT/,
    );
    expect(options({ certFile: file('client.crt') })).toMatch(/certFile and keyFile go together/);
    expect(options({ password: 'x' })).toMatch(/a password needs a username/);
    expect(options({ endpoints: [] })).toMatch(/no endpoints given/);
  });
});

describe.skipIf(!canRun)('the etcd store with a username and password', () => {
  let etcd: EtcdServer | undefined;
  const root = ['--user=root:weft-root-pw'];

  beforeAll(async () => {
    etcd = await startEtcd();
    // As an operator sets flannel up: a role with read-write on flannel's prefix, a user in it.
    const ctl = etcd.etcdctl;
    await ctl(['user', 'add', 'root', '--new-user-password=weft-root-pw']);
    await ctl(['user', 'grant-role', 'root', 'root']);
    await ctl(['role', 'add', 'flannel']);
    await ctl([
      'role',
      'grant-permission',
      'flannel',
      '--prefix=true',
      'readwrite',
      '/coreos.com/network/',
    ]);
    await ctl(['user', 'add', 'flannel', '--new-user-password=flannel-pw']);
    await ctl(['user', 'grant-role', 'flannel', 'flannel']);
    await ctl(['auth', 'enable']);
  }, 60_000);
  afterAll(async () => {
    await etcd?.stop();
  });

  it('leases and watches as that user', async () => {
    const server = etcd!;
    const creds = { username: 'flannel', password: 'flannel-pw' };
    const writer = new EtcdStore({ endpoints: [server.endpoint], ...creds });
    const reader = new EtcdStore({ endpoints: [server.endpoint], ...creds });
    try {
      const key = await leaseAndWatch(writer, reader);
      const out = await server.etcdctl([
        ...root,
        'get',
        `/coreos.com/network/subnets/${key}`,
        '--print-value-only',
      ]);
      expect(JSON.parse(out)).toMatchObject({ PublicIP: '198.18.9.1' });
    } finally {
      await writer.close();
      await reader.close();
    }
  });

  it('says so when the password is wrong, or no user is given', async () => {
    const server = etcd!;
    for (const [creds, why] of [
      [{ username: 'flannel', password: 'wrong' }, /authentication failed/],
      [{}, /user name is empty|permission denied/],
    ] as const) {
      const store = new EtcdStore({
        endpoints: [server.endpoint],
        requestTimeoutMs: 3000,
        ...creds,
      });
      try {
        const err = await store.getConfig().catch((e) => e);
        expect(isWeftError(err, 'ERR_STORE_UNAVAILABLE')).toBe(true);
        expect(err.message).toContain(`etcd get config failed (${server.endpoint})`);
        expect(err.message).toMatch(why);
      } finally {
        await store.close();
      }
    }
  }, 20_000);
});
