import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { isWeftError, WeftError } from '@weft/core';
import { type Address, type Link, Rtnl } from '@weft/netlink';
import {
  type Lease,
  type NetworkConfig,
  SubnetManager,
  silentLogger,
  vxlanLeaseData,
} from '@weft/subnet';
import { openStore } from '../daemon.js';
import { FlagErrorCode, type Options, parseFlags } from '../flags.js';
import { vtepAddress } from '../kernel.js';
import { findUnderlay, type Underlay } from '../underlay.js';
import { WIREGUARD_DEVICE } from '../wireguard.js';

/** What `weftd doctor` takes beyond the daemon's flags. */
export interface DoctorOptions {
  json: boolean;
  /** Where the container runtime reads CNI network configurations. */
  cniConfDir: string;
  /** The runtime's CNI plugin directories (CNI_PATH), searched in order. */
  cniBinDirs: string[];
  /** How long a path probe waits for its answer. */
  probeTimeoutMs: number;
  /** Run the path checks (--skip-paths turns them off). */
  paths: boolean;
}

export const DOCTOR_FLAGS = [
  { name: 'json', help: 'print the report as JSON (the same checks, fixes and peer rows)' },
  {
    name: 'cni-conf-dir',
    help: 'where the container runtime reads CNI configurations (default /etc/cni/net.d)',
  },
  {
    name: 'cni-bin-dir',
    help: "the runtime's CNI plugin directories, ':'-separated, may repeat (default /opt/cni/bin)",
  },
  {
    name: 'probe-timeout',
    help: 'milliseconds a path probe waits for its answer (default 500)',
  },
  { name: 'skip-paths', help: 'skip the path checks (no packet is sent)' },
] as const;

/**
 * Splits the doctor's own flags from the daemon's (which parseFlags then checks, with their
 * WEFTD_/FLANNELD_ environment twins). The doctor's flags also have twins: WEFTD_CNI_CONF_DIR, ...
 */
export function parseDoctorFlags(
  argv: string[],
  env: NodeJS.ProcessEnv = process.env,
): { doctor: DoctorOptions; options: Options } {
  const rest: string[] = [];
  const given = new Map<string, string[]>();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const [name, inline] = arg.replace(/^--?/, '').split(/=(.*)/s, 2);
    const spec = arg.startsWith('-') ? DOCTOR_FLAGS.find((f) => f.name === name) : undefined;
    if (!spec) {
      rest.push(arg);
      continue;
    }
    let value = inline;
    if (value === undefined) {
      if (name === 'json' || name === 'skip-paths') value = 'true';
      else {
        value = argv[++i];
        if (value === undefined) throw new WeftError(FlagErrorCode, `--${name} needs a value`);
      }
    }
    given.set(name, [...(given.get(name) ?? []), value]);
  }
  const one = (name: string): string | undefined =>
    given.get(name)?.at(-1) ?? env[`WEFTD_${name.toUpperCase().replace(/-/g, '_')}`];
  const bool = (name: string): boolean => {
    const v = one(name);
    if (v === undefined || v === 'false' || v === '0' || v === 'no') return false;
    if (v === 'true' || v === '1' || v === 'yes' || v === '') return true;
    throw new WeftError(FlagErrorCode, `--${name}: ${JSON.stringify(v)} is not true or false`);
  };
  const timeout = one('probe-timeout') ?? '500';
  const probeTimeoutMs = Number(timeout);
  if (!Number.isInteger(probeTimeoutMs) || probeTimeoutMs < 10 || probeTimeoutMs > 60_000)
    throw new WeftError(
      FlagErrorCode,
      `--probe-timeout: ${JSON.stringify(timeout)} must be 10..60000 milliseconds`,
    );
  const binDirs = (
    given.get('cni-bin-dir') ?? [env.WEFTD_CNI_BIN_DIR ?? env.CNI_PATH ?? '/opt/cni/bin']
  )
    .flatMap((v) => v.split(':'))
    .filter(Boolean);
  return {
    doctor: {
      json: bool('json'),
      cniConfDir: one('cni-conf-dir') ?? '/etc/cni/net.d',
      cniBinDirs: binDirs,
      probeTimeoutMs,
      paths: !bool('skip-paths'),
    },
    options: parseFlags(rest, env),
  };
}

/** The forwarding modes weftd runs (dataplane.ts's Mode), and whether one is running now. */
export type RunningMode =
  | 'kernel-vxlan'
  | 'userspace-vxlan'
  | 'userspace-udp'
  | 'kernel-wireguard'
  | 'userspace-wireguard'
  | 'host-gw'
  | 'alloc';

/** Everything the checks share, each part gathered on its own so one failure hides no other. */
export interface DoctorContext {
  options: Options;
  doctor: DoctorOptions;
  nl?: Rtnl;
  nlError?: string;
  links: Link[];
  addresses: Address[];
  storeDescription: string;
  config?: NetworkConfig;
  configError?: WeftError | Error;
  /** The leases with an IPv4 subnet and public IP: what these checks read (IPv4 paths only). */
  leases: Lease4[];
  leasesError?: string;
  underlay?: Underlay;
  underlayError?: string;
  /** This node's lease: the one with our public IP (the newest when there are two). */
  own?: Lease4;
  backendType?: string;
  vni: number;
  /** The backend's UDP port (vxlan 8472 by default, udp 8285). */
  port: number;
  /** flannel.<VNI>, flannel0 or flannel-wg; undefined for host-gw and alloc. */
  overlayName?: string;
  overlayLink?: Link;
  /** What is running now, read from the devices (undefined: no dataplane is up). */
  running?: RunningMode;
  /** FLANNEL_MTU as weftd computes it for this node (undefined when the inputs are missing). */
  expectedMtu?: number;
  /** `uname -r`. */
  kernelRelease: string;
  /** Closes what gathering opened. */
  close(): Promise<void>;
}

/** What each encapsulation takes off the underlay MTU (flannel's numbers). */
export const OVERHEAD: Record<string, number> = { vxlan: 50, udp: 28, wireguard: 80 };

async function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () =>
            reject(
              new WeftError(
                'ERR_STORE_UNAVAILABLE',
                `${what} did not answer within ${ms / 1000} s`,
              ),
            ),
          ms,
        );
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

const quiet = { info() {} };

/** A lease with an IPv4 subnet and public IP (an IPv6-only lease has neither). */
export type Lease4 = Lease & { subnet: string; attrs: Lease['attrs'] & { publicIp: string } };

function hasIpv4(l: Lease): l is Lease4 {
  return l.subnet !== undefined && l.attrs.publicIp !== undefined;
}

/** Reads what every check needs: links, the store's config and leases, the underlay, our lease. */
export async function gather(options: Options, doctor: DoctorOptions): Promise<DoctorContext> {
  let kernelRelease = '';
  try {
    kernelRelease = readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim();
  } catch {}
  const ctx: DoctorContext = {
    options,
    doctor,
    links: [],
    addresses: [],
    storeDescription: '',
    leases: [],
    vni: 1,
    port: 8472,
    kernelRelease,
    close: async () => undefined,
  };
  try {
    ctx.nl = Rtnl.open();
    ctx.links = await ctx.nl.links();
    ctx.addresses = await ctx.nl.addresses();
  } catch (err) {
    ctx.nlError = (err as Error).message;
  }
  const store = openStore(options);
  ctx.storeDescription = store.description;
  ctx.close = async () => {
    ctx.nl?.close();
    await store.close().catch(() => undefined);
  };
  const manager = new SubnetManager(store, { logger: silentLogger });
  try {
    ctx.config = await withTimeout(manager.getNetworkConfig(), 5000, store.description);
  } catch (err) {
    ctx.configError = err as Error;
  }
  if (!isWeftError(ctx.configError, 'ERR_STORE_UNAVAILABLE')) {
    try {
      ctx.leases = (await withTimeout(manager.listLeases(), 5000, store.description)).leases.filter(
        hasIpv4,
      );
    } catch (err) {
      ctx.leasesError = (err as Error).message;
    }
  } else ctx.leasesError = ctx.configError?.message;
  if (ctx.nl) {
    try {
      ctx.underlay = await findUnderlay(ctx.nl, options, quiet);
    } catch (err) {
      ctx.underlayError = (err as Error).message;
    }
  } else ctx.underlayError = `netlink: ${ctx.nlError}`;

  const config = ctx.config;
  ctx.backendType = options.backendType ?? config?.backend.type;
  if (config?.backend.type === 'vxlan') {
    ctx.vni = config.backend.vni;
    ctx.port = config.backend.port || 8472;
  }
  if (ctx.backendType === 'udp')
    ctx.port = config?.backend.type === 'udp' ? config.backend.port : 8285;
  if (ctx.backendType === 'wireguard')
    ctx.port = config?.backend.type === 'wireguard' ? config.backend.listenPort : 51820;
  if (ctx.backendType === 'vxlan') ctx.overlayName = `flannel.${ctx.vni}`;
  if (ctx.backendType === 'udp') ctx.overlayName = 'flannel0';
  if (ctx.backendType === 'wireguard') ctx.overlayName = WIREGUARD_DEVICE;
  ctx.overlayLink = ctx.links.find((l) => l.name === ctx.overlayName);
  const kind = ctx.overlayLink?.kind;
  if (ctx.backendType === 'vxlan' && kind === 'vxlan') ctx.running = 'kernel-vxlan';
  else if (ctx.backendType === 'vxlan' && kind === 'tun') ctx.running = 'userspace-vxlan';
  else if (ctx.backendType === 'udp' && kind === 'tun') ctx.running = 'userspace-udp';
  else if (ctx.backendType === 'wireguard' && kind === 'wireguard')
    ctx.running = 'kernel-wireguard';
  else if (ctx.backendType === 'wireguard' && kind === 'tun') ctx.running = 'userspace-wireguard';
  else if (ctx.backendType === 'host-gw' || ctx.backendType === 'alloc')
    ctx.running = ctx.backendType;

  if (ctx.underlay) {
    const mine = ctx.leases.filter((l) => l.attrs.publicIp === ctx.underlay!.publicIp);
    ctx.own = mine.sort((a, b) => b.revision - a.revision)[0];
    const underlayMtu = ctx.underlay.iface.mtu ?? 1500;
    // The bring-ups' rules: vxlan's and wireguard's Backend.MTU (else the underlay's) less their
    // overhead; udp's underlay less 28 (it ignores Backend.MTU, as flannel's does).
    const b = config?.backend;
    const configured =
      b && b.type === ctx.backendType && (b.type === 'vxlan' || b.type === 'wireguard') ? b.mtu : 0;
    const overhead = OVERHEAD[ctx.backendType ?? ''];
    if (overhead !== undefined)
      ctx.expectedMtu =
        (ctx.backendType === 'udp' ? underlayMtu : configured || underlayMtu) - overhead;
    if (ctx.backendType === 'host-gw' || ctx.backendType === 'alloc') ctx.expectedMtu = underlayMtu;
  }
  return ctx;
}

/** Our VTEP (or udp node) address: the lease subnet's first address. */
export function ownVtep(ctx: DoctorContext): string | undefined {
  return ctx.own ? vtepAddress(ctx.own.subnet) : undefined;
}

/** The leases this node forwards to (its backend type, and for vxlan its VNI), and the others. */
export function peerLeases(ctx: DoctorContext): {
  peers: Lease4[];
  others: { lease: Lease4; why: string }[];
} {
  const peers: Lease4[] = [];
  const others: { lease: Lease4; why: string }[] = [];
  const ownIp = ctx.underlay?.publicIp;
  for (const l of ctx.leases) {
    if (l.attrs.publicIp === ownIp) continue;
    if (l.attrs.backendType !== ctx.backendType) {
      others.push({
        lease: l,
        why: `a ${l.attrs.backendType || 'backend-less'} node: a ${ctx.backendType} node reaches only ${ctx.backendType} nodes`,
      });
      continue;
    }
    if (ctx.backendType === 'vxlan') {
      const data = vxlanLeaseData(l.attrs);
      if (!data || data.vni !== ctx.vni) {
        others.push({
          lease: l,
          why: data ? `VNI ${data.vni}, not ${ctx.vni}` : 'its lease has no VtepMAC',
        });
        continue;
      }
    }
    peers.push(l);
  }
  return { peers, others };
}

/**
 * Reads a sysctl under /proc/sys (per network namespace for net.*); undefined when absent. The
 * name is given in parts, as an interface name may hold a dot (flannel.1).
 */
export function sysctl(...parts: string[]): string | undefined {
  try {
    return readFileSync(join('/proc/sys', ...parts), 'utf8').trim();
  } catch {
    return undefined;
  }
}

/** The ports of a bridge (its veths), from sysfs. */
export function bridgePorts(bridge: string): string[] {
  try {
    return readdirSync(`/sys/class/net/${bridge}/brif`);
  } catch {
    return [];
  }
}
