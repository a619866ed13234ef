import { createNetns, privileged, sweepNetns } from '@weft/testkit';
import { afterAll, describe, expect, it } from 'vitest';
import {
  attr,
  buildMessage,
  KernelWireguard,
  parseDevice,
  probeKernelWireguard,
  Rtnl,
  setDeviceAttrs,
  sockaddr,
  WgDevice,
  WgPeer,
} from '../src/index.js';

const TAG = 'nlwg';
const key = (b: number) => new Uint8Array(32).fill(b);

describe('kernel WireGuard over generic netlink: the message layout of include/uapi/linux/wireguard.h', () => {
  it('encodes WG_CMD_SET_DEVICE as wgctrl sends flannel-wg its peer', () => {
    const attrs = setDeviceAttrs('flannel-wg', {
      privateKey: key(1),
      listenPort: 51820,
      peers: [
        {
          publicKey: key(2),
          presharedKey: key(3),
          endpoint: { address: '198.18.0.2', port: 51820 },
          persistentKeepaliveSeconds: 25,
          replaceAllowedIps: true,
          allowedIps: ['10.244.2.0/24'],
        },
      ],
    });
    const msg = buildMessage(0x1234, 0x5, 7, Uint8Array.of(1, 1, 0, 0), attrs);
    const hex = msg.toString('hex');
    // ifname (2) "flannel-wg\0" padded, private key (3), listen port (6) u16.
    expect(hex).toContain(`0f000200${Buffer.from('flannel-wg\0').toString('hex')}00`);
    expect(hex).toContain(`24000300${'01'.repeat(32)}`);
    expect(hex).toContain('060006006cca0000');
    // Peers (8 | NLA_F_NESTED), peer 0 nested, its public key (1), flags (3) = REPLACE_ALLOWEDIPS.
    expect(hex).toMatch(/....0880....0080240001000202/);
    expect(hex).toContain('0800030002000000');
    // Endpoint (4): sockaddr_in, port and address in network order.
    expect(hex).toContain(`14000400${'0200ca6cc6120002'}${'00'.repeat(8)}`);
    // Keepalive (5) u16 = 25; AllowedIPs (9 | nested) > 0 (nested) > family 2, 10.244.2.0, /24.
    expect(hex).toContain('060005001900');
    expect(hex).toContain('060001000200000008000200' + '0af40200' + '0500030018000000');
  });

  it('reads a WG_CMD_GET_DEVICE reply back', () => {
    const peer = [
      attr.bytes(WgPeer.publicKey, key(9)),
      attr.bytes(WgPeer.endpoint, sockaddr('2001:db8::2', 51821)),
      attr.u16(WgPeer.persistentKeepaliveInterval, 5),
      attr.nested(WgPeer.allowedIps, [
        attr.nested(0, [
          attr.u16(1, 10),
          attr.bytes(2, Buffer.from('fd100000000000020000000000000000', 'hex')),
          attr.u8(3, 64),
        ]),
      ]),
    ];
    const reply = buildMessage(0x1234, 0, 1, Uint8Array.of(0, 1, 0, 0), [
      attr.u32(WgDevice.ifindex, 5),
      attr.string(WgDevice.ifname, 'flannel-wg-v6'),
      attr.u16(WgDevice.listenPort, 51821),
      attr.nested(WgDevice.peers, [attr.nested(0, peer)]),
    ]);
    const dev = parseDevice(reply.subarray(16));
    expect(dev).toMatchObject({ ifindex: 5, ifname: 'flannel-wg-v6', listenPort: 51821 });
    expect(dev.peers[0]).toMatchObject({
      endpoint: '[2001:db8::2]:51821',
      allowedIps: ['fd10:0:0:2::/64'],
      persistentKeepaliveSeconds: 5,
    });
    expect(Buffer.from(dev.peers[0].publicKey).equals(Buffer.from(key(9)))).toBe(true);
  });
});

describe.skipIf(!privileged('kernel WireGuard detection'))('kernel WireGuard detection', () => {
  afterAll(() => sweepNetns(TAG));

  it('on a kernel without WireGuard: no device kind, no genetlink family, nothing left behind', async () => {
    const ns = createNetns(TAG);
    const nl = Rtnl.open({ netns: ns.name });
    try {
      const wireguardModule = ns
        .execSync(['sh', '-c', 'grep -c "^wireguard " /proc/modules 2>/dev/null || true'])
        .trim();
      const probe = await probeKernelWireguard(nl, 'flannel-wg', { netns: ns.name });
      if (wireguardModule !== '0' && probe.ok) {
        // A kernel with WireGuard (not this machine's): the device is there, then removed.
        probe.genl.close();
        await nl.deleteLink(probe.ifindex);
        return;
      }
      expect(probe.ok).toBe(false);
      if (!probe.ok)
        expect(probe.reason).toMatch(
          /cannot make a wireguard device|no wireguard generic netlink family/,
        );
      expect(await KernelWireguard.open({ netns: ns.name })).toBeUndefined();
      expect(await nl.link('flannel-wg')).toBeUndefined();
    } finally {
      nl.close();
      ns.delete();
    }
  });
});
