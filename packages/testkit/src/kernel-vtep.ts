import type { Netns } from './netns.js';

/**
 * Configures a Linux kernel VXLAN device in `ns` exactly as flannel's vxlan backend configures
 * flannel.<VNI> for one remote node (pkg/backend/vxlan: device, /32 address, onlink route via
 * the remote VTEP address, permanent neighbor, FDB entry). Options leave parts out, as tests need.
 */
export interface KernelVtep {
  ns: Netns;
  localIp: string;
  vni: number;
  port: number;
  vtepMac: string;
  vtepAddress: string;
  remote: { subnet: string; vtepAddress: string; vtepMac: string; publicIp: string };
  /** Skip the permanent neighbor entry: the kernel then ARPs over VXLAN. */
  withoutNeighbor?: boolean;
  /** Add `bridge fdb append 00:00:00:00:00:00 ... dst <remote>` (where the kernel sends its ARP). */
  defaultFdb?: boolean;
  /** The peer reads the datagrams in userspace (default true): see the checksum note below. */
  userspacePeer?: boolean;
}

export async function configureKernelVtep(v: KernelVtep): Promise<string> {
  const dev = `flannel.${v.vni}`.slice(0, 15);
  const lines = [
    // Over a veth the kernel leaves the inner TCP checksum for "hardware" to fill; no hardware
    // ever does, and a userspace peer would read the partial sum. A real NIC computes it.
    v.userspacePeer === false ? '' : 'ethtool -K veth0 tx off >/dev/null',
    `ip link add ${dev} type vxlan id ${v.vni} local ${v.localIp} dstport ${v.port} nolearning dev veth0`,
    `ip link set ${dev} address ${v.vtepMac} mtu 1450`,
    `ip addr add ${v.vtepAddress}/32 dev ${dev}`,
    `ip link set ${dev} up`,
    `ip route add ${v.remote.subnet} via ${v.remote.vtepAddress} dev ${dev} onlink`,
    v.withoutNeighbor
      ? ''
      : `ip neigh replace ${v.remote.vtepAddress} lladdr ${v.remote.vtepMac} dev ${dev} nud permanent`,
    `bridge fdb append ${v.remote.vtepMac} dev ${dev} dst ${v.remote.publicIp}`,
    v.defaultFdb ? `bridge fdb append 00:00:00:00:00:00 dev ${dev} dst ${v.remote.publicIp}` : '',
  ].filter(Boolean);
  await v.ns.sh(lines.join('\n'));
  return dev;
}
