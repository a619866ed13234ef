import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { promisify } from 'node:util';
import type { Netns } from './netns.js';
import { tempDir } from './tools.js';

const execFileAsync = promisify(execFile);

/**
 * A real etcd (Debian's etcd-server) for tests: a temporary data directory, free ports, started
 * and waited for until healthy; kill/restart on the same data for fault tests; removed on stop.
 */
export interface EtcdServer {
  /** e.g. http://127.0.0.1:23791 */
  endpoint: string;
  dataDir: string;
  /** Runs etcdctl (API v3) against this server. */
  etcdctl(args: string[]): Promise<string>;
  /** SIGKILL, keeping the data: a crash. */
  kill(): Promise<void>;
  /** Starts again on the same data and ports, and waits until healthy. */
  restart(): Promise<void>;
  /** Compacts history up to `revision` (watchers behind it must re-list). */
  compact(revision: number): Promise<void>;
  /** Stops it and removes its data. */
  stop(): Promise<void>;
}

export interface EtcdOptions {
  /** Run inside this namespace, listening on `host` there. */
  netns?: Netns;
  /** Listen address (default 127.0.0.1). */
  host?: string;
  clientPort?: number;
  peerPort?: number;
  /**
   * Serve clients over TLS (https) with this certificate and key, trusting `caFile`; with
   * `clientCertFile`/`clientKeyFile`, clients must present a certificate (etcdctl uses that one).
   */
  tls?: {
    caFile: string;
    certFile: string;
    keyFile: string;
    clientCertFile?: string;
    clientKeyFile?: string;
  };
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}

const live = new Set<ChildProcess>();
process.once('exit', () => {
  for (const c of live) c.kill('SIGKILL');
});

export async function startEtcd(options: EtcdOptions = {}): Promise<EtcdServer> {
  const host = options.host ?? '127.0.0.1';
  const clientPort = options.clientPort ?? (await freePort());
  const peerPort = options.peerPort ?? (await freePort());
  const dir = tempDir('weft-etcd-');
  const tls = options.tls;
  const endpoint = `${tls ? 'https' : 'http'}://${host}:${clientPort}`;
  const argv = [
    '/usr/bin/etcd',
    '--name',
    'weft-test',
    '--data-dir',
    `${dir.path}/data`,
    '--listen-client-urls',
    endpoint,
    '--advertise-client-urls',
    endpoint,
    '--listen-peer-urls',
    `http://${host}:${peerPort}`,
    '--initial-advertise-peer-urls',
    `http://${host}:${peerPort}`,
    '--initial-cluster',
    `weft-test=http://${host}:${peerPort}`,
    '--log-level',
    'error',
  ];
  const tlsArgs: string[] = [];
  if (tls) {
    argv.push('--cert-file', tls.certFile, '--key-file', tls.keyFile);
    argv.push('--trusted-ca-file', tls.caFile);
    tlsArgs.push(`--cacert=${tls.caFile}`);
    if (tls.clientCertFile && tls.clientKeyFile) {
      argv.push('--client-cert-auth');
      tlsArgs.push(`--cert=${tls.clientCertFile}`, `--key=${tls.clientKeyFile}`);
    }
  }
  let child: ChildProcess | undefined;
  const etcdctl = async (args: string[]) => {
    const cmd = ['/usr/bin/etcdctl', `--endpoints=${endpoint}`, ...tlsArgs, ...args];
    const run = options.netns
      ? options.netns.exec(cmd, { timeoutMs: 15_000 })
      : execFileAsync(cmd[0], cmd.slice(1), {
          env: { ...process.env, ETCDCTL_API: '3' },
          timeout: 15_000,
        });
    return (await run).stdout;
  };
  const healthy = async () => {
    const deadline = Date.now() + 15_000;
    for (;;) {
      try {
        await etcdctl(['endpoint', 'health']);
        return;
      } catch (err) {
        if (child && child.exitCode !== null) throw new Error(`etcd exited with ${child.exitCode}`);
        if (Date.now() > deadline)
          throw new Error(`etcd at ${endpoint} did not become healthy: ${(err as Error).message}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  };
  const launch = async () => {
    child = options.netns
      ? options.netns.spawn(argv, { stdio: 'ignore' })
      : spawn(argv[0], argv.slice(1), { stdio: 'ignore' });
    const c = child;
    live.add(c);
    c.once('exit', () => live.delete(c));
    await healthy();
  };
  const kill = async () => {
    const c = child;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    const exited = new Promise((r) => c.once('exit', r));
    c.kill('SIGKILL');
    await exited;
  };
  try {
    await launch();
  } catch (err) {
    await kill();
    dir.remove();
    throw err;
  }
  return {
    endpoint,
    dataDir: dir.path,
    etcdctl,
    kill,
    restart: launch,
    compact: async (revision) => {
      await etcdctl(['compaction', String(revision)]);
    },
    stop: async () => {
      await kill();
      dir.remove();
    },
  };
}
