import { type ChildProcess, execFile, execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { installPlugin } from '@weft/cni';

/**
 * The demo's cluster on one machine, with nothing but iproute2, the published packages' programs
 * (`weftd` from @weft/agent, `weft-cni` from @weft/cni) and Debian's reference CNI plugins: an
 * underlay namespace holding a bridge (198.18.0.1/24), node namespaces plugged into it as `eth0`
 * (198.18.0.11, .12, ...), and pods made by the CNI plugin as a container runtime makes them.
 * Every namespace is named `weft-<tag>-<pid>-<n>` and removed on exit, Ctrl-C included. With
 * `{ underlay: 'dual' }` the switch and the nodes have IPv6 addresses too (2001:2::1/64,
 * 2001:2::11, ...: RFC 5180's benchmarking space) and forward IPv6; pods get an address of each
 * family when subnet.env has both.
 */

const execFileAsync = promisify(execFile);
const require = createRequire(import.meta.url);
/** weftd, the program @weft/agent installs as its bin. */
export const WEFTD = join(dirname(require.resolve('@weft/agent')), 'main.js');
/** Where Debian's containernetworking-plugins puts bridge, host-local and portmap. */
const REFERENCE_CNI_DIR = '/usr/lib/cni';
/** kube-flannel's `cni-conf.json`, as Documentation/kube-flannel.yml ships it. */
const KUBE_FLANNEL_CNI_CONF = {
  name: 'cbr0',
  cniVersion: '0.3.1',
  plugins: [
    { type: 'flannel', delegate: { hairpinMode: true, isDefaultGateway: true } },
    { type: 'portmap', capabilities: { portMappings: true } },
  ],
};

const live = new Set<string>();
const children = new Set<ChildProcess>();
let counter = 0;

function removeNamespace(name: string): void {
  try {
    const pids = execFileSync('ip', ['netns', 'pids', name], { encoding: 'utf8' });
    for (const pid of pids.split('\n').filter(Boolean)) {
      try {
        process.kill(Number(pid), 'SIGKILL');
      } catch {}
    }
  } catch {}
  try {
    execFileSync('ip', ['netns', 'del', name], { stdio: 'ignore' });
  } catch {}
  live.delete(name);
}

process.on('exit', () => {
  for (const child of children) child.kill('SIGKILL');
  for (const name of [...live]) removeNamespace(name);
});

/** A network namespace of the demo's own. */
export class Netns {
  readonly name: string;

  constructor(tag: string) {
    this.name = `weft-${tag}-${process.pid}-${counter++}`;
    execFileSync('ip', ['netns', 'add', this.name]);
    live.add(this.name);
    execFileSync('ip', ['-n', this.name, 'link', 'set', 'lo', 'up']);
  }

  /** Runs a command inside; rejects on a non-zero exit. */
  exec(argv: readonly string[], options: { timeoutMs?: number } = {}) {
    return execFileAsync('ip', ['netns', 'exec', this.name, ...argv], {
      maxBuffer: 16 << 20,
      timeout: options.timeoutMs ?? 60_000,
    });
  }

  /** Starts a long-running process inside (killed on exit). */
  spawn(argv: readonly string[]): ChildProcess {
    const child = spawn('ip', ['netns', 'exec', this.name, ...argv], { stdio: 'pipe' });
    children.add(child);
    child.once('exit', () => children.delete(child));
    return child;
  }

  delete(): void {
    removeNamespace(this.name);
  }
}

export interface ClusterNode {
  name: string;
  ns: Netns;
  /** Underlay address. */
  ip: string;
  /** Underlay IPv6 address, on a dual-stack underlay. */
  ip6?: string;
  pods: Pod[];
}

export interface Pod {
  name: string;
  ns: Netns;
  ip: string;
  /** Its IPv6 address, when the network has IPv6. */
  ip6?: string;
  node: ClusterNode;
}

export class Cluster {
  readonly underlay: Netns;
  readonly nodes: ClusterNode[] = [];
  /** The CNI bin directory (weft-cni installed as `flannel`) and the plugins' state. */
  readonly cniDir = mkdtempSync(join(tmpdir(), 'weft-demo-cni-'));

  constructor(
    readonly tag: string,
    readonly options: { underlay?: 'ipv4' | 'dual' } = {},
  ) {
    this.underlay = new Netns(tag);
    const u = this.underlay.name;
    execFileSync('ip', ['-n', u, 'link', 'add', 'br0', 'type', 'bridge']);
    execFileSync('ip', ['-n', u, 'addr', 'add', '198.18.0.1/24', 'dev', 'br0']);
    if (this.dual)
      execFileSync('ip', ['-n', u, 'addr', 'add', '2001:2::1/64', 'dev', 'br0', 'nodad']);
    execFileSync('ip', ['-n', u, 'link', 'set', 'br0', 'up']);
    installPlugin(join(this.cniDir, 'bin'), { name: 'flannel' });
  }

  private get dual(): boolean {
    return this.options.underlay === 'dual';
  }

  /** A node namespace on the underlay switch, forwarding IP. */
  addNode(): ClusterNode {
    const i = this.nodes.length;
    const ns = new Netns(this.tag);
    const ip = `198.18.0.${11 + i}`;
    execFileSync('ip', [
      ...['link', 'add', 'name', `p${i}`, 'netns', this.underlay.name],
      ...['type', 'veth', 'peer', 'name', 'eth0', 'netns', ns.name],
    ]);
    execFileSync('ip', ['-n', this.underlay.name, 'link', 'set', `p${i}`, 'master', 'br0', 'up']);
    execFileSync('ip', ['-n', ns.name, 'addr', 'add', `${ip}/24`, 'dev', 'eth0']);
    execFileSync('ip', ['-n', ns.name, 'link', 'set', 'eth0', 'up']);
    // A userspace VTEP reads inner TCP checksums a kernel peer left for "hardware" over a veth.
    execFileSync('ip', ['netns', 'exec', ns.name, 'ethtool', '-K', 'eth0', 'tx', 'off'], {
      stdio: 'ignore',
    });
    execFileSync('ip', ['netns', 'exec', ns.name, 'sysctl', '-qw', 'net.ipv4.ip_forward=1']);
    const node: ClusterNode = { name: `n${i + 1}`, ns, ip, pods: [] };
    if (this.dual) {
      node.ip6 = `2001:2::${11 + i}`;
      execFileSync('ip', ['-n', ns.name, 'addr', 'add', `${node.ip6}/64`, 'dev', 'eth0', 'nodad']);
      execFileSync('ip', [
        ...['netns', 'exec', ns.name, 'sysctl', '-qw', 'net.ipv6.conf.all.forwarding=1'],
      ]);
    }
    this.nodes.push(node);
    return node;
  }

  /**
   * Gives a node `count` pods as a runtime on a flannel node makes them: kube-flannel's
   * cni-conf.json (pointed at this node's subnet.env), each plugin of the list run in order for
   * ADD inside the node's namespace with the CNI_* environment (SPEC.md section 3).
   */
  addPods(node: ClusterNode, subnetFile: string, count: number): Pod[] {
    const list = this.conflist(node, subnetFile);
    const added: Pod[] = [];
    for (let k = 0; k < count; k++) {
      const ns = new Netns(this.tag);
      let prevResult: unknown;
      for (const { capabilities: _, ...plugin } of list.plugins as Record<string, unknown>[]) {
        const conf = { ...plugin, cniVersion: list.cniVersion, name: list.name, prevResult };
        const dirs = this.binDirs();
        const out = execFileSync(
          'ip',
          ['netns', 'exec', node.ns.name, pluginPath(dirs, plugin.type as string)],
          {
            input: JSON.stringify(conf),
            encoding: 'utf8',
            env: {
              PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin',
              CNI_COMMAND: 'ADD',
              CNI_CONTAINERID: ns.name,
              CNI_NETNS: `/run/netns/${ns.name}`,
              CNI_IFNAME: 'eth0',
              CNI_PATH: dirs.join(':'),
            },
          },
        );
        prevResult = JSON.parse(out);
      }
      const ips = (prevResult as { ips?: { address: string }[] }).ips;
      if (!ips?.[0]) throw new Error(`CNI ADD gave no address: ${JSON.stringify(prevResult)}`);
      const pod: Pod = {
        name: `${node.name}-pod${node.pods.length + 1}`,
        ns,
        ip: ips[0].address.split('/')[0],
        node,
      };
      const ip6 = ips.map((a) => a.address.split('/')[0]).find((a) => a.includes(':'));
      if (ip6) pod.ip6 = ip6;
      node.pods.push(pod);
      added.push(pod);
    }
    return added;
  }

  /**
   * The node's CNI configuration written where a runtime reads it (`<cniDir>/<node>/net.d/
   * 10-flannel.conflist`, the list its pods were made with) and the plugin directories searched:
   * what `weftd doctor --cni-conf-dir --cni-bin-dir` is pointed at.
   */
  cniFiles(node: ClusterNode, subnetFile: string): { confDir: string; binDirs: string[] } {
    const confDir = join(this.cniDir, node.name, 'net.d');
    mkdirSync(confDir, { recursive: true });
    const list = `${JSON.stringify(this.conflist(node, subnetFile), null, 2)}\n`;
    writeFileSync(join(confDir, '10-flannel.conflist'), list);
    return { confDir, binDirs: this.binDirs() };
  }

  /** kube-flannel's list; the only additions are where this node's files are. */
  private conflist(node: ClusterNode, subnetFile: string): typeof KUBE_FLANNEL_CNI_CONF {
    const list = structuredClone(KUBE_FLANNEL_CNI_CONF);
    const state = join(this.cniDir, node.name);
    Object.assign(list.plugins[0], {
      subnetFile,
      dataDir: join(state, 'flannel'),
      ipam: { dataDir: join(state, 'ipam') },
    });
    return list;
  }

  /** weft-cni's directory first, then the reference plugins', as CNI_PATH lists them. */
  private binDirs(): string[] {
    return [join(this.cniDir, 'bin'), REFERENCE_CNI_DIR];
  }

  /** Whether `from` reaches `to` (one ping, `timeoutSeconds`), at its IPv4 or (`family` 6) IPv6 address. */
  async reaches(from: Pod, to: Pod, timeoutSeconds = 1, family: 4 | 6 = 4): Promise<boolean> {
    const ip = family === 6 ? to.ip6 : to.ip;
    if (!ip) return false;
    try {
      await from.ns.exec(['ping', '-c', '1', '-W', String(timeoutSeconds), ip]);
      return true;
    } catch {
      return false;
    }
  }

  get pods(): Pod[] {
    return this.nodes.flatMap((n) => n.pods);
  }

  /** Removes every namespace (and what runs in them) and the CNI state. */
  delete(): void {
    for (const ns of [...this.pods.map((p) => p.ns), ...this.nodes.map((n) => n.ns), this.underlay])
      ns.delete();
    rmSync(this.cniDir, { recursive: true, force: true });
  }
}

/** The first regular file of that name in the bin directories, as libcni looks. */
function pluginPath(dirs: string[], type: string): string {
  for (const dir of dirs) {
    const path = join(dir, type);
    if (existsSync(path) && statSync(path).isFile()) return path;
  }
  throw new Error(`CNI plugin ${type} not found in ${dirs.join(':')}`);
}

/** A weftd inside a node namespace; its JSON log lines are kept. */
export interface RunningWeftd {
  waitForLog(msg: string, timeoutMs?: number): Promise<void>;
  stderr(): string;
  stop(): Promise<void>;
}

export function startWeftd(ns: Netns, args: string[]): RunningWeftd {
  const child = ns.spawn([process.execPath, WEFTD, ...args]);
  const messages: string[] = [];
  let err = '';
  let partial = '';
  child.stdout?.on('data', (d: Buffer) => {
    const lines = (partial + d.toString()).split('\n');
    partial = lines.pop() ?? '';
    for (const line of lines) {
      try {
        messages.push(String(JSON.parse(line).msg));
      } catch {}
    }
  });
  child.stderr?.on('data', (d: Buffer) => {
    err += d.toString();
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  return {
    stderr: () => err,
    async waitForLog(msg, timeoutMs = 30_000) {
      const deadline = Date.now() + timeoutMs;
      while (!messages.includes(msg)) {
        if (child.exitCode !== null) throw new Error(`weftd in ${ns.name} exited: ${err}`);
        if (Date.now() > deadline)
          throw new Error(`weftd in ${ns.name} logged no "${msg}" in ${timeoutMs} ms: ${err}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    },
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      await exited;
    },
  };
}
