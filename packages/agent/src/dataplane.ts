import { type Cidr4, formatCidr, WeftError } from '@weft/core';
import { type Backend, type CounterSnapshot, UdpBackend, VxlanBackend } from '@weft/dataplane';
import { AddressFamily, type Rtnl, type RtnlEvent, RtnlMonitor } from '@weft/netlink';
import type { NetworkConfig } from '@weft/subnet';
import type { Logger as PinoLogger } from 'pino';
import {
  chooseVxlanMode,
  DirectRoutes,
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
  /** The MTU pods get (FLANNEL_MTU). */
  readonly mtu: number;
  /** Forwards to exactly these nodes; sets nothing that is already right. */
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

/** What a mode's bring-up gets from the daemon. */
export interface DataplaneContext {
  nl: Rtnl;
  log: PinoLogger;
  config: NetworkConfig;
  network: Cidr4;
  underlay: Underlay;
  /** Our VTEP (or node) address: our subnet's first address. */
  nodeAddress: string;
  vtepMac: string;
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
async function kernelVxlan(ctx: DataplaneContext, kernel: KernelVxlan): Promise<Dataplane> {
  const { log } = ctx;
  const name = kernel.options.name;
  const serial = new Serial();
  const repairs = { device: 0, entries: 0 };
  let nodes: RemoteNode[] = [];
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
): Promise<Dataplane> {
  const { log } = ctx;
  let backend = open();
  const indexOf = async () => (await ctx.nl.link(backend.deviceName))?.index;
  let deviceIndex = await indexOf();
  let nodes: RemoteNode[] = [];
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
  const toBackend = (list: RemoteNode[]) =>
    list.map((n) => ({
      subnet: n.subnet,
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

/** host-gw: a route per node over the underlay; routes removed by hand are put back. */
async function hostGw(ctx: DataplaneContext): Promise<Dataplane> {
  const { log, underlay } = ctx;
  const direct = new DirectRoutes(ctx.nl, { network: ctx.network, iface: underlay.iface }, log);
  const serial = new Serial();
  const repairs = { device: 0, entries: 0 };
  let nodes: RemoteNode[] = [];
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

/** vxlan: the kernel's VXLAN or weft's userspace VTEP (--vxlan-mode), flannel's MTU rule. */
async function vxlan(ctx: DataplaneContext): Promise<Dataplane> {
  const { log, underlay, nl } = ctx;
  const vx = ctx.config.backend.type === 'vxlan' ? ctx.config.backend : undefined;
  // flannel's Backend.MTU is the underlay MTU; the device gets 50 less (pkg/backend/vxlan).
  const underlayMtu = vx?.mtu || underlay.iface.mtu || 1500;
  const name = `flannel.${ctx.vni}`;
  const kernel =
    ctx.vxlanMode === 'userspace'
      ? undefined
      : new KernelVxlan(
          nl,
          {
            name,
            vni: ctx.vni,
            port: vx?.port ?? 0,
            publicIp: underlay.publicIp,
            iface: underlay.iface,
            mtu: underlayMtu - 50,
            vtepMac: ctx.vtepMac,
            vtepAddress: ctx.nodeAddress,
            network: ctx.network,
            gbp: vx?.gbp ?? false,
            learning: vx?.learning ?? false,
          },
          log,
        );
  const choice = await chooseVxlanMode(ctx.vxlanMode, async () => kernel?.setup());
  if (choice.kernel && kernel) {
    log.info({ device: name, reason: choice.reason }, "vxlan: programming the kernel's VXLAN");
    try {
      const dp = await kernelVxlan(ctx, kernel);
      return vx?.directRouting ? withDirectRoutes(ctx, dp) : dp;
    } catch (err) {
      if (kernel.created) await kernel.remove().catch(() => undefined);
      throw err;
    }
  }
  log.info({ reason: choice.reason }, "vxlan: running weft's userspace VTEP");
  if (vx?.gbp)
    throw new WeftError(
      'ERR_WEFTD_BACKEND',
      'Backend.GBP is not supported by the userspace VTEP: use --vxlan-mode kernel',
    );
  if (vx?.directRouting)
    log.warn(
      {},
      'Backend.DirectRouting is not applied by the userspace VTEP: every node is reached over VXLAN',
    );
  // A kernel-mode run before this one leaves its device behind (as flannel does): it has our name.
  const leftover = await nl.link(name);
  if (leftover?.kind === 'vxlan') {
    log.info({ device: leftover.name }, 'removing the kernel VXLAN device a kernel-mode run left');
    await nl.deleteLink(leftover.index);
  }
  const dp = await userspace(ctx, 'userspace-vxlan', () =>
    VxlanBackend.open({
      deviceName: name,
      vni: ctx.vni,
      port: vx?.port || 8472,
      vtepMac: ctx.vtepMac,
      vtepAddress: ctx.nodeAddress,
      network: formatCidr(ctx.network),
      publicIp: underlay.publicIp,
      underlayMtu,
    }),
  );
  return vx?.directRouting ? withDirectRoutes(ctx, dp) : dp;
}

/**
 * vxlan's DirectRouting: nodes on the underlay's own networks are reached by a route via their
 * public IP instead of the tunnel (the kernel's VXLAN then holds no entries for them).
 */
function withDirectRoutes(ctx: DataplaneContext, inner: Dataplane): Dataplane {
  const direct = new DirectRoutes(
    ctx.nl,
    { network: ctx.network, iface: ctx.underlay.iface },
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
      const onLink = nodes.filter((n) => onSameLink(n.publicIp, ctx.underlay.connected));
      const keys = new Set(onLink.map((n) => n.key));
      const r = await inner.sync(
        inner.mode === 'kernel-vxlan' ? nodes.filter((n) => !keys.has(n.key)) : nodes,
      );
      const d = await direct.sync(onLink);
      return { added: r.added + d.added, removed: r.removed + d.removed };
    },
  };
}

/** Each backend type's bring-up; a new mode is one more entry. */
export const BRING_UP: Record<
  'vxlan' | 'udp' | 'wireguard' | 'host-gw' | 'alloc',
  (ctx: DataplaneContext) => Promise<Dataplane>
> = {
  vxlan,
  udp: (ctx) =>
    userspace(ctx, 'userspace-udp', () =>
      UdpBackend.open({
        deviceName: 'flannel0',
        nodeAddress: ctx.nodeAddress,
        network: formatCidr(ctx.network),
        publicIp: ctx.underlay.publicIp,
        port: ctx.config.backend.type === 'udp' ? ctx.config.backend.port : 8285,
        // flannel's udp backend ignores Backend.MTU: the device is the underlay's less 28.
        underlayMtu: ctx.underlay.iface.mtu ?? 1500,
      }),
    ),
  wireguard,
  'host-gw': hostGw,
  alloc,
};
