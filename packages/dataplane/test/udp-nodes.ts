import { startDataplane, type TwoNodes } from '@weft/testkit';

/**
 * Two weft udp nodes as flannel's udp backend would run them: a (10.244.1.0/24) and b
 * (10.244.2.0/24) over the pair's underlay, each routing the other's subnet to it.
 */
export async function startUdpNodes(
  nodes: TwoNodes,
  extra: { offload?: boolean; workers?: number } = {},
) {
  const common = { type: 'udp', network: '10.244.0.0/16', deviceName: 'flannel0', ...extra };
  const a = await startDataplane(nodes.a, {
    ...common,
    nodeAddress: '10.244.1.0',
    publicIp: nodes.ipA,
    nodes: [{ subnet: '10.244.2.0/24', publicIp: nodes.ipB }],
  });
  const b = await startDataplane(nodes.b, {
    ...common,
    nodeAddress: '10.244.2.0',
    publicIp: nodes.ipB,
    nodes: [{ subnet: '10.244.1.0/24', publicIp: nodes.ipA }],
  });
  return { a, b };
}
