import { type Cidr, formatCidr, WeftError } from '@weft/core';
import { type Backend, type CounterSnapshot, UdpBackend, VxlanBackend } from '@weft/dataplane';
import { AddressFamily, type Rtnl, type RtnlEvent, RtnlMonitor } from '@weft/netlink';
import type { NetworkConfig } from '@weft/subnet';
import type { Logger as PinoLogger } from 'pino';
import {
  chooseVxlanMode,
  DirectRoutes,
  type FamilyNode,
  familyNodes,
  KernelVxlan,
  onSameLink,
  type RemoteNode,
} from './kernel.js';
import type { Underlay } from './underlay.js';
import { type WireguardContext, wireguard } from './wireguard.js';

/** How a node forwards: the backend type and, for vxlan, whose VTEP. */
export type Mode =
  | 'kernel-vxlan'
  | 'userspace-vxlan'
  | 'userspace-udp'
  | 'kernel-wireguard'
  | 'userspace-wireguard'
  | 'host-gw'
  | 'alloc';

/** Whether traffic can flow through the dataplane, and why not. */
export type Health = { ok: true } | { ok: false; reason: string };

/**
 * A running dataplane, whatever the mode: what the daemon drives from the other nodes' leases.
 * Each mode heals itself (a deleted device is recreated, entries removed by hand are put back)
 * and says through health() when traffic cannot flow.
 */
export interface Dataplane {
  readonly mode: Mode;
  /** The MTU pods get (FLANNEL_MTU): the smallest of the devices' (IPv6's outer header is larger). */
  readonly mtu: number;
  /** Forwards to exactly these nodes, in every family they and we have; sets nothing that is already right. */
  sync(nodes: RemoteNode[]): Promise<{ added: number; removed: number }>;
  /** Whether traffic can flow now, and if not, why (what /readyz says). */
  health(): Health;
  /** The userspace dataplane's counters (undefined for the kernel's). */
  counters(): CounterSnapshot | undefined;
  /** Device recreations and entries put back since the start, for /metrics. */
  readonly repairs: { device: number; entries: number };
  /** Stops forwarding; `undo` (a failed start) also removes a kernel device this run created. */
  close(options?: { undo?: boolean }): Promise<void>;
}

/** One address family's dataplane (flannel.1, flannel-v6.1, IPv4 or IPv6 routes): a Dataplane over that family's nodes. */
export interface FamilyDataplane extends Omit<Dataplane, 'sync'> {
  sync(nodes: FamilyNode[]): Promise<{ added: number; removed: number }>;
}

/** One address family of this node, as a mode's bring-up needs it. */
export interface FamilySetup {
  family: 4 | 6;
  /** The cluster network of the family (Network, IPv6Network). */
  network: Cidr;
  /** This node's underlay address in the family (PublicIP, PublicIPv6). */
  publicIp: string;
  /** The underlay's own networks in the family (DirectRouting's "same link"). */
  connected: Cidr[];
  /** Our VTEP (or node) address: our subnet's first address in the family. */
  nodeAddress: string;
  /** vxlan: the VTEP MAC of this family's device (flannel.<VNI>, flannel-v6.<VNI>). */
  vtepMac: string;
}

/** What a mode's bring-up gets from the daemon. */
export interface DataplaneContext {
  nl: Rtnl;
  log: PinoLogger;
  config: NetworkConfig;
  underlay: Underlay;
  /** The families the network enables, IPv4 first. */
  families: FamilySetup[];
  vni: number;
  vxlanMode: 'kernel' | 'userspace' | 'auto';
  /** wireguard: this node's key pair and --wireguard-mode. */
  wireguard?: WireguardContext;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** One change at a time: each run starts when the one before it has finished. */
class Serial {
  private tail: Promise<unknown> = Promise.resolve();
  run<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.tail.then(fn, fn);
    this.tail = next.catch(() => undefined);
    return next;
  }
}

/**
 * Watches the kernel for what was done behind our back: `onGone` when the device is deleted,
 * `onDrift` (debounced) when a neighbor, FDB entry or main-table route on it is deleted or the
 * kernel dropped notifications (ENOBUFS: we cannot know what we missed).
 */
function watchKernel(
  log: PinoLogger,
  device: () => { name: string; index: number | undefined },
  handlers: { onGone(): void; onDrift(why: string): void },
): RtnlMonitor {
  let timer: NodeJS.Timeout | undefined;
  const drift = (why: string) => {
    if (timer) return;
    timer = setTimeout(() => {
      timer = undefined;
      handlers.onDrift(why);
    }, 10);
  };
  const onEvent = (e: RtnlEvent) => {
    const d = device();
    if (e.kind === 'link') {
      // By index once known: a device we replaced ourselves has the old one.
      if (
        e.action === 'del' &&
        (d.index !== undefined ? e.link.index === d.index : e.link.name === d.name)
      )
        handlers.onGone();
      return;
    }
    if (e.action !== 'del' || d.index === undefined) return;
    if (e.kind === 'neighbor' && e.neighbor.ifindex === d.index)
      drift(
        e.family === AddressFamily.bridge
          ? `FDB entry ${e.neighbor.mac} deleted`
          : `neighbor ${e.neighbor.ip} deleted`,
      );
    else if (e.kind === 'route' && e.route.oif === d.index && e.route.table === 254)
      drift(`route ${e.route.dst} deleted`);
  };
  const monitor = RtnlMonitor.open(onEvent, (err) => {
    log.warn({ err: err.message }, 'kernel notifications were lost; checking everything again');
    drift('notifications lost');
  });
  return monitor;
}

/** The kernel's VXLAN, programmed as flannel programs it, recreated when deleted. */
async function kernelVxlan(ctx: DataplaneContext, kernel: KernelVxlan): Promise<FamilyDataplane> {
  const { log } = ctx;
  const name = kernel.options.name;
  const serial = new Serial();
  const repairs = { device: 0, entries: 0 };
  let nodes: FamilyNode[] = [];
  let lost: string | undefined;
  let closed = false;

  const apply = () =>
    serial.run(async () => {
      if (lost || closed) return { added: 0, removed: 0 };
      return kernel.sync(nodes);
    });

  const recreate = async () => {
    if (lost || closed) return;
    lost = `the VXLAN device ${name} was deleted; recreating it`;
    const since = Date.now();
    log.error({ device: name }, `${name} was deleted: recreating it and reprogramming every peer`);
    let wait = 100;
    while (!closed) {
      try {
        await serial.run(() => kernel.setup());
        lost = undefined;
        const r = await apply();
        repairs.device++;
        log.info(
          { device: name, peers: nodes.length, programmed: r.added, ms: Date.now() - since },
          `${name} recreated and ${nodes.length} peers reprogrammed`,
        );
        return;
      } catch (err) {
        lost = `the VXLAN device ${name} was deleted and recreating it failed: ${(err as Error).message}`;
        log.error({ err: (err as Error).message, retryInMs: wait }, `recreating ${name} failed`);
        await sleep(wait);
        wait = Math.min(wait * 2, 5000);
      }
    }
  };

  const monitor = watchKernel(log, () => ({ name, index: kernel.link?.index }), {
    onGone: () => void recreate(),
    onDrift: (why) => {
      void apply().then(
        (r) => {
          if (r.added > 0) {
            repairs.entries += r.added;
            log.warn(
              { why, restored: r.added },
              'forwarding entries removed by hand were put back',
            );
          }
        },
        (err: Error) => log.error({ err: err.message }, 'putting back forwarding entries failed'),
      );
    },
  });
  monitor.unref();
  // The device may have gone between setup and the monitor's start.
  if (!(await ctx.nl.link(name))) void recreate();

  return {
    mode: 'kernel-vxlan',
    mtu: kernel.options.mtu,
    repairs,
    async sync(next) {
      nodes = next;
      // A device deleted without a notification (or down) is found here.
      if (!lost && !closed) {
        const link = await ctx.nl.link(name);
        if (!link || link.index !== kernel.link?.index) {
          void recreate();
          return { added: 0, removed: 0 };
        }
        if (!link.up) {
          await ctx.nl.setLink(link.index, { up: true });
          log.warn({ device: name }, `${name} was down: set it up again`);
        }
      }
      return apply();
    },
    health: () => (lost ? { ok: false, reason: lost } : { ok: true }),
    counters: () => undefined,
    async close(options) {
      closed = true;
      monitor.close();
      if (options?.undo && kernel.created) await kernel.remove().catch(() => undefined);
    },
  };
}

/** The fault report of a userspace backend (@weft/dataplane's Backend.fault and onFault). */
interface FaultReporting {
  readonly fault?: WeftError;
  onFault?(listener: (err: WeftError) => void): () => void;
}

/**
 * weft's own VTEP or flannel's UDP encapsulation in userspace. A lost device (deleted, or the
 * backend's own fault report) means: 503 with the reason, close the backend, open a new one,
 * reprogram every peer.
 */
export async function userspace(
  ctx: DataplaneContext,
  mode: 'userspace-vxlan' | 'userspace-udp' | 'userspace-wireguard',
  open: () => Backend,
  family: 4 | 6 = 4,
): Promise<FamilyDataplane> {
  const { log } = ctx;
  let backend = open();
  const indexOf = async () => (await ctx.nl.link(backend.deviceName))?.index;
  let deviceIndex = await indexOf();
  let nodes: FamilyNode[] = [];
  let lost: string | undefined;
  let closed = false;
  const repairs = { device: 0, entries: 0 };
  let unsubscribe: (() => void) | undefined;
  const deviceName = backend.deviceName;
  log.info(
    { offload: backend.offload, device: backend.deviceName, mtu: backend.mtu },
    backend.offload
      ? 'userspace dataplane up, with segmentation and coalescing offloads'
      : 'userspace dataplane up, without offloads',
  );
  const toBackend = (list: FamilyNode[]) =>
    list.map((n) => ({
      // An IPv6 VTEP (flannel-v6.<VNI>) takes its nodes' IPv6 subnets as subnet6.
      ...(family === 6 ? { subnet6: n.subnet } : { subnet: n.subnet }),
      publicIp: n.publicIp,
      vtepMac: n.vtepMac,
      name: n.key,
      // wireguard: the peer's key and, when its lease names one, its port.
      publicKey: n.publicKey,
      port: n.port || undefined,
    }));

  const reopen = async (reason: string) => {
    if (lost || closed) return;
    lost = `the ${mode} device ${deviceName} was lost (${reason}); opening it again`;
    const since = Date.now();
    log.error(
      { device: deviceName, reason },
      `${deviceName} was lost: reopening the backend and reprogramming every peer`,
    );
    unsubscribe?.();
    backend.close();
    let wait = 100;
    while (!closed) {
      try {
        backend = open();
        deviceIndex = await indexOf();
        subscribe();
        backend.setNodes(toBackend(nodes));
        lost = undefined;
        repairs.device++;
        log.info(
          { device: backend.deviceName, peers: nodes.length, ms: Date.now() - since },
          `${backend.deviceName} reopened and ${nodes.length} peers reprogrammed`,
        );
        return;
      } catch (err) {
        lost = `the ${mode} device ${deviceName} was lost and reopening it failed: ${(err as Error).message}`;
        log.error(
          { err: (err as Error).message, retryInMs: wait },
          `reopening ${deviceName} failed`,
        );
        await sleep(wait);
        wait = Math.min(wait * 2, 5000);
      }
    }
  };
  const subscribe = () => {
    const f = backend as unknown as FaultReporting;
    unsubscribe = f.onFault?.((err) => void reopen(err.message));
    if (f.fault) void reopen(f.fault.message);
  };
  subscribe();
  // A deleted TUN is also seen in the kernel's link notifications.
  const monitor = watchKernel(log, () => ({ name: deviceName, index: deviceIndex }), {
    onGone: () => void reopen(`${deviceName} was deleted`),
    onDrift: () => undefined,
  });
  monitor.unref();

  return {
    mode,
    get mtu() {
      return backend.mtu;
    },
    repairs,
    async sync(next) {
      const before = new Set(nodes.map((n) => n.key));
      const after = new Set(next.map((n) => n.key));
      for (const n of next)
        if (!before.has(n.key)) log.debug({ peer: n.key, publicIp: n.publicIp }, 'peer programmed');
      for (const n of nodes)
        if (!after.has(n.key)) log.debug({ peer: n.key, publicIp: n.publicIp }, 'peer removed');
      nodes = next;
      if (!lost) backend.setNodes(toBackend(next));
      return {
        added: next.filter((n) => !before.has(n.key)).length,
        removed: [...before].filter((k) => !after.has(k)).length,
      };
    },
    health: () => (lost ? { ok: false, reason: lost } : { ok: true }),
    counters: () => (lost ? undefined : backend.counters()),
    async close() {
      closed = true;
      monitor.close();
      unsubscribe?.();
      backend.close();
    },
  };
}

/** host-gw, one family: a route per node via its public IP (IPv6) over the underlay; routes removed by hand are put back. */
async function hostGwFamily(ctx: DataplaneContext, f: FamilySetup): Promise<FamilyDataplane> {
  const { log, underlay } = ctx;
  const direct = new DirectRoutes(ctx.nl, { network: f.network, iface: underlay.iface }, log);
  const serial = new Serial();
  const repairs = { device: 0, entries: 0 };
  let nodes: FamilyNode[] = [];
  let lost: string | undefined;
  const apply = () => serial.run(() => direct.sync(nodes));
  const monitor = watchKernel(
    log,
    () => ({ name: underlay.iface.name, index: underlay.iface.index }),
    {
      onGone: () => {
        lost = `the underlay interface ${underlay.iface.name} was deleted: restart weftd once it is back`;
        log.error({ iface: underlay.iface.name }, lost);
      },
      onDrift: (why) =>
        void apply().then(
          (r) => {
            if (r.added > 0) {
              repairs.entries += r.added;
              log.warn({ why, restored: r.added }, 'routes removed by hand were put back');
            }
          },
          (err: Error) => log.error({ err: err.message }, 'putting back routes failed'),
        ),
    },
  );
  monitor.unref();
  return {
    mode: 'host-gw',
    mtu: underlay.iface.mtu ?? 1500,
    repairs,
    sync(next) {
      nodes = next;
      return apply();
    },
    health: () => (lost ? { ok: false, reason: lost } : { ok: true }),
    counters: () => undefined,
    async close() {
      monitor.close();
    },
  };
}

/** host-gw in every family the network enables. */
async function hostGw(ctx: DataplaneContext): Promise<Dataplane> {
  return dualStack(ctx, (f) => hostGwFamily(ctx, f));
}

/** alloc: a subnet and nothing else (flannel's alloc backend); the MTU is the underlay's. */
async function alloc(ctx: DataplaneContext): Promise<Dataplane> {
  return {
    mode: 'alloc',
    mtu: ctx.underlay.iface.mtu ?? 1500,
    repairs: { device: 0, entries: 0 },
    sync: async () => ({ added: 0, removed: 0 }),
    health: () => ({ ok: true }),
    counters: () => undefined,
    close: async () => undefined,
  };
}

/** The VXLAN header overhead per underlay family: outer IPv4 (20) or IPv6 (40), UDP 8, VXLAN 8, inner Ethernet 14. */
const VXLAN_OVERHEAD = { 4: 50, 6: 70 } as const;

/**
 * vxlan: the kernel's VXLAN or weft's userspace VTEP (--vxlan-mode), one device per family as
 * flannel has them: `flannel.<VNI>` over the IPv4 underlay carrying IPv4, `flannel-v6.<VNI>` over
 * the IPv6 underlay carrying IPv6, each with its own VTEP MAC. Each device's MTU is the underlay's
 * (Backend.MTU, else the interface's) less its encapsulation: 50 bytes over IPv4, 70 over IPv6.
 */
async function vxlan(ctx: DataplaneContext): Promise<Dataplane> {
  const { log, underlay, nl } = ctx;
  const vx = ctx.config.backend.type === 'vxlan' ? ctx.config.backend : undefined;
  const underlayMtu = vx?.mtu || underlay.iface.mtu || 1500;
  const devices = ctx.families.map((f) => ({
    f,
    name: f.family === 4 ? `flannel.${ctx.vni}` : `flannel-v6.${ctx.vni}`,
    mtu: underlayMtu - VXLAN_OVERHEAD[f.family],
  }));
  const kernels =
    ctx.vxlanMode === 'userspace'
      ? undefined
      : devices.map(
          (d) =>
            new KernelVxlan(
              nl,
              {
                name: d.name,
                vni: ctx.vni,
                port: vx?.port ?? 0,
                publicIp: d.f.publicIp,
                iface: underlay.iface,
                mtu: d.mtu,
                vtepMac: d.f.vtepMac,
                vtepAddress: d.f.nodeAddress,
                network: d.f.network,
                gbp: vx?.gbp ?? false,
                learning: vx?.learning ?? false,
              },
              log,
            ),
        );
  const undo = async () => {
    for (const k of kernels ?? []) if (k.created) await k.remove().catch(() => undefined);
  };
  const choice = await chooseVxlanMode(ctx.vxlanMode, async () => {
    for (const k of kernels ?? []) await k.setup();
  }).catch(async (err) => {
    await undo();
    throw err;
  });
  if (choice.kernel && kernels) {
    log.info(
      { devices: devices.map((d) => d.name), reason: choice.reason },
      "vxlan: programming the kernel's VXLAN",
    );
    try {
      return await dualStack(ctx, async (f) => {
        const dp = await kernelVxlan(ctx, kernels[ctx.families.indexOf(f)]);
        return vx?.directRouting ? withDirectRoutes(ctx, f, dp) : dp;
      });
    } catch (err) {
      await undo();
      throw err;
    }
  }
  await undo();
  log.info({ reason: choice.reason }, "vxlan: running weft's userspace VTEP");
  if (vx?.gbp)
    throw new WeftError(
      'ERR_WEFTD_BACKEND',
      'Backend.GBP is not supported by the userspace VTEP: use --vxlan-mode kernel',
    );
  if (vx?.directRouting)
    log.info(
      {},
      "Backend.DirectRouting with the userspace VTEP: nodes on the underlay's own networks get a direct route (more specific than the device's), the VTEP still knows every node",
    );
  return dualStack(ctx, async (f) => {
    const d = devices[ctx.families.indexOf(f)];
    // A kernel-mode run before this one leaves its device behind (as flannel does): it has our name.
    const leftover = await nl.link(d.name);
    if (leftover?.kind === 'vxlan') {
      log.info(
        { device: leftover.name },
        'removing the kernel VXLAN device a kernel-mode run left',
      );
      await nl.deleteLink(leftover.index);
    }
    const dp = await userspace(
      ctx,
      'userspace-vxlan',
      () =>
        VxlanBackend.open({
          deviceName: d.name,
          vni: ctx.vni,
          port: vx?.port || 8472,
          vtepMac: f.vtepMac,
          ...(f.family === 4
            ? { vtepAddress: f.nodeAddress, network: formatCidr(f.network) }
            : { vtepAddress6: f.nodeAddress, network6: formatCidr(f.network) }),
          publicIp: f.publicIp,
          underlayMtu,
        }),
      f.family,
    );
    return vx?.directRouting ? withDirectRoutes(ctx, f, dp) : dp;
  });
}

/**
 * vxlan's DirectRouting, one family: nodes on the underlay's own networks are reached by a route
 * via their public IP (IPv6) instead of the tunnel (the kernel's VXLAN then holds no entries for them).
 */
function withDirectRoutes(
  ctx: DataplaneContext,
  f: FamilySetup,
  inner: FamilyDataplane,
): FamilyDataplane {
  const direct = new DirectRoutes(
    ctx.nl,
    { network: f.network, iface: ctx.underlay.iface },
    ctx.log,
  );
  return {
    get mode() {
      return inner.mode;
    },
    get mtu() {
      return inner.mtu;
    },
    repairs: inner.repairs,
    health: () => inner.health(),
    counters: () => inner.counters(),
    close: (o) => inner.close(o),
    async sync(nodes) {
      const onLink = nodes.filter((n) => onSameLink(n.publicIp, f.connected));
      const keys = new Set(onLink.map((n) => n.key));
      const r = await inner.sync(
        inner.mode === 'kernel-vxlan' ? nodes.filter((n) => !keys.has(n.key)) : nodes,
      );
      const d = await direct.sync(onLink);
      return { added: r.added + d.added, removed: r.removed + d.removed };
    },
  };
}

/** Sums counter snapshots: their numbers, and records of numbers (drops by reason) key by key. */
function addCounters<T extends object>(a: T, b: T): T {
  const out: Record<string, unknown> = { ...(a as Record<string, unknown>) };
  for (const [k, v] of Object.entries(b)) {
    const mine = out[k];
    if (typeof v === 'number' && typeof mine === 'number') out[k] = mine + v;
    else if (v && typeof v === 'object' && mine && typeof mine === 'object')
      out[k] = addCounters(mine as object, v as object);
    else if (mine === undefined) out[k] = v;
  }
  return out as T;
}

/**
 * A dataplane per enabled family, driven as one: each gets the nodes that have its family (an
 * IPv4-only peer reaches a dual-stack node over IPv4 alone), heals itself, and is one /readyz
 * reason when it cannot carry traffic. Brought up IPv4 first; a failure closes what is up.
 */
export async function dualStack(
  ctx: DataplaneContext,
  bringUp: (f: FamilySetup) => Promise<FamilyDataplane>,
): Promise<Dataplane> {
  const parts: { f: FamilySetup; dp: FamilyDataplane }[] = [];
  try {
    for (const f of ctx.families) parts.push({ f, dp: await bringUp(f) });
  } catch (err) {
    for (const p of parts) await p.dp.close({ undo: true }).catch(() => undefined);
    throw err;
  }
  if (parts.length === 0)
    throw new WeftError(
      'ERR_WEFTD_BACKEND',
      'neither IPv4 nor IPv6 is enabled: nothing to forward',
    );
  const many = parts.length > 1;
  return {
    get mode() {
      return parts[0].dp.mode;
    },
    get mtu() {
      return Math.min(...parts.map((p) => p.dp.mtu));
    },
    get repairs() {
      return {
        device: parts.reduce((n, p) => n + p.dp.repairs.device, 0),
        entries: parts.reduce((n, p) => n + p.dp.repairs.entries, 0),
      };
    },
    async sync(nodes) {
      let added = 0;
      let removed = 0;
      // Each family on its own: one that fails does not keep the other from being programmed.
      const results = await Promise.allSettled(
        parts.map((p) => p.dp.sync(familyNodes(nodes, p.f.family))),
      );
      for (const r of results) {
        if (r.status === 'rejected') throw r.reason;
        added += r.value.added;
        removed += r.value.removed;
      }
      return { added, removed };
    },
    health() {
      for (const p of parts) {
        const h = p.dp.health();
        if (!h.ok) return many ? { ok: false, reason: `IPv${p.f.family}: ${h.reason}` } : h;
      }
      return { ok: true };
    },
    counters() {
      const all = parts.map((p) => p.dp.counters());
      if (all.some((c) => c === undefined)) return undefined;
      return (all as CounterSnapshot[]).reduce((a, b) => addCounters(a, b));
    },
    async close(options) {
      for (const p of parts) await p.dp.close(options);
    },
  };
}

/** flannel's udp backend carries IPv4 only; so does weft's, on the wire it shares with flanneld's. */
export function udpIpv4Only(): WeftError {
  return new WeftError(
    'ERR_WEFTD_BACKEND',
    'the udp backend carries IPv4 only, as flannel\'s does: set "EnableIPv6": false in the network config, or use the vxlan or host-gw backend for IPv6',
  );
}

/** Each backend type's bring-up; a new mode is one more entry. */
export const BRING_UP: Record<
  'vxlan' | 'udp' | 'wireguard' | 'host-gw' | 'alloc',
  (ctx: DataplaneContext) => Promise<Dataplane>
> = {
  vxlan,
  udp: (ctx) =>
    dualStack(ctx, (f) => {
      if (f.family !== 4) throw udpIpv4Only();
      return userspace(ctx, 'userspace-udp', () =>
        UdpBackend.open({
          deviceName: 'flannel0',
          nodeAddress: f.nodeAddress,
          network: formatCidr(f.network),
          publicIp: f.publicIp,
          port: ctx.config.backend.type === 'udp' ? ctx.config.backend.port : 8285,
          // flannel's udp backend ignores Backend.MTU: the device is the underlay's less 28.
          underlayMtu: ctx.underlay.iface.mtu ?? 1500,
        }),
      );
    }),
  wireguard,
  'host-gw': hostGw,
  alloc,
};
