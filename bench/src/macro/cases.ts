import { formatKey, generatePrivateKey, publicKeyOf } from '@weft/dataplane';
import {
  configureKernelL2,
  configureKernelVtep,
  createTwoNodes,
  type Netns,
  type RunningNode,
  startDataplane,
  startWireguardGo,
  type TwoNodes,
  wgKeyPair,
} from '@weft/testkit';

/**
 * The benchmark's cases. Each builds its own pair of node namespaces joined by a veth underlay
 * (MTU 1500), 198.18.0.1 (a) and 198.18.0.2 (b), and says where the iperf3 server listens in b.
 * Overlay addresses are flannel's: node a owns 10.244.1.0/24, node b 10.244.2.0/24, and the
 * workload endpoint is each node's own overlay address (10.244.X.0 on the overlay device).
 */
export interface CaseRuntime {
  nodes: TwoNodes;
  /** The address the client in a reaches the server in b at. */
  serverAddress: string;
  /** weft processes whose CPU and memory are measured. */
  weft: RunningNode[];
}

export interface BenchCase {
  name: string;
  description: string;
  /** The kernel case its ratios are to (default kernel-vxlan): an L2 case's is kernel-l2. */
  baseline?: string;
  setup(tag: string): Promise<CaseRuntime>;
}

const MAC_A = '02:00:00:00:01:01';
/** WEFT_BENCH_CPU_PROF=DIR: each weft process writes a V8 CPU profile there when it stops. */
const PROFILE_DIR = process.env.WEFT_BENCH_CPU_PROF;
/** WEFT_BENCH_PERF_MAP=1 (set by bench:profile): /tmp/perf-<pid>.map names weft's JS for perf. */
const NODE_ARGS = [
  ...(PROFILE_DIR ? ['--cpu-prof', `--cpu-prof-dir=${PROFILE_DIR}`] : []),
  ...(process.env.WEFT_BENCH_PERF_MAP === '1' ? ['--perf-basic-prof-only-functions'] : []),
];
/** WEFT_BENCH_OFFLOAD=0: weft runs without segmentation offloads, to see what they buy. */
const OFFLOAD = process.env.WEFT_BENCH_OFFLOAD !== '0';
/** WEFT_BENCH_BUSY_POLL=µs: weft polls that long without sleeping after each batch (default off). */
const BUSY_POLL = Number(process.env.WEFT_BENCH_BUSY_POLL ?? 0);
/** WEFT_BENCH_WORKERS=N: the vxlan (TUN mode) and udp cases run N pumps, one per thread (default 1). */
const WORKERS = Number(process.env.WEFT_BENCH_WORKERS ?? 1);
const MAC_B = '02:00:00:00:02:01';

function kernelVtep(ns: Netns, nodes: TwoNodes, side: 'a' | 'b', userspacePeer: boolean) {
  const me = side === 'a' ? 1 : 2;
  const peer = side === 'a' ? 2 : 1;
  return configureKernelVtep({
    ns,
    localIp: side === 'a' ? nodes.ipA : nodes.ipB,
    vni: 1,
    port: 8472,
    vtepMac: side === 'a' ? MAC_A : MAC_B,
    vtepAddress: `10.244.${me}.0`,
    remote: {
      subnet: `10.244.${peer}.0/24`,
      vtepAddress: `10.244.${peer}.0`,
      vtepMac: side === 'a' ? MAC_B : MAC_A,
      publicIp: side === 'a' ? nodes.ipB : nodes.ipA,
    },
    userspacePeer,
  });
}

function weftVxlan(ns: Netns, nodes: TwoNodes, side: 'a' | 'b'): Promise<RunningNode> {
  const me = side === 'a' ? 1 : 2;
  const peer = side === 'a' ? 2 : 1;
  return startDataplane(
    ns,
    {
      type: 'vxlan',
      deviceName: 'flannel.1',
      offload: OFFLOAD,
      busyPollMicros: BUSY_POLL,
      workers: WORKERS,
      vtepAddress: `10.244.${me}.0`,
      vtepMac: side === 'a' ? MAC_A : MAC_B,
      network: '10.244.0.0/16',
      publicIp: side === 'a' ? nodes.ipA : nodes.ipB,
      nodes: [
        {
          subnet: `10.244.${peer}.0/24`,
          publicIp: side === 'a' ? nodes.ipB : nodes.ipA,
          vtepMac: side === 'a' ? MAC_B : MAC_A,
        },
      ],
    },
    NODE_ARGS,
  );
}

function weftUdp(ns: Netns, nodes: TwoNodes, side: 'a' | 'b'): Promise<RunningNode> {
  const me = side === 'a' ? 1 : 2;
  const peer = side === 'a' ? 2 : 1;
  return startDataplane(
    ns,
    {
      type: 'udp',
      deviceName: 'flannel0',
      offload: OFFLOAD,
      busyPollMicros: BUSY_POLL,
      workers: WORKERS,
      nodeAddress: `10.244.${me}.0`,
      network: '10.244.0.0/16',
      publicIp: side === 'a' ? nodes.ipA : nodes.ipB,
      nodes: [{ subnet: `10.244.${peer}.0/24`, publicIp: side === 'a' ? nodes.ipB : nodes.ipA }],
    },
    NODE_ARGS,
  );
}

function wireguardKeys() {
  const key = generatePrivateKey();
  return { privateKey: formatKey(key), publicKey: formatKey(publicKeyOf(key)) };
}

function weftWireguard(
  ns: Netns,
  nodes: TwoNodes,
  side: 'a' | 'b',
  key: { privateKey: string },
  peerPublicKey: string,
): Promise<RunningNode> {
  const me = side === 'a' ? 1 : 2;
  const peer = side === 'a' ? 2 : 1;
  return startDataplane(
    ns,
    {
      type: 'wireguard',
      deviceName: 'flannel-wg',
      offload: OFFLOAD,
      busyPollMicros: BUSY_POLL,
      privateKey: key.privateKey,
      nodeAddress: `10.244.${me}.0`,
      network: '10.244.0.0/16',
      publicIp: side === 'a' ? nodes.ipA : nodes.ipB,
      nodes: [
        {
          subnet: `10.244.${peer}.0/24`,
          publicIp: side === 'a' ? nodes.ipB : nodes.ipA,
          publicKey: peerPublicKey,
        },
      ],
    },
    NODE_ARGS,
  );
}

/**
 * IPv6 cases, flannel-v6.1 as flannel programs it: the VXLAN over an IPv6 underlay (fd00::1 and
 * fd00::2 on the veth) carrying IPv6, node a's subnet fd00:10:244:1::/64, node b's
 * fd00:10:244:2::/64, each node's VTEP address its subnet's first.
 */
const V6_MAC_A = '02:00:00:00:01:06';
const V6_MAC_B = '02:00:00:00:02:06';

/** fd00::1 and fd00::2 on the two nodes' veth underlay. */
async function underlay6(nodes: TwoNodes): Promise<void> {
  await nodes.a.exec(['ip', 'addr', 'add', 'fd00::1/64', 'dev', 'veth0', 'nodad']);
  await nodes.b.exec(['ip', 'addr', 'add', 'fd00::2/64', 'dev', 'veth0', 'nodad']);
}

async function kernelVtep6(ns: Netns, side: 'a' | 'b', userspacePeer: boolean) {
  const me = side === 'a' ? 1 : 2;
  const peer = side === 'a' ? 2 : 1;
  const [mac, peerMac] = side === 'a' ? [V6_MAC_A, V6_MAC_B] : [V6_MAC_B, V6_MAC_A];
  await ns.sh(
    [
      // A userspace peer reads inner checksums the kernel left for "hardware" over a veth.
      userspacePeer ? 'ethtool -K veth0 tx off >/dev/null' : '',
      `ip link add flannel-v6.1 address ${mac} mtu 1430 type vxlan id 1 local fd00::${me} dstport 8472 nolearning dev veth0`,
      `ip addr add fd00:10:244:${me}::/128 dev flannel-v6.1 nodad`,
      'ip link set flannel-v6.1 up',
      `ip -6 neigh replace fd00:10:244:${peer}:: lladdr ${peerMac} dev flannel-v6.1 nud permanent`,
      `bridge fdb append ${peerMac} dev flannel-v6.1 dst fd00::${peer} self permanent`,
      `ip -6 route add fd00:10:244:${peer}::/64 via fd00:10:244:${peer}:: dev flannel-v6.1 onlink`,
    ]
      .filter(Boolean)
      .join('\n'),
  );
}

function weftVxlan6(ns: Netns, side: 'a' | 'b'): Promise<RunningNode> {
  const me = side === 'a' ? 1 : 2;
  const peer = side === 'a' ? 2 : 1;
  return startDataplane(
    ns,
    {
      type: 'vxlan',
      deviceName: 'flannel-v6.1',
      offload: OFFLOAD,
      busyPollMicros: BUSY_POLL,
      vtepAddress6: `fd00:10:244:${me}::`,
      vtepMac: side === 'a' ? V6_MAC_A : V6_MAC_B,
      network6: 'fd00:10:244::/48',
      publicIp: `fd00::${me}`,
      nodes: [
        {
          subnet6: `fd00:10:244:${peer}::/64`,
          publicIp: `fd00::${peer}`,
          vtepMac: side === 'a' ? V6_MAC_B : V6_MAC_A,
        },
      ],
    },
    NODE_ARGS,
  );
}

/**
 * L2 cases, the VXLAN tutorials' overlay: on each node a bridge br1 with the node's endpoint
 * address (10.99.0.<n>/24) and, as its port, the kernel's vxlan100 (VNI 100, port 4789,
 * `nolearning`, an all-zeros FDB entry for the peer) or weft's TAP.
 */
const L2_VNI = 100;
const L2_PORT = 4789;

function l2Address(side: 'a' | 'b'): string {
  return side === 'a' ? '10.99.0.1/24' : '10.99.0.2/24';
}

function kernelL2(ns: Netns, nodes: TwoNodes, side: 'a' | 'b', userspacePeer: boolean) {
  return configureKernelL2({
    ns,
    localIp: side === 'a' ? nodes.ipA : nodes.ipB,
    vni: L2_VNI,
    port: L2_PORT,
    peers: [side === 'a' ? nodes.ipB : nodes.ipA],
    bridgeAddress: l2Address(side),
    userspacePeer,
  });
}

async function weftTap(ns: Netns, nodes: TwoNodes, side: 'a' | 'b'): Promise<RunningNode> {
  const node = await startDataplane(
    ns,
    {
      type: 'vxlan',
      mode: 'tap',
      deviceName: 'tap100',
      offload: OFFLOAD,
      vni: L2_VNI,
      port: L2_PORT,
      vtepMac: side === 'a' ? MAC_A : MAC_B,
      publicIp: side === 'a' ? nodes.ipA : nodes.ipB,
      nodes: [{ publicIp: side === 'a' ? nodes.ipB : nodes.ipA }],
    },
    NODE_ARGS,
  );
  await ns.sh(
    [
      'ip link add br1 type bridge',
      'ip link set tap100 master br1',
      `ip addr add ${l2Address(side)} dev br1`,
      'ip link set br1 up',
    ].join('\n'),
  );
  return node;
}

/** Starts things; if one fails, deletes the namespaces (which kills what did start). */
async function guarded(
  tag: string,
  build: (nodes: TwoNodes) => Promise<Omit<CaseRuntime, 'nodes'>>,
): Promise<CaseRuntime> {
  const nodes = createTwoNodes(tag, { mtu: 1500 });
  try {
    return { nodes, ...(await build(nodes)) };
  } catch (err) {
    nodes.delete();
    throw err;
  }
}

export const CASES: BenchCase[] = [
  {
    name: 'veth',
    description: 'the plain veth underlay, no overlay',
    setup: (tag) => guarded(tag, async (nodes) => ({ serverAddress: nodes.ipB, weft: [] })),
  },
  {
    name: 'kernel-vxlan',
    description: "the kernel's VXLAN on both nodes, configured as flannel configures flannel.1",
    setup: (tag) =>
      guarded(tag, async (nodes) => {
        await kernelVtep(nodes.a, nodes, 'a', false);
        await kernelVtep(nodes.b, nodes, 'b', false);
        return { serverAddress: '10.244.2.0', weft: [] };
      }),
  },
  {
    name: 'weft-vxlan',
    description: "weft's userspace VXLAN on both nodes",
    setup: (tag) =>
      guarded(tag, async (nodes) => {
        const weft = [await weftVxlan(nodes.a, nodes, 'a'), await weftVxlan(nodes.b, nodes, 'b')];
        return { serverAddress: '10.244.2.0', weft };
      }),
  },
  {
    name: 'weft-vxlan-kernel',
    description: "weft's VXLAN on node a, the kernel's on node b",
    setup: (tag) =>
      guarded(tag, async (nodes) => {
        await kernelVtep(nodes.b, nodes, 'b', true);
        return { serverAddress: '10.244.2.0', weft: [await weftVxlan(nodes.a, nodes, 'a')] };
      }),
  },
  {
    name: 'kernel-vxlan6',
    description:
      "the kernel's VXLAN over IPv6 carrying IPv6 on both nodes, as flannel configures flannel-v6.1",
    setup: (tag) =>
      guarded(tag, async (nodes) => {
        await underlay6(nodes);
        await kernelVtep6(nodes.a, 'a', false);
        await kernelVtep6(nodes.b, 'b', false);
        return { serverAddress: 'fd00:10:244:2::', weft: [] };
      }),
  },
  {
    name: 'weft-vxlan6',
    description: "weft's userspace IPv6 VTEP (flannel-v6.1) on both nodes",
    baseline: 'kernel-vxlan6',
    setup: (tag) =>
      guarded(tag, async (nodes) => {
        await underlay6(nodes);
        const weft = [await weftVxlan6(nodes.a, 'a'), await weftVxlan6(nodes.b, 'b')];
        return { serverAddress: 'fd00:10:244:2::', weft };
      }),
  },
  {
    name: 'weft-vxlan6-kernel',
    description: "weft's IPv6 VTEP on node a, the kernel's flannel-v6.1 on node b",
    baseline: 'kernel-vxlan6',
    setup: (tag) =>
      guarded(tag, async (nodes) => {
        await underlay6(nodes);
        await kernelVtep6(nodes.b, 'b', true);
        return { serverAddress: 'fd00:10:244:2::', weft: [await weftVxlan6(nodes.a, 'a')] };
      }),
  },
  {
    name: 'kernel-l2',
    description:
      "the VXLAN tutorials' L2 overlay on both nodes: bridge br1 + the kernel's vxlan100 (VNI 100, port 4789, nolearning, all-zeros FDB entry)",
    setup: (tag) =>
      guarded(tag, async (nodes) => {
        await kernelL2(nodes.a, nodes, 'a', false);
        await kernelL2(nodes.b, nodes, 'b', false);
        return { serverAddress: '10.99.0.2', weft: [] };
      }),
  },
  {
    name: 'weft-tap',
    description: "bridge br1 + weft's TAP mode (VNI 100, port 4789) on both nodes",
    baseline: 'kernel-l2',
    setup: (tag) =>
      guarded(tag, async (nodes) => {
        const weft = [await weftTap(nodes.a, nodes, 'a'), await weftTap(nodes.b, nodes, 'b')];
        return { serverAddress: '10.99.0.2', weft };
      }),
  },
  {
    name: 'weft-tap-kernel',
    description: "bridge br1 + weft's TAP mode on node a, the kernel's bridge + vxlan100 on node b",
    baseline: 'kernel-l2',
    setup: (tag) =>
      guarded(tag, async (nodes) => {
        await kernelL2(nodes.b, nodes, 'b', true);
        return { serverAddress: '10.99.0.2', weft: [await weftTap(nodes.a, nodes, 'a')] };
      }),
  },
  {
    name: 'weft-udp',
    description: "weft's flannel-compatible udp backend on both nodes",
    setup: (tag) =>
      guarded(tag, async (nodes) => {
        const weft = [await weftUdp(nodes.a, nodes, 'a'), await weftUdp(nodes.b, nodes, 'b')];
        return { serverAddress: '10.244.2.0', weft };
      }),
  },
  {
    name: 'weft-wireguard',
    description: "weft's userspace WireGuard on both nodes, as flannel's wireguard backend",
    setup: (tag) =>
      guarded(tag, async (nodes) => {
        const ka = wireguardKeys();
        const kb = wireguardKeys();
        const weft = [
          await weftWireguard(nodes.a, nodes, 'a', ka, kb.publicKey),
          await weftWireguard(nodes.b, nodes, 'b', kb, ka.publicKey),
        ];
        return { serverAddress: '10.244.2.0', weft };
      }),
  },
  {
    name: 'wireguard-go',
    description:
      "Debian's wireguard-go on both nodes, configured as flannel configures flannel-wg (its CPU is not counted)",
    setup: (tag) =>
      guarded(tag, async (nodes) => {
        const keys = [await wgKeyPair(), await wgKeyPair()];
        for (const [i, ns] of [nodes.a, nodes.b].entries()) {
          const wg = await startWireguardGo(ns, {
            privateKey: keys[i].privateKey,
            listenPort: 51820,
            address: `10.244.${i + 1}.0`,
            network: '10.244.0.0/16',
          });
          const other = 1 - i;
          await wg.wg([
            'set',
            wg.name,
            'peer',
            keys[other].publicKey,
            'endpoint',
            `${other === 0 ? nodes.ipA : nodes.ipB}:51820`,
            'allowed-ips',
            `10.244.${other + 1}.0/24`,
          ]);
        }
        return { serverAddress: '10.244.2.0', weft: [] };
      }),
  },
];
