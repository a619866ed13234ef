import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { promisify } from 'node:util';
import type { CniFacts } from './cni.js';
import { bridgePorts, type DoctorContext, OVERHEAD } from './context.js';
import type { CheckResult } from './report.js';

const run = promisify(execFile);

function sysfsMtu(dev: string): number | undefined {
  try {
    return Number(readFileSync(`/sys/class/net/${dev}/mtu`, 'utf8'));
  } catch {
    return undefined;
  }
}

/**
 * flannel's MTU arithmetic: the overlay device gets the underlay's MTU less the backend's
 * overhead (vxlan 50, udp 28, wireguard 80), FLANNEL_MTU is that, and the bridge and every pod interface on it
 * are no larger (a larger one sends packets the overlay cannot carry).
 */
export function checkMtu(ctx: DoctorContext, cni: CniFacts): CheckResult[] {
  const u = ctx.underlay;
  const expected = ctx.expectedMtu;
  if (!u || expected === undefined) return [];
  const overhead = OVERHEAD[ctx.backendType ?? ''] ?? 0;
  const problems: string[] = [];
  const fixes: string[] = [];
  const b = ctx.config?.backend;
  const configured =
    b && b.type === ctx.backendType && (b.type === 'vxlan' || b.type === 'wireguard') ? b.mtu : 0;
  const base = configured
    ? { what: 'Backend.MTU', mtu: configured }
    : { what: u.iface.name, mtu: u.iface.mtu ?? 1500 };
  if (base.what === 'Backend.MTU' && base.mtu > (u.iface.mtu ?? 1500)) {
    problems.push(
      `Backend.MTU ${base.mtu} is larger than ${u.iface.name}'s MTU ${u.iface.mtu}: the overlay sends packets the underlay cannot carry`,
    );
    fixes.push(`set Backend.MTU to ${u.iface.mtu} (or remove it)`);
  }
  const dev = ctx.overlayLink;
  if (dev && ctx.overlayName && dev.mtu !== undefined && dev.mtu !== expected) {
    problems.push(
      `${ctx.overlayName}'s MTU is ${dev.mtu}, not ${base.what} ${base.mtu} - ${overhead} = ${expected}`,
    );
    fixes.push(`restart weftd (it sets ${ctx.overlayName} to ${expected})`);
  }
  const podMtu = cni.env?.mtu ?? expected;
  const bridge = cni.bridge;
  const bridgeMtu = ctx.links.find((l) => l.name === bridge)?.mtu;
  if (bridgeMtu !== undefined && bridgeMtu > podMtu) {
    problems.push(`${bridge}'s MTU ${bridgeMtu} is larger than FLANNEL_MTU ${podMtu}`);
    fixes.push(`ip link set ${bridge} mtu ${podMtu}`);
  }
  const ports = bridgeMtu !== undefined ? bridgePorts(bridge) : [];
  const tooBig = ports
    .map((p) => ({ p, mtu: sysfsMtu(p) }))
    .filter((x) => x.mtu !== undefined && x.mtu > podMtu);
  if (tooBig.length > 0) {
    problems.push(
      `pod interface${tooBig.length > 1 ? 's' : ''} on ${bridge} larger than FLANNEL_MTU ${podMtu}: ${tooBig.map((x) => `${x.p} ${x.mtu}`).join(', ')}`,
    );
    fixes.push(
      `recreate those pods (the bridge plugin gives them FLANNEL_MTU), or set ${podMtu} on both ends of each veth (ip link set ${tooBig[0].p} mtu ${podMtu}, and eth0 inside the pod)`,
    );
  }
  if (problems.length > 0)
    return [
      {
        id: 'mtu',
        status: 'fail',
        title: `MTU: ${problems.join('; ')}`,
        fix: fixes.join('; '),
        explains:
          'small requests work and large ones hang between pods on different nodes (TLS handshakes, big responses): flannel issues 1011 and 841',
      },
    ];
  const chain = overhead
    ? `${base.what} ${base.mtu} - ${overhead} = ${dev ? `${ctx.overlayName} ` : ''}${expected}`
    : `${u.iface.name} ${expected}`;
  const pods =
    bridgeMtu !== undefined
      ? `; ${bridge} ${bridgeMtu} and ${ports.length} pod interface${ports.length === 1 ? '' : 's'} <= ${podMtu}`
      : '';
  return [{ id: 'mtu', status: 'ok', title: `MTU: ${chain} = FLANNEL_MTU${pods}` }];
}

/** `ethtool -k DEV` as feature -> on; undefined when ethtool is missing or fails. */
export async function ethtoolFeatures(dev: string): Promise<Map<string, boolean> | undefined> {
  try {
    const { stdout } = await run('ethtool', ['-k', dev], { timeout: 5000 });
    return parseEthtoolFeatures(stdout);
  } catch {
    return undefined;
  }
}

export function parseEthtoolFeatures(text: string): Map<string, boolean> {
  const out = new Map<string, boolean>();
  for (const line of text.split('\n')) {
    const m = /^\s*([a-z0-9-]+): (on|off)/.exec(line);
    if (m) out.set(m[1], m[2] === 'on');
  }
  return out;
}

/** Kernel release "5.4.0-150-generic" -> [5, 4]. */
function kernelVersion(release: string): [number, number] | undefined {
  const m = /^(\d+)\.(\d+)/.exec(release);
  return m ? [Number(m[1]), Number(m[2])] : undefined;
}

/**
 * Whether a kernel has the VXLAN checksum bug behind the 63-second delay: before Linux 5.7
 * (commit ea64d8d6c675, "netfilter: nat: never update the UDP checksum when it's 0"), NAT with
 * --random-fully rewrote the source port of a VXLAN packet whose UDP checksum was left to the
 * offload and corrupted it. RHEL/CentOS 7 (3.10) and 8 (4.18) kernels are of that age.
 */
export function checksumBugKernel(release: string): boolean {
  const v = kernelVersion(release);
  return v !== undefined && (v[0] < 5 || (v[0] === 5 && v[1] < 7));
}

/**
 * Offloads that break packets: tx-checksum-ip-generic on a kernel VXLAN device on a kernel with
 * the checksum bug (or behind NAT); transmit checksumming on a veth underlay feeding userspace
 * VTEPs; LRO on an underlay that forwards pods' TCP (host-gw).
 */
export async function checkOffloads(ctx: DoctorContext): Promise<CheckResult[]> {
  const out: CheckResult[] = [];
  const u = ctx.underlay;
  const kernelVxlan = ctx.overlayLink?.kind === 'vxlan' && ctx.backendType === 'vxlan';
  const wants = kernelVxlan || ctx.backendType === 'host-gw' || u?.iface.kind === 'veth';
  if (!wants) return out;
  const dev = ctx.overlayName!;
  const devFeatures = kernelVxlan ? await ethtoolFeatures(dev) : undefined;
  const underFeatures = u ? await ethtoolFeatures(u.iface.name) : undefined;
  if ((kernelVxlan && !devFeatures) || (u && !underFeatures)) {
    out.push({
      id: 'offload',
      status: 'warn',
      title: 'offloads not checked: ethtool is missing or fails here',
      fix: 'install ethtool (Debian: apt-get install ethtool) and run the doctor again',
    });
    return out;
  }
  if (kernelVxlan && devFeatures) {
    const on = devFeatures.get('tx-checksum-ip-generic') === true;
    const buggy = checksumBugKernel(ctx.kernelRelease);
    const natted = u !== undefined && u.publicIp !== u.ifaceAddress;
    const workaround = `ethtool -K ${dev} tx-checksum-ip-generic off, kept across restarts by a udev rule: SUBSYSTEM=="net", ACTION=="add|change|move", ENV{INTERFACE}=="${dev}", RUN+="/usr/sbin/ethtool -K ${dev} tx-checksum-ip-generic off"`;
    const explains =
      'the 63-second delay reaching Services on other nodes, "UDP: bad checksum" in the receiver\'s dmesg (flannel issues 1243 and 1279, kubernetes 88986); flannel does not turn the offload off itself (its PR 1282 was closed) but documents this command (troubleshooting, "NAT"), and kube-proxy 1.19 stopped triggering it (kubernetes PR 92035)';
    if (on && buggy)
      out.push({
        id: 'offload-vxlan-csum',
        status: 'fail',
        title: `tx-checksum-ip-generic is on on ${dev} and kernel ${ctx.kernelRelease} predates the VXLAN checksum fix (Linux 5.7): a VXLAN packet NATed with --random-fully leaves with a bad UDP checksum and the receiver drops it`,
        fix: `${workaround}; or a kernel 5.7 or later`,
        explains,
      });
    else if (on && natted)
      out.push({
        id: 'offload-vxlan-csum',
        status: 'warn',
        title: `tx-checksum-ip-generic is on on ${dev} and the public IP ${u!.publicIp} is not on this node (NAT): a NAT on the way can corrupt the VXLAN UDP checksum`,
        fix: `if peers log "UDP: bad checksum" from this node: ${workaround}`,
        explains,
      });
    else
      out.push({
        id: 'offload-vxlan-csum',
        status: 'ok',
        title: `${dev}: tx-checksum-ip-generic ${on ? 'on' : 'off'}${on ? `, and kernel ${ctx.kernelRelease} has the VXLAN checksum fix (5.7)` : ''}`,
      });
  }
  if (u && underFeatures) {
    const name = u.iface.name;
    if (u.iface.kind === 'veth' && kernelVxlan && underFeatures.get('tx-checksumming') === true)
      out.push({
        id: 'offload-underlay',
        status: 'warn',
        title: `${name} is a veth with transmit checksumming on: ${dev}'s packets leave with inner TCP checksums left for hardware that never fills them, and a userspace VTEP (weft userspace, flannel udp) on the other end drops those segments`,
        fix: `ethtool -K ${name} tx off (a real NIC finishes the checksums; a veth does not)`,
        explains:
          'TCP between pods stalls while ping works, only towards nodes that run a userspace dataplane',
      });
    else if (ctx.backendType === 'host-gw' && underFeatures.get('large-receive-offload') === true)
      out.push({
        id: 'offload-underlay',
        status: 'fail',
        title: `large-receive-offload is on on ${name}, which forwards pods' TCP (host-gw): merged segments cannot be forwarded`,
        fix: `ethtool -K ${name} lro off`,
        explains:
          'TCP between pods on different nodes stalls; the kernel logs "LRO is not supported with forwarding"',
      });
    else
      out.push({
        id: 'offload-underlay',
        status: 'ok',
        title: `${name}: no offload that breaks ${ctx.backendType === 'host-gw' ? 'forwarding' : 'the overlay'} (tx-checksumming ${underFeatures.get('tx-checksumming') ? 'on' : 'off'}${u.iface.kind === 'veth' ? ', a veth' : ''}, GRO ${underFeatures.get('generic-receive-offload') ? 'on' : 'off'})`,
      });
  }
  return out;
}
