import { formatCidr, WeftError } from '@weft/core';
import { parseKey, WireguardBackend } from '@weft/dataplane';
import {
  type KernelWireguard,
  type KernelWireguardPeer,
  probeKernelWireguard,
  RtScope,
} from '@weft/netlink';
import type { WireguardBackendConfig } from '@weft/subnet';
import {
  type Dataplane,
  type DataplaneContext,
  dualStack,
  type FamilyDataplane,
  type FamilySetup,
  userspace,
} from './dataplane.js';
import type { FamilyNode } from './kernel.js';

/** flannel's device name and the bytes it takes off the MTU (pkg/backend/wireguard). */
export const WIREGUARD_DEVICE = 'flannel-wg';
const OVERHEAD = 80;

/** This node's key pair and the mode, as the daemon hands them to the bring-up. */
export interface WireguardContext {
  privateKey: string;
  publicKey: string;
  mode: 'kernel' | 'userspace' | 'auto';
}

/** The `{"PublicKey": ..., "Port": ...}` of a wireguard lease (keys matched as Go's JSON does). */
export function wireguardLeaseData(data: unknown): { publicKey: string; port: number } | undefined {
  if (typeof data !== 'object' || data === null || Array.isArray(data)) return undefined;
  const get = (name: string) => {
    const o = data as Record<string, unknown>;
    if (Object.hasOwn(o, name)) return o[name];
    const k = Object.keys(o).find((x) => x.toLowerCase() === name.toLowerCase());
    return k === undefined ? undefined : o[k];
  };
  const publicKey = get('PublicKey');
  try {
    parseKey(publicKey, 'PublicKey');
  } catch {
    return undefined;
  }
  const port = get('Port');
  return {
    publicKey: publicKey as string,
    port: typeof port === 'number' && Number.isInteger(port) && port > 0 && port < 65536 ? port : 0,
  };
}

function backendConfig(ctx: DataplaneContext): WireguardBackendConfig {
  const b = ctx.config.backend;
  if (b.type === 'wireguard') return b;
  // --backend-type wireguard over a config of another type: flannel's defaults.
  return {
    type: 'wireguard',
    listenPort: 51820,
    listenPortV6: 51821,
    mtu: 0,
    persistentKeepaliveSeconds: 0,
    mode: 'separate',
  };
}

/** flannel's second device, for IPv6 in Mode separate (its default). */
export const WIREGUARD_DEVICE_V6 = 'flannel-wg-v6';

/** flannel's Mode auto, ipv4 and ipv6 put both families in one flannel-wg; weftd runs separate. */
export function wireguardOneDevice(mode: string): WeftError {
  return new WeftError(
    'ERR_WEFTD_BACKEND',
    `Backend.Mode ${mode} puts both families in one flannel-wg device, which weftd does not build: with IPv6 enabled use "Mode": "separate" (flannel's default: flannel-wg and flannel-wg-v6)`,
  );
}

/**
 * wireguard: the kernel's WireGuard when it has one (a `wireguard` link and generic netlink, as
 * flannel's wgctrl programs it), weft's userspace WireGuard otherwise (--wireguard-mode). With
 * IPv6, flannel's Mode separate: `flannel-wg` for IPv4 on ListenPort, `flannel-wg-v6` for IPv6
 * over the IPv6 underlay on ListenPortV6, one key pair for both.
 */
export async function wireguard(ctx: DataplaneContext): Promise<Dataplane> {
  const cfg = backendConfig(ctx);
  if (ctx.families.some((f) => f.family === 6) && cfg.mode !== 'separate')
    throw wireguardOneDevice(cfg.mode);
  return dualStack(ctx, (f) => wireguardFamily(ctx, f, cfg));
}

async function wireguardFamily(
  ctx: DataplaneContext,
  f: FamilySetup,
  cfg: WireguardBackendConfig,
): Promise<FamilyDataplane> {
  const wg = ctx.wireguard;
  if (!wg) throw new WeftError('ERR_WEFTD_BACKEND', 'wireguard: no key pair was set up');
  if (cfg.mode === 'ipv6')
    throw new WeftError(
      'ERR_WEFTD_BACKEND',
      'Backend.Mode ipv6 reaches IPv4 peers over IPv6 in one device, which weftd does not build: use separate, auto or ipv4',
    );
  const name = f.family === 4 ? WIREGUARD_DEVICE : WIREGUARD_DEVICE_V6;
  const listenPort = f.family === 4 ? cfg.listenPort : cfg.listenPortV6;
  const underlayMtu = cfg.mtu || ctx.underlay.iface.mtu || 1500;
  const { log, nl } = ctx;
  // flannel recreates a device it finds (ensureLink); a userspace run's TUN is gone with its process.
  const leftover = await nl.link(name);
  if (leftover) {
    log.info({ device: name, kind: leftover.kind }, `removing the ${name} a previous run left`);
    await nl.deleteLink(leftover.index);
  }
  let reason = '--wireguard-mode userspace';
  if (wg.mode !== 'userspace') {
    const probe = await probeKernelWireguard(nl, name, { mtu: underlayMtu - OVERHEAD });
    if (probe.ok) {
      log.info(
        {
          device: name,
          reason: wg.mode === 'auto' ? 'auto: the kernel has WireGuard' : '--wireguard-mode kernel',
        },
        "wireguard: programming the kernel's WireGuard",
      );
      return kernelWireguard(
        ctx,
        f,
        cfg,
        name,
        listenPort,
        probe.genl,
        probe.ifindex,
        underlayMtu - OVERHEAD,
      );
    }
    if (wg.mode === 'kernel')
      throw new WeftError(
        'ERR_WEFTD_BACKEND',
        `--wireguard-mode kernel: ${probe.reason}; load the wireguard module, or use --wireguard-mode auto or userspace`,
      );
    reason = `auto: ${probe.reason}`;
  }
  log.info({ device: name, reason }, "wireguard: running weft's userspace WireGuard");
  return userspace(
    ctx,
    'userspace-wireguard',
    () =>
      WireguardBackend.open({
        deviceName: name,
        privateKey: wg.privateKey,
        ...(f.family === 4
          ? { nodeAddress: f.nodeAddress, network: formatCidr(f.network) }
          : { nodeAddress6: f.nodeAddress, network6: formatCidr(f.network) }),
        publicIp: f.publicIp,
        listenPort,
        presharedKey: cfg.psk,
        persistentKeepaliveSeconds: cfg.persistentKeepaliveSeconds,
        underlayMtu,
      }),
    f.family,
  );
}

/** The kernel's WireGuard, configured as flannel's wgDevice does (not testable on a kernel without it). */
async function kernelWireguard(
  ctx: DataplaneContext,
  f: FamilySetup,
  cfg: WireguardBackendConfig,
  name: string,
  listenPort: number,
  genl: KernelWireguard,
  ifindex: number,
  mtu: number,
): Promise<FamilyDataplane> {
  const { nl, log } = ctx;
  const psk = cfg.psk ? parseKey(cfg.psk, 'PSK') : undefined;
  try {
    await genl.setDevice(name, {
      privateKey: parseKey(ctx.wireguard!.privateKey, 'private key'),
      listenPort,
      replacePeers: true,
    });
    await nl.replaceAddress(ifindex, `${f.nodeAddress}/${f.family === 4 ? 32 : 128}`, {
      noDad: f.family === 6,
    });
    await nl.setLink(ifindex, { up: true });
    await nl.replaceRoute({ dst: formatCidr(f.network), oif: ifindex, scope: RtScope.link });
  } catch (err) {
    genl.close();
    await nl.deleteLink(ifindex).catch(() => undefined);
    throw err;
  }
  let peers = new Map<string, FamilyNode>();
  let closed = false;
  return {
    mode: 'kernel-wireguard',
    mtu,
    repairs: { device: 0, entries: 0 },
    async sync(nodes) {
      const next = new Map(nodes.filter((n) => n.publicKey).map((n) => [n.publicKey!, n]));
      const changes: KernelWireguardPeer[] = [];
      for (const [key, n] of next)
        changes.push({
          publicKey: parseKey(key, 'PublicKey'),
          presharedKey: psk,
          endpoint: { address: n.publicIp, port: n.port || listenPort },
          persistentKeepaliveSeconds: cfg.persistentKeepaliveSeconds,
          replaceAllowedIps: true,
          allowedIps: [n.subnet],
        });
      let removed = 0;
      for (const key of peers.keys())
        if (!next.has(key)) {
          changes.push({ publicKey: parseKey(key, 'PublicKey'), remove: true });
          removed++;
        }
      if (changes.length > 0) await genl.setDevice(name, { peers: changes });
      const added = [...next.keys()].filter((k) => !peers.has(k)).length;
      peers = next;
      log.debug({ peers: next.size }, 'kernel WireGuard peers set');
      return { added, removed };
    },
    health: () => (closed ? { ok: false, reason: 'closed' } : { ok: true }),
    counters: () => undefined,
    async close() {
      closed = true;
      genl.close();
      // flannel removes flannel-wg (and flannel-wg-v6) when it stops.
      await nl.deleteLink(ifindex).catch(() => undefined);
    },
  };
}
