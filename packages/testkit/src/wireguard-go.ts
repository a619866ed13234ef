import type { ChildProcess } from 'node:child_process';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import type { Netns } from './netns.js';
import { waitFor } from './netns.js';

const execFileAsync = promisify(execFile);

/**
 * Debian's wireguard-go with `wg` (wireguard-tools): a reference WireGuard peer in a namespace,
 * configured the way flannel configures its `flannel-wg` device (wgctrl: private key, listen
 * port, then `peer <key> endpoint <ip:port> allowed-ips <subnet>`; address /32, MTU, up, a route
 * to the whole network, scope link).
 *
 * wireguard-go's control socket lives at /var/run/wireguard/<name>.sock, which namespaces share;
 * so it runs in a private mount namespace with its own tmpfs there, and `wg` runs inside the same
 * one (nsenter into the daemon's mount namespace), so tests in parallel never meet.
 */
export interface WireguardGo {
  readonly name: string;
  readonly child: ChildProcess;
  /** Runs `wg <args>` against this device; resolves with stdout. */
  wg(args: readonly string[], input?: string): Promise<string>;
  /** Writes `text` to a private file and returns its path (for `wg set ... preshared-key <path>`). */
  writeFile(name: string, text: string): Promise<string>;
  /** `wg show <name> dump` as rows: the interface line, then one per peer. */
  dump(): Promise<string[][]>;
  stop(): Promise<void>;
}

export interface WireguardGoOptions {
  name?: string;
  privateKey: string;
  listenPort: number;
  /** The node's overlay address (a /32, or /128 for IPv6, on the device) and the network routed into it. */
  address: string;
  network: string;
  mtu?: number;
}

/** Starts wireguard-go in `ns` and configures it as flannel would; peers are added with `wg`. */
export async function startWireguardGo(ns: Netns, o: WireguardGoOptions): Promise<WireguardGo> {
  const name = o.name ?? 'flannel-wg';
  // sh stays as the mount namespace's first process; wireguard-go runs in the foreground under it.
  const child = ns.spawn(
    [
      'unshare',
      '--mount',
      '--propagation',
      'private',
      'sh',
      '-c',
      `mkdir -p /run/wireguard && mount -t tmpfs weft-wg /run/wireguard && echo pid $$ && exec wireguard-go -f ${name}`,
    ],
    {
      env: {
        ...process.env,
        WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD: '1',
        LOG_LEVEL: 'error',
      },
    },
  );
  let out = '';
  child.stdout?.on('data', (d: Buffer) => {
    out += d.toString();
  });
  child.stderr?.on('data', (d: Buffer) => {
    out += d.toString();
  });
  let exited = false;
  child.once('exit', () => {
    exited = true;
  });
  await waitFor(() => exited || /pid \d+/.test(out), 'wireguard-go to start', {
    timeoutMs: 10_000,
  });
  if (exited) throw new Error(`wireguard-go did not start: ${out}`);
  const pid = /pid (\d+)/.exec(out)![1];
  const inside = (argv: readonly string[], input?: string) => {
    const p = execFileAsync(
      'nsenter',
      [`--mount=/proc/${pid}/ns/mnt`, `--net=/proc/${pid}/ns/net`, ...argv],
      { timeout: 20_000 },
    );
    if (input !== undefined) p.child.stdin?.end(input);
    return p.then((r) => r.stdout);
  };
  await waitFor(
    async () => (await inside(['wg', 'show', 'interfaces']).catch(() => '')).includes(name),
    `wireguard-go's ${name} to answer wg`,
    { timeoutMs: 10_000 },
  );
  // wg reads keys from files; the tmpfs is this daemon's own.
  await inside(['sh', '-c', 'umask 077; cat > /run/wireguard/private.key'], o.privateKey);
  await inside([
    'wg',
    'set',
    name,
    'private-key',
    '/run/wireguard/private.key',
    'listen-port',
    String(o.listenPort),
  ]);
  await inside([
    'ip',
    'addr',
    'add',
    `${o.address}/${o.address.includes(':') ? 128 : 32}`,
    'dev',
    name,
  ]);
  await inside(['ip', 'link', 'set', name, 'mtu', String(o.mtu ?? 1420), 'up']);
  await inside(['ip', 'route', 'replace', o.network, 'dev', name, 'scope', 'link']);
  return {
    name,
    child,
    wg: (args, input) => inside(['wg', ...args], input),
    async writeFile(file, text) {
      const path = `/run/wireguard/${file.replace(/[^a-z0-9.-]/gi, '_')}`;
      await inside(['sh', '-c', `umask 077; cat > ${path}`], text);
      return path;
    },
    async dump() {
      const text = await inside(['wg', 'show', name, 'dump']);
      return text
        .trim()
        .split('\n')
        .map((l) => l.split('\t'));
    },
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const done = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await done;
    },
  };
}

/** A key pair from `wg genkey | wg pubkey`. */
export async function wgKeyPair(): Promise<{ privateKey: string; publicKey: string }> {
  const privateKey = (await execFileAsync('wg', ['genkey'])).stdout.trim();
  const p = execFileAsync('wg', ['pubkey']);
  p.child.stdin?.end(privateKey);
  const publicKey = (await p).stdout.trim();
  return { privateKey, publicKey };
}
