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

/** weftd's wireguard backend carries IPv4 (flannel's flannel-wg-v6 is not built yet). */
export function wireguardIpv4Only(): WeftError {
  return new WeftError(
    'ERR_WEFTD_BACKEND',
    'the wireguard backend of weftd carries IPv4 only (flannel-wg-v6 is not built): set "EnableIPv6": false in the network config, or use the vxlan or host-gw backend for IPv6',
  );
}

/**
 * wireguard: the kernel's WireGuard when it has one (a `wireguard` link and generic netlink, as
 * flannel's wgctrl programs it), weft's userspace WireGuard otherwise (--wireguard-mode).
 */
export async function wireguard(ctx: DataplaneContext): Promise<Dataplane> {
  return dualStack(ctx, (f) => {
    if (f.family !== 4) throw wireguardIpv4Only();
    return wireguardIpv4(ctx, f);
  });
}

async function wireguardIpv4(ctx: DataplaneContext, f: FamilySetup): Promise<FamilyDataplane> {
  const wg = ctx.wireguard;
  if (!wg) throw new WeftError('ERR_WEFTD_BACKEND', 'wireguard: no key pair was set up');
  const cfg = backendConfig(ctx);
  if (cfg.mode === 'ipv6')
    throw new WeftError(
      'ERR_WEFTD_BACKEND',
      'Backend.Mode ipv6 reaches peers over IPv6; weftd runs IPv4 networks: use separate, auto or ipv4',
    );
  const underlayMtu = cfg.mtu || ctx.underlay.iface.mtu || 1500;
  const { log, nl } = ctx;
  // flannel recreates a device it finds (ensureLink); a userspace run's TUN is gone with its process.
  const leftover = await nl.link(WIREGUARD_DEVICE);
  if (leftover) {
    log.info(
      { device: WIREGUARD_DEVICE, kind: leftover.kind },
      `removing the ${WIREGUARD_DEVICE} a previous run left`,
    );
    await nl.deleteLink(leftover.index);
  }
  let reason = '--wireguard-mode userspace';
  if (wg.mode !== 'userspace') {
    const probe = await probeKernelWireguard(nl, WIREGUARD_DEVICE, { mtu: underlayMtu - OVERHEAD });
    if (probe.ok) {
      log.info(
        {
          device: WIREGUARD_DEVICE,
          reason: wg.mode === 'auto' ? 'auto: the kernel has WireGuard' : '--wireguard-mode kernel',
        },
        "wireguard: programming the kernel's WireGuard",
      );
      return kernelWireguard(ctx, f, cfg, probe.genl, probe.ifindex, underlayMtu - OVERHEAD);
    }
    if (wg.mode === 'kernel')
      throw new WeftError(
        'ERR_WEFTD_BACKEND',
        `--wireguard-mode kernel: ${probe.reason}; load the wireguard module, or use --wireguard-mode auto or userspace`,
      );
    reason = `auto: ${probe.reason}`;
  }
  log.info({ reason }, "wireguard: running weft's userspace WireGuard");
  return userspace(ctx, 'userspace-wireguard', () =>
    WireguardBackend.open({
      deviceName: WIREGUARD_DEVICE,
      privateKey: wg.privateKey,
      nodeAddress: f.nodeAddress,
      network: formatCidr(f.network),
      publicIp: f.publicIp,
      listenPort: cfg.listenPort,
      presharedKey: cfg.psk,
      persistentKeepaliveSeconds: cfg.persistentKeepaliveSeconds,
      underlayMtu,
    }),
  );
}

/** The kernel's WireGuard, configured as flannel's wgDevice does (not testable on a kernel without it). */
async function kernelWireguard(
  ctx: DataplaneContext,
  f: FamilySetup,
  cfg: WireguardBackendConfig,
  genl: KernelWireguard,
  ifindex: number,
  mtu: number,
): Promise<FamilyDataplane> {
  const { nl, log } = ctx;
  const psk = cfg.psk ? parseKey(cfg.psk, 'PSK') : undefined;
  try {
    await genl.setDevice(WIREGUARD_DEVICE, {
      privateKey: parseKey(ctx.wireguard!.privateKey, 'private key'),
      listenPort: cfg.listenPort,
      replacePeers: true,
    });
    await nl.replaceAddress(ifindex, `${f.nodeAddress}/32`);
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
          endpoint: { address: n.publicIp, port: n.port || cfg.listenPort },
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
      if (changes.length > 0) await genl.setDevice(WIREGUARD_DEVICE, { peers: changes });
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
      // flannel removes flannel-wg when it stops.
      await nl.deleteLink(ifindex).catch(() => undefined);
    },
  };
}
