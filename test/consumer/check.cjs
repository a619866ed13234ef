// What a consumer of the published packages does, given them however it loaded them (ESM
// import or CommonJS require): touch every package's main export, round-trip a VXLAN frame, and
// (with WEFT_CONSUMER_NETNS set, as root) open a TUN device in that namespace and have the kernel
// answer a ping written into it. Prints one JSON line with what it saw.
'use strict';

async function check(m) {
  const out = { arch: process.arch, node: process.version };
  out.exports = {
    core: typeof m.core.WeftError,
    encap: typeof m.encap.vxlanEncapInPlace,
    fdb: typeof m.fdb.Fdb,
    tun: typeof m.tun.TunDevice,
    netlink: typeof m.netlink.Rtnl,
    dataplane: typeof m.dataplane.createBackend,
    subnet: typeof m.subnet.SubnetManager,
    agent: typeof m.agent.parseFlags,
    cni: typeof m.cni.runPlugin,
  };
  // etcd3 stays unloaded until an etcd store is used.
  out.etcd3Loaded = Object.keys(require.cache).some((p) => /node_modules[\\/]etcd3[\\/]/.test(p));

  // VXLAN: encapsulate an 84-byte packet in place, then check and strip it as the peer would.
  const { EtherType, Status, VXLAN_ENCAP_HEADROOM, vxlanDecapCheck, vxlanEncapInPlace } = m.encap;
  const HEADROOM = 64;
  const slot = Buffer.alloc(HEADROOM + 1500);
  for (let i = 0; i < 84; i++) slot[HEADROOM + i] = i;
  const ours = 0x020000000101;
  const theirs = 0x020000000201;
  const start = vxlanEncapInPlace(slot, HEADROOM, 42, theirs, ours, EtherType.ipv4);
  const wire = slot.subarray(start, HEADROOM + 84);
  const status = vxlanDecapCheck(wire, 0, wire.length, 42, theirs);
  const inner = wire.subarray(VXLAN_ENCAP_HEADROOM);
  out.vxlan = {
    bytes: wire.length,
    status: status === Status.ok ? 'ok' : m.encap.statusName(status),
    innerIntact: inner.length === 84 && inner.every((b, i) => b === i),
  };

  out.wireguard = sealOpen(m.tun);

  const netns = process.env.WEFT_CONSUMER_NETNS;
  if (netns) out.tun = await pingThroughTun(m, netns);
  out.addon = Object.keys(require.cache).filter((p) => p.endsWith('.node'));
  return out;
}

/** Seals a WireGuard transport message with the addon (Node's OpenSSL) and opens it again. */
function sealOpen({ sealTransport, openTransport, SealOp, OpenOp }) {
  const keys = Buffer.alloc(32, 7);
  const plain = Buffer.from('weft consumer, sealed by the addon');
  const msg = Buffer.alloc(16 + plain.length + 16);
  msg.writeUInt32LE(4, 0); // type 4: transport data; receiver index 0; counter 0
  const seal = new Int32Array(SealOp.words);
  seal[SealOp.srcLen] = plain.length;
  const sealed = sealTransport(plain, msg, keys, seal, 1);
  const ciphertextDiffers = !msg.subarray(16, 16 + plain.length).equals(plain);
  const open = new Int32Array(OpenOp.words);
  open[OpenOp.msgLen] = seal[SealOp.result];
  const opened = openTransport(msg, keys, open, 1);
  return {
    sealed,
    ciphertextDiffers,
    opened,
    plaintextBack: msg.subarray(16, 16 + plain.length).equals(plain),
  };
}

/** Opens a TUN device, writes an echo request for its own address, reads the kernel's reply. */
function pingThroughTun(m, netns) {
  const { TunDevice, PacketRing, SendTable, allocSlab } = m.tun;
  const { internetChecksum } = m.encap;
  const dev = TunDevice.open({ name: 'weftc%d', netns });
  dev.addAddress('10.99.1.1/24');
  dev.up();
  const queue = dev.queues[0];
  const ring = new PacketRing({ slots: 16 });
  const request = allocSlab(4096);
  // IPv4 (RFC 791) from 10.99.1.2 to 10.99.1.1, then ICMP echo request (RFC 792) id 0x77 seq 1.
  const pkt = Buffer.from(request.buffer, request.byteOffset, 28 + 8);
  pkt.set([0x45, 0, 0, 36, 0, 1, 0x40, 0, 64, 1, 0, 0, 10, 99, 1, 2, 10, 99, 1, 1]);
  pkt.writeUInt16BE(internetChecksum(pkt, 0, 20), 10);
  pkt.set([8, 0, 0, 0, 0, 0x77, 0, 1, 0x77, 0x65, 0x66, 0x74, 0, 0, 0, 0], 20);
  pkt.writeUInt16BE(internetChecksum(pkt, 20, 16), 22);
  queue.attachSlab(1, request);
  const table = new SendTable(1);
  queue.setSendTable(table);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      dev.close();
      reject(new Error('no echo reply from the kernel within 5 s'));
    }, 5000);
    queue.startReading(ring, (count) => {
      for (let i = 0; i < count; i++) {
        const off = ring.slotOffset(i);
        const b = ring.slab;
        // An ICMP echo reply (type 0) to 10.99.1.2 with our id.
        if (b[off + 9] === 1 && b[off + 20] === 0 && b[off + 25] === 0x77) {
          clearTimeout(timer);
          const result = { name: dev.name, mtu: dev.mtu, replyBytes: ring.lengths[i] };
          dev.close();
          resolve(result);
          return;
        }
      }
    });
    table.setLocal(0, 1, 0, 36);
    if (queue.send(0, 1) !== 1) reject(new Error('the echo request was not sent'));
  });
}

module.exports = { check };
