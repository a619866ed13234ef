import { accessSync, constants, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { type FlannelSubnetEnv, findPlugin, parseNetConf, readSubnetEnv } from '@weft/cni';
import { formatCidr, parseCidr } from '@weft/core';
import type { DoctorContext } from './context.js';
import type { CheckResult } from './report.js';

type Json = Record<string, unknown>;

/** What the CNI checks learn that later checks use. */
export interface CniFacts {
  /** The bridge the delegate makes (the bridge plugin's `bridge`, default cni0). */
  bridge: string;
  /** Where the flannel plugin reads subnet.env. */
  subnetFile: string;
  /** subnet.env as the plugin reads it, when it could. */
  env?: FlannelSubnetEnv;
}

/** libcni's ConfFiles: these extensions, and the runtime uses the first in lexical order. */
const CONF_EXTENSIONS = ['.conf', '.conflist', '.json'];

const isObject = (v: unknown): v is Json =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

const FLANNEL_TYPES = new Set(['flannel', 'weft-cni']);

interface ConfFile {
  path: string;
  list?: Json;
  error?: string;
}

function readConfList(path: string): ConfFile {
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    return { path, error: (err as Error).message };
  }
  if (!isObject(parsed)) return { path, error: 'not a JSON object' };
  // A .conf holds one plugin; libcni makes it a list of one (ConfListFromConf).
  if (!('plugins' in parsed) && 'type' in parsed)
    return {
      path,
      list: { name: parsed.name, cniVersion: parsed.cniVersion, plugins: [parsed] },
    };
  if (!Array.isArray(parsed.plugins) || parsed.plugins.length === 0)
    return { path, error: '"plugins" must be a non-empty list' };
  if (!parsed.plugins.every(isObject)) return { path, error: 'every plugin must be an object' };
  return { path, list: parsed };
}

const flannelPlugin = (list: Json | undefined) =>
  (list?.plugins as Json[] | undefined)?.find((p) => FLANNEL_TYPES.has(p.type as string));

/**
 * The CNI configuration the runtime uses, its flannel plugin parsed as weft-cni parses it, every
 * plugin it delegates to in the bin directories (weft-cni's own lookup), subnet.env where the
 * plugin reads it, and cni0's address.
 */
export function checkCni(ctx: DoctorContext): { results: CheckResult[]; facts: CniFacts } {
  const { cniConfDir: dir, cniBinDirs: binDirs } = ctx.doctor;
  const results: CheckResult[] = [];
  const facts: CniFacts = { bridge: 'cni0', subnetFile: ctx.options.subnetFile };
  let names: string[] = [];
  try {
    names = readdirSync(dir)
      .filter((f) => CONF_EXTENSIONS.some((e) => f.endsWith(e)))
      .sort();
  } catch {}
  if (names.length === 0) {
    results.push({
      id: 'cni-conf',
      status: 'fail',
      title: `no CNI configuration in ${dir}: the container runtime has no network for pods`,
      fix: `install flannel's configuration (kube-flannel's cni-conf.json) as ${join(dir, '10-flannel.conflist')}, or point --cni-conf-dir at the runtime's directory`,
      explains:
        'kubelet "network plugin is not ready: cni config uninitialized" / "no networks found in /etc/cni/net.d"',
    });
    results.push(...checkSubnetEnv(ctx, facts));
    return { results, facts };
  }
  const files = names.map((n) => readConfList(join(dir, n)));
  const first = files[0];
  const withFlannel = files.find((f) => flannelPlugin(f.list));
  if (first.error) {
    results.push({
      id: 'cni-conf',
      status: 'fail',
      title: `${first.path} (the runtime's first configuration) does not parse: ${first.error}`,
      fix: 'correct it, or move it out of the directory',
      explains: 'kubelet "error parsing CNI configuration": no pod gets a network',
    });
    results.push(...checkSubnetEnv(ctx, facts));
    return { results, facts };
  }
  if (!flannelPlugin(first.list)) {
    results.push({
      id: 'cni-conf',
      status: withFlannel ? 'fail' : 'warn',
      title: withFlannel
        ? `the runtime uses ${first.path} (first in lexical order), not ${withFlannel.path}: pods are not on the flannel network`
        : `${first.path} does not use the flannel plugin: pods are not on this network`,
      fix: withFlannel
        ? `remove ${first.path} (a leftover of another network plugin?), or rename the flannel one so it sorts first (e.g. 00-flannel.conflist)`
        : `install flannel's configuration as ${join(dir, '10-flannel.conflist')}`,
      explains:
        'pods get addresses from another plugin (often a leftover 10-bridge.conf or another CNI) and cannot reach other nodes',
    });
    results.push(...checkSubnetEnv(ctx, facts));
    return { results, facts };
  }
  const list = first.list!;
  const plugin = flannelPlugin(list)!;
  // What the runtime hands the plugin (SPEC.md section 3): its entry, with the list's name and version.
  const { capabilities: _, ...entry } = plugin;
  let conf: ReturnType<typeof parseNetConf> | undefined;
  try {
    conf = parseNetConf(
      JSON.stringify({ ...entry, name: list.name, cniVersion: list.cniVersion ?? '' }),
    );
  } catch (err) {
    results.push({
      id: 'cni-conf',
      status: 'fail',
      title: `${first.path}: the flannel plugin refuses its configuration: ${(err as Error).message}`,
      fix: 'correct the field named (kube-flannel ships a cni-conf.json that parses)',
      explains: 'every pod sandbox fails to start with this error from the plugin',
    });
    results.push(...checkSubnetEnv(ctx, facts));
    return { results, facts };
  }
  facts.subnetFile = conf.subnetFile;
  const delegateType = (conf.delegate.type as string | undefined) ?? 'bridge';
  if (delegateType === 'bridge')
    facts.bridge = (conf.delegate.bridge as string | undefined) ?? 'cni0';
  results.push({
    id: 'cni-conf',
    status: 'ok',
    title: `${first.path} (${list.name}, cniVersion ${conf.cniVersion}) parses: ${(list.plugins as Json[]).map((p) => p.type).join(', ')}`,
  });

  // Every plugin the list runs, and what flannel delegates to.
  const needed = new Set<string>();
  for (const p of list.plugins as Json[]) if (typeof p.type === 'string') needed.add(p.type);
  needed.add(delegateType);
  needed.add(typeof conf.ipam?.type === 'string' ? conf.ipam.type : 'host-local');
  const missing: string[] = [];
  const notExecutable: string[] = [];
  let message = '';
  for (const name of needed) {
    try {
      const path = findPlugin(name, binDirs);
      try {
        accessSync(path, constants.X_OK);
      } catch {
        notExecutable.push(path);
      }
    } catch (err) {
      missing.push(name);
      message ||= (err as Error).message;
    }
  }
  if (missing.length > 0)
    results.push({
      id: 'cni-bin',
      status: 'fail',
      title: `${missing.map((m) => `"${m}"`).join(', ')} not found in ${binDirs.join(':')}`,
      fix: `install them into ${binDirs[0]}: the reference plugins (bridge, host-local, portmap) come with containernetworking-plugins (Debian: /usr/lib/cni) or the CNI plugins release; flannel's plugin is weft-cni installed as "flannel" (weft-cni install ${binDirs[0]} flannel)`,
      explains: `the runtime's "${message.split(':')[0]}" and every pod stuck in ContainerCreating`,
    });
  else if (notExecutable.length > 0)
    results.push({
      id: 'cni-bin',
      status: 'fail',
      title: `${notExecutable.join(', ')} cannot be executed`,
      fix: `chmod 755 ${notExecutable.join(' ')}`,
      explains: 'the runtime\'s "fork/exec ...: permission denied" for every pod',
    });
  else
    results.push({
      id: 'cni-bin',
      status: 'ok',
      title: `every plugin is in ${binDirs.join(':')}: ${[...needed].join(', ')}`,
    });
  results.push(...checkSubnetEnv(ctx, facts));
  results.push(...checkBridge(ctx, facts));
  return { results, facts };
}

/** The first host of a subnet with its prefix: FLANNEL_SUBNET, and the bridge's gateway address. */
function firstHost(subnet: string): string {
  const c = parseCidr(subnet);
  if (c.family !== 4) return subnet;
  return formatCidr({ family: 4, address: c.address + 1, prefixLength: c.prefixLength });
}

/** subnet.env where the plugin reads it, read by the plugin's own parser, against the lease. */
function checkSubnetEnv(ctx: DoctorContext, facts: CniFacts): CheckResult[] {
  const out: CheckResult[] = [];
  const path = facts.subnetFile;
  const weftdWrites = ctx.options.subnetFile;
  if (path !== weftdWrites)
    out.push({
      id: 'subnet-env-path',
      status: 'fail',
      title: `the CNI plugin reads ${path}, but weftd writes ${weftdWrites} (--subnet-file)`,
      fix: `make them one path: --subnet-file ${path}, or "subnetFile": "${weftdWrites}" in the flannel plugin's configuration`,
      explains: `"failed to load flannel 'subnet.env' file: open ${path}: no such file or directory" while weftd runs`,
    });
  try {
    facts.env = readSubnetEnv(path);
  } catch (err) {
    out.push({
      id: 'subnet-env',
      status: 'fail',
      title: (err as Error).message,
      fix: /does not exist/.test((err as Error).message)
        ? "weftd writes it once it holds a lease: start it (or restart it: it writes the file at start), and check that the plugin's subnetFile is that path"
        : 'restart weftd: it writes the file whole',
      explains:
        'flannel\'s CNI plugin: "loadFlannelSubnetEnv failed: open /run/flannel/subnet.env: no such file or directory": pods stay in ContainerCreating',
    });
    return out;
  }
  const env = facts.env;
  const own = ctx.own;
  const problems: string[] = [];
  if (own && env.subnet && env.subnet !== own.subnet)
    problems.push(`FLANNEL_SUBNET is ${env.subnet} but this node's lease is ${own.subnet}`);
  if (own && !env.subnet) problems.push('FLANNEL_SUBNET is missing');
  const network = ctx.config?.network ? formatCidr(ctx.config.network) : undefined;
  if (network && !env.networks.includes(network))
    problems.push(
      `FLANNEL_NETWORK is ${env.networks.join(',') || '(none)'} but the network is ${network}`,
    );
  const deviceMtu = ctx.overlayLink?.mtu;
  // A running dataplane's device MTU is what weftd wrote; without one, what it would write.
  const mtu = ctx.running && ctx.overlayLink ? deviceMtu : ctx.expectedMtu;
  // Dual-stack vxlan: pods get flannel-v6.<VNI>'s MTU, 20 bytes less (IPv6's outer header).
  const six = ctx.config?.enableIpv6 && ctx.backendType === 'vxlan' ? 20 : 0;
  if (mtu !== undefined && env.mtu !== mtu - six)
    problems.push(
      `FLANNEL_MTU is ${env.mtu} but ${deviceMtu !== undefined && mtu === deviceMtu ? `${ctx.overlayName}'s MTU` : 'the overlay MTU'} is ${mtu}${six ? ` (less ${six} for the IPv6 device: ${mtu - six})` : ''}`,
    );
  if (env.ipMasq !== ctx.options.ipMasq)
    problems.push(
      `FLANNEL_IPMASQ is ${env.ipMasq} but weftd runs ${ctx.options.ipMasq ? 'with' : 'without'} --ip-masq`,
    );
  if (problems.length > 0)
    out.push({
      id: 'subnet-env',
      status: 'fail',
      title: `${path} does not match this node: ${problems.join('; ')}`,
      fix: 'restart weftd with the flags this doctor was given: it rewrites subnet.env from its lease; pods made since need recreating',
      explains:
        'pods get addresses from a subnet the other nodes route elsewhere, or an MTU the overlay cannot carry',
    });
  else
    out.push({
      id: 'subnet-env',
      status: 'ok',
      title: `${path}: FLANNEL_SUBNET=${env.subnet ? firstHost(env.subnet) : '-'} FLANNEL_MTU=${env.mtu} FLANNEL_IPMASQ=${env.ipMasq}${own ? ', as the lease says' : ''}`,
    });
  return out;
}

/** The bridge (cni0) holds the subnet's gateway address, as the bridge plugin requires. */
function checkBridge(ctx: DoctorContext, facts: CniFacts): CheckResult[] {
  const name = facts.bridge;
  const link = ctx.links.find((l) => l.name === name);
  const subnet = facts.env?.subnet ?? ctx.own?.subnet;
  if (!subnet) return [];
  const gateway = firstHost(subnet);
  if (!link)
    return [
      {
        id: 'cni0',
        status: 'ok',
        title: `${name} does not exist yet: the bridge plugin makes it with ${gateway} at the first pod`,
      },
    ];
  const have = ctx.addresses
    .filter((a) => a.index === link.index && a.address.includes('.'))
    .map((a) => `${a.address}/${a.prefixLength}`);
  if (have.includes(gateway))
    return [{ id: 'cni0', status: 'ok', title: `${name} holds ${gateway}, the subnet's gateway` }];
  return [
    {
      id: 'cni0',
      status: 'fail',
      title: `${name} has ${have.join(', ') || 'no IPv4 address'}, not ${gateway} (the gateway of ${subnet})`,
      fix: `ip link delete ${name}: the bridge plugin recreates it with ${gateway} at the next pod (pods on this node need recreating)`,
      explains: `the bridge plugin's 'failed to set bridge addr: "${name}" already has an IP address different from ${gateway}' after the node's subnet changed`,
    },
  ];
}
