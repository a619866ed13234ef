import type { createTwoNodes } from '@weft/testkit';

/** The IPv6 underlay (node a, node b) and the pod-side VTEP addresses the IPv6 tests use. */
export const V6 = {
  a: 'fd00::1',
  b: 'fd00::2',
  vtepA: 'fd00:10:244:1::',
  vtepB: 'fd00:10:244:2::',
  subnetA: 'fd00:10:244:1::/64',
  subnetB: 'fd00:10:244:2::/64',
  network: 'fd00:10:244::/48',
} as const;

/**
 * Node b as flannel's vxlan backend programs flannel-v6.1 for one remote node (node a, whose
 * VTEP weft will be): VXLAN over an IPv6 underlay carrying IPv6 (RFC 7348 section 5 allows either
 * family outside), the remote reached by route via its VTEP address (onlink), a permanent
 * neighbor and an FDB entry to its IPv6 underlay address. Both veths checksum before sending, as
 * a NIC would put packets on the wire: a userspace peer reads inner checksums the kernel would
 * otherwise leave partial for "hardware", and a capture shows what was sent.
 */
export async function kernelVtep6(
  nodes: ReturnType<typeof createTwoNodes>,
  macA: string,
  macB: string,
): Promise<void> {
  await nodes.a.exec(['ip', 'addr', 'add', `${V6.a}/64`, 'dev', 'veth0', 'nodad']);
  await nodes.a.exec(['ethtool', '-K', 'veth0', 'tx', 'off']);
  await nodes.b.sh(
    [
      `ip addr add ${V6.b}/64 dev veth0 nodad`,
      'ethtool -K veth0 tx off >/dev/null',
      `ip link add flannel-v6.1 address ${macB} mtu 1430 type vxlan id 1 local ${V6.b} dstport 8472 nolearning dev veth0`,
      `ip addr add ${V6.vtepB}/128 dev flannel-v6.1 nodad`,
      'ip link set flannel-v6.1 up',
      `ip -6 neigh replace ${V6.vtepA} lladdr ${macA} dev flannel-v6.1 nud permanent`,
      `bridge fdb append ${macA} dev flannel-v6.1 dst ${V6.a} self permanent`,
      `ip -6 route add ${V6.subnetA} via ${V6.vtepA} dev flannel-v6.1 onlink`,
    ].join('\n'),
  );
}

/** weft's side of it: the options for node a's VTEP (add offload, buffers and so on). */
export function weftVtep6(macA: string, macB: string) {
  return {
    type: 'vxlan',
    deviceName: 'flannel-v6.1',
    vni: 1,
    port: 8472,
    vtepMac: macA,
    vtepAddress6: V6.vtepA,
    network6: V6.network,
    publicIp: V6.a,
    nodes: [{ subnet6: V6.subnetB, publicIp: V6.b, vtepMac: macB }],
  } as const;
}
