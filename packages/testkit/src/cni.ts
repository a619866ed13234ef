import { execFileSync } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Netns } from './netns.js';

/** weft-cni of this workspace (one bundled file, built by `pnpm build`). */
export const WEFT_CNI_CLI = fileURLToPath(new URL('../../cni/dist/weft-cni.cjs', import.meta.url));

/** Where Debian's containernetworking-plugins puts the reference plugins (bridge, host-local, ...). */
export const REFERENCE_CNI_DIR = '/usr/lib/cni';

/** kube-flannel's `cni-conf.json` (Documentation/kube-flannel.yml), as it is shipped. */
export const KUBE_FLANNEL_CNI_CONF = `{
  "name": "cbr0",
  "cniVersion": "0.3.1",
  "plugins": [
    {
      "type": "flannel",
      "delegate": {
        "hairpinMode": true,
        "isDefaultGateway": true
      }
    },
    {
      "type": "portmap",
      "capabilities": {
        "portMappings": true
      }
    }
  ]
}
`;

/** Installs weft-cni into `binDir` under `name` with the plugin's own `weft-cni install`. */
export function installWeftCni(binDir: string, name = 'flannel'): string {
  if (!existsSync(WEFT_CNI_CLI)) throw new Error(`${WEFT_CNI_CLI} is missing: run pnpm build`);
  return execFileSync(process.execPath, [WEFT_CNI_CLI, 'install', binDir, name], {
    encoding: 'utf8',
  }).trim();
}

/** A plugin's failure as a runtime sees it: the spec's error JSON, with the exit status. */
export class CniCallError extends Error {
  constructor(
    readonly plugin: string,
    readonly command: string,
    readonly status: number | null,
    readonly result: { code?: number; msg?: string; details?: string } | undefined,
    readonly stdout: string,
    readonly stderr: string,
  ) {
    super(
      `CNI ${command} of ${plugin} failed (exit ${status}): ${result ? `code ${result.code}: ${result.msg}${result.details ? ` (${result.details})` : ''}` : stdout || stderr}`,
    );
  }
}

type Json = Record<string, unknown>;

/** One attachment of a container to the network: what ADD was given and what it returned. */
export interface CniAttachment {
  containerId: string;
  ifName: string;
  netns: string;
  result: Json;
}

/**
 * The CNI half of a container runtime, as libcni does it, for tests: a network configuration list's
 * plugins run in order for ADD and CHECK (each after the first gets the previous result), in
 * reverse for DEL (each gets the ADD result); CNI_* in the environment, the plugin's
 * configuration (with `name` and `cniVersion` from the list, no `capabilities`) on stdin. Plugins
 * run inside `node`, where a runtime on that node would run them, found in `binDirs` (CNI_PATH).
 * ADD results are kept, as libcni caches them, for CHECK and DEL.
 */
export class CniRuntime {
  readonly list: Json;
  private readonly results = new Map<string, Json>();

  /** `prefix` runs before each plugin's `ip netns exec` (e.g. an `unshare` giving it private mounts). */
  constructor(
    readonly node: Netns,
    conflist: string | Json,
    readonly binDirs: readonly string[],
    readonly prefix: readonly string[] = [],
  ) {
    this.list = typeof conflist === 'string' ? JSON.parse(conflist) : conflist;
  }

  private plugins(): Json[] {
    return this.list.plugins as Json[];
  }

  /** The request configuration for one plugin (SPEC.md section 3, "Deriving request configuration"). */
  requestConf(plugin: Json, prevResult?: Json): Json {
    const { capabilities: _, ...rest } = plugin;
    const conf: Json = { ...rest, cniVersion: this.list.cniVersion, name: this.list.name };
    if (prevResult) conf.prevResult = prevResult;
    return conf;
  }

  /** Finds a plugin in the bin directories as libcni does (the first regular file). */
  find(type: string): string {
    for (const dir of this.binDirs) {
      const path = join(dir, type);
      if (existsSync(path) && statSync(path).isFile()) return path;
    }
    throw new Error(`failed to find plugin "${type}" in path [${this.binDirs.join(' ')}]`);
  }

  /** Runs one plugin command with only the CNI_* environment (and PATH); returns its parsed stdout. */
  invoke(
    conf: Json,
    command: string,
    attachment: { containerId?: string; ifName?: string; netns?: string } = {},
  ): Json | undefined {
    const type = conf.type as string;
    const env: Record<string, string> = {
      PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin',
      CNI_COMMAND: command,
      CNI_PATH: this.binDirs.join(':'),
    };
    if (attachment.containerId) env.CNI_CONTAINERID = attachment.containerId;
    if (attachment.ifName) env.CNI_IFNAME = attachment.ifName;
    if (attachment.netns) env.CNI_NETNS = attachment.netns;
    const argv = [...this.prefix, 'ip', 'netns', 'exec', this.node.name, this.find(type)];
    try {
      const out = execFileSync(argv[0], argv.slice(1), {
        input: JSON.stringify(conf),
        encoding: 'utf8',
        env,
        stdio: ['pipe', 'pipe', 'pipe'],
      });
      return out.trim() === '' ? undefined : JSON.parse(out);
    } catch (err) {
      const e = err as { status: number | null; stdout?: string; stderr?: string };
      let result: CniCallError['result'];
      try {
        result = JSON.parse(e.stdout ?? '');
      } catch {}
      throw new CniCallError(type, command, e.status, result, e.stdout ?? '', e.stderr ?? '');
    }
  }

  /** ADD: every plugin in order; returns the final result (kept for CHECK and DEL). */
  add(containerId: string, netns: string, ifName = 'eth0'): CniAttachment {
    let prev: Json | undefined;
    for (const plugin of this.plugins()) {
      prev = this.invoke(this.requestConf(plugin, prev), 'ADD', { containerId, ifName, netns });
    }
    const result = prev ?? {};
    this.results.set(`${containerId}/${ifName}`, result);
    return { containerId, ifName, netns, result };
  }

  /** CHECK: every plugin in order, each given the ADD result (refused before 0.4.0, as libcni does). */
  check(containerId: string, netns: string, ifName = 'eth0'): void {
    const [major, minor] = String(this.list.cniVersion).split('.').map(Number);
    if (major === 0 && minor < 4)
      throw new Error(
        `configuration version ${this.list.cniVersion} does not support the CHECK command`,
      );
    const prev = this.results.get(`${containerId}/${ifName}`);
    for (const plugin of this.plugins()) {
      this.invoke(this.requestConf(plugin, prev), 'CHECK', { containerId, ifName, netns });
    }
  }

  /** DEL: every plugin in reverse order, each given the ADD result; the cached result goes. */
  del(containerId: string, netns: string | undefined, ifName = 'eth0'): void {
    const prev = this.results.get(`${containerId}/${ifName}`);
    for (const plugin of [...this.plugins()].reverse()) {
      this.invoke(this.requestConf(plugin, prev), 'DEL', { containerId, ifName, netns });
    }
    this.results.delete(`${containerId}/${ifName}`);
  }
}

/** The first address of an ADD result (any spec version from 0.3.0), without its prefix length. */
export function resultIp(result: Json): string {
  return resultIps(result)[0];
}

/** Every address of an ADD result (a dual-stack pod has an IPv4 and an IPv6 one), without prefix lengths. */
export function resultIps(result: Json): string[] {
  const ips = result.ips as { address: string }[] | undefined;
  if (!ips?.[0]) throw new Error(`CNI result has no IP: ${JSON.stringify(result)}`);
  return ips.map((i) => i.address.split('/')[0]);
}
