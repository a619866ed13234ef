import { allocSlab, PacketRing, SendTable, TunDevice, UdpSocket } from '@weft/tun';

/**
 * One process of the raw I/O benchmark, run inside a node namespace. Roles:
 *   gen <dstIp> <dstPort> <payloadHex> — sends the payload as fast as the kernel takes it
 *   count <bindIp> <port>              — counts datagrams received
 *   tun-to-udp <batch> <dstIp> <port>  — moves packets from TUN io0 to UDP, no protocol work
 *   udp-to-tun <batch> <bindIp> <port> — moves datagrams from UDP to TUN io0, no protocol work
 * Each prints its running packet count every 100 ms as `count <n> <ms>`, with the time it was
 * taken, so the rate is measured between two samples rather than between two reads of a pipe.
 */
const [role, ...args] = process.argv.slice(2);
let moved = 0;
setInterval(() => process.stdout.write(`count ${moved} ${Date.now()}\n`), 100);
process.on('SIGTERM', () => process.exit(0));

function ipv4(text: string): number {
  return text.split('.').reduce((a, o) => ((a << 8) | Number(o)) >>> 0, 0);
}

function tunDevice(): TunDevice {
  const dev = TunDevice.open({ name: 'io0' });
  dev.setMtu(1500);
  dev.addAddress('10.98.0.1/24');
  dev.up();
  return dev;
}

if (role === 'gen') {
  const [dst, port, hex] = args;
  const payload = Buffer.from(hex, 'hex');
  const sock = UdpSocket.open({ sendBufferBytes: 4 << 20 });
  const table = new SendTable(64);
  const slab = allocSlab(64 * 2048);
  sock.attachSlab(0, slab);
  sock.setSendTable(table);
  for (let i = 0; i < 64; i++) {
    payload.copy(slab, i * 2048);
    table.set4(i, 0, i * 2048, payload.length, ipv4(dst), Number(port));
  }
  const blast = (): void => {
    for (let round = 0; round < 16; round++) {
      const n = sock.send(0, 64);
      moved += n;
      if (n < 64) {
        sock.onWritable(blast);
        return;
      }
    }
    setImmediate(blast);
  };
  blast();
} else if (role === 'count') {
  const [bind, port] = args;
  const sock = UdpSocket.open({ address: bind, port: Number(port), receiveBufferBytes: 8 << 20 });
  sock.startReading(new PacketRing({ slots: 64 }), (n) => {
    if (n > 0) moved += n;
  });
} else if (role === 'tun-to-udp') {
  const [batch, dst, port] = args;
  const dev = tunDevice();
  const sock = UdpSocket.open({ sendBufferBytes: 4 << 20 });
  const ring = new PacketRing({ slots: Number(batch) });
  const table = new SendTable(ring.slots);
  sock.attachSlab(0, ring.slab);
  sock.setSendTable(table);
  const queue = dev.queues[0];
  const dstIp = ipv4(dst);
  const dstPort = Number(port);
  let pending = 0;
  let sent = 0;
  const flush = (): void => {
    sent += sock.send(sent, pending - sent);
    if (sent < pending) {
      queue.pause();
      sock.onWritable(flush);
      return;
    }
    moved += pending;
    queue.resume();
  };
  queue.startReading(ring, (n) => {
    for (let i = 0; i < n; i++)
      table.set4(i, 0, ring.slotOffset(i), ring.lengths[i], dstIp, dstPort);
    pending = n;
    sent = 0;
    flush();
  });
} else if (role === 'udp-to-tun') {
  const [batch, bind, port] = args;
  const dev = tunDevice();
  const sock = UdpSocket.open({ address: bind, port: Number(port), receiveBufferBytes: 8 << 20 });
  const ring = new PacketRing({ slots: Number(batch) });
  const table = new SendTable(ring.slots);
  const queue = dev.queues[0];
  queue.attachSlab(0, ring.slab);
  queue.setSendTable(table);
  sock.startReading(ring, (n) => {
    let out = 0;
    for (let i = 0; i < n; i++)
      if (ring.lengths[i] > 0) table.setLocal(out++, 0, ring.slotOffset(i), ring.lengths[i]);
    moved += queue.send(0, out);
  });
} else {
  console.error(`unknown role ${role}`);
  process.exit(2);
}
