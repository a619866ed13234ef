import {
  createTwoNodes,
  haveTools,
  privileged,
  type RunningNode,
  startDataplane,
  startWireguardGo,
  sweepNetns,
  type TwoNodes,
  tcpTransfer,
  type WireguardGo,
  wgKeyPair,
} from '@weft/testkit';
import { afterAll, describe, expect, it } from 'vitest';
import { formatKey, generatePrivateKey, publicKeyOf } from '../src/index.js';

const TAG = 'dpwg';
const canRun =
  privileged('wireguard-go interop tests') &&
  haveTools('wireguard-go interop tests', 'wireguard-go', 'wg', 'nsenter', 'unshare');

/** weft in a (198.18.0.1, 10.244.1.0/24), wireguard-go in b (198.18.0.2, 10.244.2.0/24). */
interface Setup {
  nodes: TwoNodes;
  weft: RunningNode;
  wgo: WireguardGo;
  weftKey: { privateKey: string; publicKey: string };
  wgoKey: { privateKey: string; publicKey: string };
}

function weftConfig(s: Pick<Setup, 'weftKey' | 'wgoKey'>, extra: object = {}) {
  return {
    type: 'wireguard',
    deviceName: 'flannel-wg',
    privateKey: s.weftKey.privateKey,
    nodeAddress: '10.244.1.0',
    network: '10.244.0.0/16',
    listenPort: 51820,
    nodes: [{ subnet: '10.244.2.0/24', publicIp: '198.18.0.2', publicKey: s.wgoKey.publicKey }],
    ...extra,
  };
}

async function addWeftPeer(wgo: WireguardGo, weftPublicKey: string, extra: string[] = []) {
  // flannel's addPeer: endpoint, AllowedIPs = the node's subnet (wgctrl ReplaceAllowedIPs).
  await wgo.wg([
    'set',
    wgo.name,
    'peer',
    weftPublicKey,
    'endpoint',
    '198.18.0.1:51820',
    'allowed-ips',
    '10.244.1.0/24',
    ...extra,
  ]);
}

async function setup(extra: object = {}): Promise<Setup> {
  const nodes = createTwoNodes(TAG);
  const priv = generatePrivateKey();
  const weftKey = { privateKey: formatKey(priv), publicKey: formatKey(publicKeyOf(priv)) };
  const wgoKey = await wgKeyPair();
  const wgo = await startWireguardGo(nodes.b, {
    privateKey: wgoKey.privateKey,
    listenPort: 51820,
    address: '10.244.2.0',
    network: '10.244.0.0/16',
  });
  await addWeftPeer(wgo, weftKey.publicKey);
  const weft = await startDataplane(nodes.a, weftConfig({ weftKey, wgoKey }, extra));
  return { nodes, weft, wgo, weftKey, wgoKey };
}

async function teardown(s: Setup | undefined) {
  if (!s) return;
  await s.weft.stop().catch(() => {});
  await s.wgo.stop().catch(() => {});
  s.nodes.delete();
}

const ping = (ns: TwoNodes['a'], to: string, count = 3) =>
  ns.exec(['ping', '-c', String(count), '-i', '0.2', '-W', '2', to]);

describe.skipIf(!canRun)("interop with wireguard-go configured as flannel's flannel-wg", () => {
  afterAll(() => sweepNetns(TAG));

  it('weft initiates: handshake, ping both ways, 50 MB sha256-checked each way', async () => {
    let s: Setup | undefined;
    try {
      s = await setup();
      expect(s.weft.ready).toMatchObject({ device: 'flannel-wg', mtu: 1420, port: 51820 });
      const ab = await ping(s.nodes.a, '10.244.2.0');
      expect(ab.stdout).toMatch(/3 packets transmitted, 3 received/);
      const ba = await ping(s.nodes.b, '10.244.1.0');
      expect(ba.stdout).toMatch(/3 packets transmitted, 3 received/);
      const c = await s.weft.counters();
      expect(c.wireguard).toMatchObject({
        handshakeInitiationsSent: 1,
        handshakeResponsesReceived: 1,
      });
      // wireguard-go saw the handshake: a latest-handshake time and our endpoint.
      const [, peer] = await s.wgo.dump();
      expect(peer[0]).toBe(s.weftKey.publicKey);
      expect(peer[2]).toBe('198.18.0.1:51820');
      expect(Number(peer[4])).toBeGreaterThan(0);

      const up = await tcpTransfer(s.nodes.b, s.nodes.a, '10.244.2.0', 5201, 50 * 1024 * 1024);
      expect(up.receivedBytes).toBe(50 * 1024 * 1024);
      expect(up.receivedSha256).toBe(up.sentSha256);
      const down = await tcpTransfer(s.nodes.a, s.nodes.b, '10.244.1.0', 5202, 50 * 1024 * 1024);
      expect(down.receivedBytes).toBe(50 * 1024 * 1024);
      expect(down.receivedSha256).toBe(down.sentSha256);
      const after = await s.weft.counters();
      expect(after.drops.decrypt).toBe(0);
      expect(after.drops.replay).toBe(0);
    } finally {
      await teardown(s);
    }
  });
});
