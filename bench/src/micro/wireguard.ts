import { createCipheriv, randomBytes } from 'node:crypto';
import { chacha20poly1305 } from '@noble/ciphers/chacha.js';
import { formatKey, generatePrivateKey, publicKeyOf, WireguardBackend } from '@weft/dataplane';
import { type StandInIo, standInBackendIo } from '@weft/dataplane/testing';
import { IpProtocol, ipv4 } from '@weft/encap';
import { OpenOp, openTransport, SealOp, sealTransport } from '@weft/tun';
import { consume, type MicroCase, type MicroSuite } from './suite.js';

/**
 * WireGuard's data path per packet: the batch AEAD alone (the addon through Node's OpenSSL)
 * beside the per-packet alternatives (Node's createCipheriv, a pure-JS ChaCha20-Poly1305), and the
 * backend's whole outbound and inbound batch over stand-in I/O with a live session.
 */
const BATCH = 64;
const PACKET_BYTES = 1400;
const STRIDE = 2048;
const cases: MicroCase[] = [];

{
  const slab = Buffer.allocUnsafeSlow(BATCH * STRIDE);
  const keys = randomBytes(64);
  const seal = new Int32Array(BATCH * SealOp.words);
  const open = new Int32Array(BATCH * OpenOp.words);
  for (let k = 0; k < BATCH; k++) {
    slab.writeUInt32LE(4, k * STRIDE + 48);
    seal.set([k * STRIDE + 64, PACKET_BYTES, 8, k * STRIDE + 48, 0, 0], k * SealOp.words);
    open.set([k * STRIDE + 48, 32 + PACKET_BYTES + 8, 0, 0], k * OpenOp.words);
  }
  cases.push({
    name: `seal 64 x ${PACKET_BYTES} B in one call (addon, OpenSSL; per packet)`,
    opsPerCall: BATCH,
    fn: () => consume(sealTransport(slab, slab, keys, seal, BATCH)),
  });
  cases.push({
    name: `seal + open 64 x ${PACKET_BYTES} B (addon; per packet)`,
    opsPerCall: BATCH,
    fn: () => {
      sealTransport(slab, slab, keys, seal, BATCH);
      consume(openTransport(slab, keys, open, BATCH));
    },
  });
  const key = keys.subarray(0, 32);
  const nonce = Buffer.alloc(12);
  const plain = slab.subarray(64, 64 + PACKET_BYTES + 8);
  cases.push({
    name: `seal ${PACKET_BYTES} B with node:crypto createCipheriv (objects per packet)`,
    fn: () => {
      const c = createCipheriv('chacha20-poly1305', key, nonce, { authTagLength: 16 });
      consume(c.update(plain).length + c.final().length + c.getAuthTag().length);
    },
  });
  const nobleKey = new Uint8Array(key);
  const noblePlain = new Uint8Array(plain);
  cases.push({
    name: `seal ${PACKET_BYTES} B with @noble/ciphers (pure JS)`,
    fn: () => consume(chacha20poly1305(nobleKey, nonce).encrypt(noblePlain).length),
  });
}

/** Two backends over stand-in I/O with a session between them (handshake carried by hand). */
async function sessionPair(): Promise<{ a: Side; b: Side }> {
  const mk = (address: string, subnet: string) => {
    const key = generatePrivateKey();
    const { queue, socket, io } = standInBackendIo({ mtu: 1420, port: 51820 });
    const backend = WireguardBackend.overIo(io, { privateKey: key, nodeAddress: address });
    return { backend, queue, socket, publicKey: formatKey(publicKeyOf(key)), subnet };
  };
  const a = mk('10.244.1.0', '10.244.1.0/24');
  const b = mk('10.244.2.0', '10.244.2.0/24');
  a.backend.setNodes([
    { subnet: b.subnet, publicIp: '198.18.0.2', publicKey: b.publicKey } as never,
  ]);
  b.backend.setNodes([
    { subnet: a.subnet, publicIp: '198.18.0.1', publicKey: a.publicKey } as never,
  ]);
  // Carry whatever one side sent to the other, until both have a session.
  const carry = (from: Side, to: Side, fromIp: number) => {
    const sent = from.socket.lastSendCount;
    if (sent === 0) return;
    const start = from.socket.lastSendStart;
    from.socket.lastSendCount = 0;
    const ring = to.socket.ring;
    for (let k = 0; k < sent; k++) {
      const bytes = from.socket.sentBytes(start + k);
      ring.slab.set(bytes, ring.slotOffset(k));
      ring.lengths[k] = bytes.length;
      ring.families[k] = 4;
      ring.addrs[k * 4] = fromIp;
      ring.ports[k] = 51820;
    }
    to.socket.onBatch(sent);
  };
  a.backend.engine.initiateAll();
  for (let round = 0; round < 20; round++) {
    carry(a, b, 0xc6120001);
    carry(b, a, 0xc6120002);
    await new Promise((r) => setImmediate(r));
    if (a.backend.peers()[0]?.sessionUp && b.backend.engine.pCurrent[0] >= 0) break;
  }
  if (!a.backend.peers()[0]?.sessionUp) throw new Error('bench: no WireGuard session formed');
  return { a, b };
}

interface Side {
  backend: WireguardBackend;
  queue: StandInIo;
  socket: StandInIo;
}

function fillPackets(queue: StandInIo): void {
  const ring = queue.ring;
  for (let i = 0; i < BATCH; i++) {
    ring.lengths[i] = PACKET_BYTES;
    ipv4.emit(
      {
        src: 0x0af40105,
        dst: 0x0af40200 + (i % 250) + 1,
        protocol: IpProtocol.tcp,
        ttl: 64,
        payloadLength: PACKET_BYTES - 20,
      },
      ring.slab,
      ring.slotOffset(i),
    );
  }
}

{
  const { a, b } = await sessionPair();
  fillPackets(a.queue);
  // The plaintext is sealed in place; each call starts from the same packets again.
  const plain = Buffer.from(a.queue.ring.slab);
  cases.push({
    name: 'wireguard outbound: 64 packets TUN -> UDP, sealed (per packet, one slab copy included)',
    opsPerCall: BATCH,
    fn: () => {
      a.queue.ring.slab.set(plain);
      a.queue.onBatch(BATCH);
    },
  });
  // Inbound: what a just sent, as b receives it; the replay window is reset each call.
  a.queue.ring.slab.set(plain);
  a.queue.onBatch(BATCH);
  const ring = b.socket.ring;
  for (let k = 0; k < BATCH; k++) {
    const bytes = a.socket.sentBytes(a.socket.lastSendStart + k);
    ring.slab.set(bytes, ring.slotOffset(k));
    ring.lengths[k] = bytes.length;
    ring.families[k] = 4;
    ring.addrs[k * 4] = 0xc6120001;
    ring.ports[k] = 51820;
  }
  const sealed = Buffer.from(ring.slab);
  const kp = b.backend.engine.pCurrent[0];
  if (kp < 0) throw new Error('bench: b has no current session');
  cases.push({
    name: 'wireguard inbound: 64 datagrams UDP -> TUN, opened (per packet, one slab copy included)',
    opsPerCall: BATCH,
    fn: () => {
      ring.slab.set(sealed);
      b.backend.engine.replay.reset(kp);
      b.socket.onBatch(BATCH);
    },
  });
}

export const wireguardSuite: MicroSuite = { name: 'wireguard', cases };
