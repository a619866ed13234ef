import { type Netns, waitFor } from '@weft/testkit';

/**
 * A UDP flow between two namespaces (over IPv4 or IPv6, as `address` is), datagram for datagram: a plain node:dgram sender in one
 * (a connected socket, so the kernel numbers its datagrams' IPv4 IDs in order, as iperf3's) sends
 * datagrams of the given sizes, each a random payload, in bursts of `burst` with a 10 ms pause
 * between (what the receiver's socket buffer holds while a loaded machine does not run it); a
 * receiver in the other lists what arrived, in order. Both print SHA-256 digests, so
 * any datagram changed, cut, joined, split or reordered on the way shows.
 */
const RECEIVER = `
const dgram = require('node:dgram'); const crypto = require('node:crypto');
const [host, port, expected] = process.argv.slice(1);
// The largest receive buffer the sysctl allows: a loaded machine may not run us for a while.
const s = dgram.createSocket({ type: host.includes(':') ? 'udp6' : 'udp4', recvBufferSize: 16 << 20 }); const got = [];
s.on('message', (m) => { got.push(m.length + ':' + crypto.createHash('sha256').update(m).digest('hex').slice(0, 16));
  if (got.length === Number(expected)) done(); });
let t; const done = () => { clearTimeout(t); console.log(JSON.stringify(got)); s.close(); };
s.bind(Number(port), host, () => { console.log('listening'); t = setTimeout(done, 20000); });
`;

const SENDER = `
const dgram = require('node:dgram'); const crypto = require('node:crypto');
const [host, port, sizesText, burst] = process.argv.slice(1);
const sizes = JSON.parse(sizesText); const sent = [];
const s = dgram.createSocket(host.includes(':') ? 'udp6' : 'udp4');
s.connect(Number(port), host, async () => {
  for (let i = 0; i < sizes.length; i += Number(burst)) {
    await Promise.all(sizes.slice(i, i + Number(burst)).map((n) => new Promise((r) => {
      const m = crypto.randomBytes(n);
      sent.push(n + ':' + crypto.createHash('sha256').update(m).digest('hex').slice(0, 16));
      s.send(m, r);
    })));
    await new Promise((r) => setTimeout(r, 10));
  }
  console.log(JSON.stringify(sent)); s.close();
});
`;

export async function udpFlow(
  from: Netns,
  to: Netns,
  address: string,
  port: number,
  sizes: number[],
  burst = 20,
): Promise<{ sent: string[]; received: string[] }> {
  const rx = to.spawn([
    process.execPath,
    '-e',
    RECEIVER,
    address,
    String(port),
    String(sizes.length),
  ]);
  let rxOut = '';
  rx.stdout?.on('data', (d: Buffer) => {
    rxOut += d.toString();
  });
  const rxDone = new Promise<void>((resolve) => rx.once('exit', () => resolve()));
  for (let i = 0; i < 200 && !rxOut.includes('listening'); i++)
    await new Promise((r) => setTimeout(r, 25));
  const tx = await from.exec([
    process.execPath,
    '-e',
    SENDER,
    address,
    String(port),
    JSON.stringify(sizes),
    String(burst),
  ]);
  await rxDone;
  const line = rxOut.split('\n').find((l) => l.startsWith('['));
  return { sent: JSON.parse(tx.stdout.trim()), received: line ? JSON.parse(line) : [] };
}

/** Packets a device has received, as the kernel counts them (writes into a TUN: one per write). */
export async function rxPackets(ns: Netns, device: string): Promise<number> {
  const { stdout } = await ns.exec(['cat', `/sys/class/net/${device}/statistics/rx_packets`]);
  return Number(stdout.trim());
}

/** `streams` TCP connections (iperf3 -P, 32 MB in all) from `client` to an iperf3 server on `address` in `server`. */
export async function tcpFlows(
  client: Netns,
  server: Netns,
  address: string,
  streams: number,
): Promise<void> {
  const iperf = server.spawn(['iperf3', '-s', '-1', '-B', address, '-p', '5202']);
  try {
    await waitFor(
      async () => (await server.exec(['ss', '-ltn', 'sport = :5202'])).stdout.includes('5202'),
      'iperf3 to listen',
    );
    await client.exec(['iperf3', '-c', address, '-p', '5202', '-P', String(streams), '-n', '32M'], {
      timeoutMs: 60_000,
    });
  } finally {
    iperf.kill();
  }
}

/**
 * UDP flows one way then the other (ports 7000, 7001), of runs of one size (as a flood sends),
 * odd sizes between, and the largest that fits (`max`); and how many writes the device `writes`
 * counts took the first: one per datagram or more without UDP GSO writes; with them, 390-780 of
 * the 1600 in runs on this project's 2-core VM (the bursts the socket's GRO batches hold vary).
 */
export async function udpBothWays(
  down: [from: Netns, to: Netns, address: string],
  up: [from: Netns, to: Netns, address: string],
  max: number,
  writes: () => Promise<number>,
) {
  const sizes = [
    ...Array(600).fill(64),
    ...Array(600).fill(1000),
    ...Array.from({ length: 200 }, (_, i) => 1 + ((i * 97) % max)),
    ...Array(200).fill(max),
  ];
  const before = await writes();
  const downFlow = await udpFlow(...down, 7000, sizes);
  const downWrites = (await writes()) - before;
  const upFlow = await udpFlow(...up, 7001, sizes);
  return { datagrams: sizes.length, down: downFlow, downWrites, up: upFlow };
}
