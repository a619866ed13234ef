import { cidrNetwork, formatCidr, ipv4InCidr, parseCidr, parseIpv4 } from '@weft/core';
import { vxlanLeaseData } from '@weft/subnet';
import { onSameLink, vtepAddress } from '../kernel.js';
import { type DoctorContext, ownVtep, peerLeases } from './context.js';
import type { CheckResult } from './report.js';

const describe = (running: string) =>
  ({
    'userspace-udp': "weft's udp backend",
    'userspace-vxlan': "weft's userspace VTEP",
    'userspace-wireguard': "weft's userspace WireGuard",
    'kernel-wireguard': "the kernel's WireGuard",
  })[running] ?? running;

const networkOf = (subnet: string) => formatCidr(cidrNetwork(parseCidr(subnet)));

/**
 * What the kernel holds against the leases, as weftd programs it: for the kernel's VXLAN, per
 * peer a route via its VTEP address (onlink), a neighbor with its VTEP MAC and an FDB entry
 * sending that MAC to its public IP; for host-gw a route via its public IP. A stale MAC is named
 * with both values; entries for leases that are gone are listed. The device's own MAC and
 * address are checked against this node's lease.
 */
export async function checkKernelState(ctx: DoctorContext): Promise<CheckResult[]> {
  const nl = ctx.nl;
  const u = ctx.underlay;
  if (!nl || !u || !ctx.own || ctx.leasesError) return [];
  const { peers } = peerLeases(ctx);
  const running = ctx.running;
  if (
    running === 'userspace-vxlan' ||
    running === 'userspace-udp' ||
    running === 'userspace-wireguard' ||
    running === 'kernel-wireguard'
  ) {
    const dev = ctx.overlayLink!;
    const network = ctx.config?.network;
    const routes = await nl.routes({ family: 4, oif: dev.index });
    const routed =
      network !== undefined && routes.some((r) => r.dst === formatCidr(network) && !r.gateway);
    const addressed = ctx.addresses.some(
      (a) => a.index === dev.index && a.address === ownVtep(ctx),
    );
    if (!routed || !addressed)
      return [
        {
          id: 'kernel-state',
          status: 'fail',
          title: `${dev.name} (${describe(running)}) lacks ${[!addressed && `its address ${ownVtep(ctx)}`, !routed && network && `the route for ${formatCidr(network)}`].filter(Boolean).join(' and ')}`,
          fix: 'restart weftd: it configures the device when it opens it',
          explains: 'pods cannot reach other nodes: their packets never enter the overlay',
        },
      ];
    return [
      {
        id: 'kernel-state',
        status: 'ok',
        title: `${dev.name} holds ${ownVtep(ctx)} and the route for the network; the ${peers.length} peer${peers.length === 1 ? '' : 's'} live in ${running === 'kernel-wireguard' ? "the kernel's WireGuard peer table" : "weft's userspace tables"}${ctx.backendType === 'wireguard' ? '' : ' (the path checks try them)'}`,
      },
    ];
  }
  if (running === 'host-gw') return hostGwState(ctx, peers);
  if (running !== 'kernel-vxlan') {
    if (ctx.overlayName)
      return [
        {
          id: 'kernel-state',
          status: 'fail',
          title: `no overlay device: ${ctx.overlayName} does not exist, so no packet reaches another node`,
          fix: 'start weftd (it creates the device and programs every peer)',
          explains: 'pods on this node reach only pods on this node',
        },
      ];
    return [];
  }

  const dev = ctx.overlayLink!;
  const idx = dev.index;
  const out: CheckResult[] = [];
  const ownMac = vxlanLeaseData(ctx.own.attrs)?.vtepMac;
  const problems: string[] = [];
  if (ownMac && dev.mac?.toLowerCase() !== ownMac)
    problems.push(
      `${dev.name}'s MAC is ${dev.mac}, but this node's lease says VtepMAC ${ownMac}: the other nodes send to ${ownMac} and this node drops it`,
    );
  const ownAddress = ownVtep(ctx)!;
  if (!ctx.addresses.some((a) => a.index === idx && a.address === ownAddress))
    problems.push(`${dev.name} does not hold ${ownAddress}/32 (this node's VTEP address)`);

  // One dump at a time: a netlink socket refuses a second one in flight (EBUSY).
  const routes = await nl.routes({ family: 4, oif: idx });
  const neighbors = await nl.neighbors({ family: 4, ifindex: idx });
  const fdb = await nl.fdb(idx);
  const direct = ctx.config?.backend.type === 'vxlan' && ctx.config.backend.directRouting;
  const underRoutes = direct ? await nl.routes({ family: 4, oif: u.iface.index }) : [];
  const wantRoutes = new Set<string>();
  const wantNeigh = new Set<string>();
  const wantMacs = new Set<string>();
  for (const l of peers) {
    const mac = vxlanLeaseData(l.attrs)!.vtepMac;
    const vtep = vtepAddress(l.subnet);
    const dst = networkOf(l.subnet);
    const who = `${l.subnet} (${l.attrs.publicIp})`;
    if (direct && onSameLink(l.attrs.publicIp, u.connected)) {
      if (!underRoutes.some((r) => r.dst === dst && r.gateway === l.attrs.publicIp))
        problems.push(`no direct route to ${dst} via ${l.attrs.publicIp} (DirectRouting)`);
      continue;
    }
    wantRoutes.add(dst);
    wantNeigh.add(vtep);
    wantMacs.add(mac);
    if (!routes.some((r) => r.dst === dst && r.gateway === vtep && r.onlink))
      problems.push(`no route to ${dst} via ${vtep} onlink on ${dev.name} for ${who}`);
    const neigh = neighbors.find((x) => x.ip === vtep);
    if (!neigh?.mac) problems.push(`no neighbor entry for ${vtep} (${who}) on ${dev.name}`);
    else if (neigh.mac.toLowerCase() !== mac)
      problems.push(
        `stale neighbor: ${vtep} on ${dev.name} has MAC ${neigh.mac}, but the lease of ${who} says ${mac}`,
      );
    if (!fdb.some((f) => f.mac.toLowerCase() === mac && f.dst === l.attrs.publicIp)) {
      const old = fdb.find((f) => f.dst === l.attrs.publicIp);
      problems.push(
        old
          ? `stale FDB entry: ${dev.name} sends ${old.mac} to ${l.attrs.publicIp}, but the lease of ${who} says VtepMAC ${mac}`
          : `no FDB entry sending ${mac} to ${l.attrs.publicIp} (${who})`,
      );
    }
  }
  const leftovers: string[] = [];
  const network = ctx.config?.network;
  for (const r of routes)
    if (
      r.gateway &&
      !wantRoutes.has(r.dst) &&
      (!network || ipv4InCidr(parseIpv4(r.gateway), network))
    )
      leftovers.push(`route ${r.dst} via ${r.gateway}`);
  for (const x of neighbors)
    if (x.mac && !wantNeigh.has(x.ip)) leftovers.push(`neighbor ${x.ip} ${x.mac}`);
  const staleDsts = new Set(peers.map((l) => l.attrs.publicIp));
  for (const f of fdb)
    if (f.dst && !wantMacs.has(f.mac.toLowerCase()) && !staleDsts.has(f.dst))
      leftovers.push(`FDB ${f.mac} -> ${f.dst}`);

  const explains =
    'pods on one node cannot reach pods on another after that node rebooted or was recreated with a new VTEP MAC (flannel issue 1795), or traffic for a gone node black-holes';
  if (problems.length > 0)
    out.push({
      id: 'kernel-state',
      status: 'fail',
      title: problems.join('; '),
      fix: "restart weftd (or wait --resync seconds): it reprograms every peer from the leases; if a peer's own lease is stale, restart weftd on that peer",
      explains,
    });
  else
    out.push({
      id: 'kernel-state',
      status: 'ok',
      title: `${dev.name}: route, neighbor and FDB entry for each of ${peers.length} peer${peers.length === 1 ? '' : 's'}, each with its lease's VTEP MAC`,
    });
  if (leftovers.length > 0)
    out.push({
      id: 'kernel-leftovers',
      status: 'warn',
      title: `entries on ${dev.name} for no current lease: ${leftovers.join(', ')}`,
      fix: 'weftd removes them at its next resync; with weftd stopped, delete them (ip route del / ip neigh del / bridge fdb del)',
      explains: 'packets for a subnet whose node is gone go to an address nobody answers',
    });
  return out;
}

async function hostGwState(
  ctx: DoctorContext,
  peers: ReturnType<typeof peerLeases>['peers'],
): Promise<CheckResult[]> {
  const u = ctx.underlay!;
  const routes = await ctx.nl!.routes({ family: 4, oif: u.iface.index });
  const problems: string[] = [];
  for (const l of peers) {
    const dst = networkOf(l.subnet);
    if (!routes.some((r) => r.dst === dst && r.gateway === l.attrs.publicIp))
      problems.push(
        onSameLink(l.attrs.publicIp, u.connected)
          ? `no route to ${dst} via ${l.attrs.publicIp}`
          : `${l.attrs.publicIp} (${dst}) is not on ${u.iface.name}'s networks: host-gw needs every node on one L2 segment`,
      );
  }
  const network = ctx.config?.network;
  const leftovers = routes
    .filter(
      (r) =>
        r.gateway &&
        network &&
        ipv4InCidr(parseCidr(r.dst).address as number, network) &&
        !peers.some((l) => networkOf(l.subnet) === r.dst && l.attrs.publicIp === r.gateway),
    )
    .map((r) => `route ${r.dst} via ${r.gateway}`);
  const out: CheckResult[] = [];
  if (problems.length > 0)
    out.push({
      id: 'kernel-state',
      status: 'fail',
      title: problems.join('; '),
      fix: 'restart weftd (it programs a route per peer); host-gw needs the nodes on one L2 network, else use vxlan',
      explains:
        'flannel host-gw: "Error adding route ... network is unreachable" / pods unreachable on some nodes',
    });
  else
    out.push({
      id: 'kernel-state',
      status: 'ok',
      title: `a route via each of ${peers.length} peer${peers.length === 1 ? '' : 's'} on ${u.iface.name}`,
    });
  if (leftovers.length > 0)
    out.push({
      id: 'kernel-leftovers',
      status: 'warn',
      title: `routes on ${u.iface.name} for no current lease: ${leftovers.join(', ')}`,
      fix: 'weftd removes them at its next resync; with weftd stopped: ip route del',
    });
  return out;
}
