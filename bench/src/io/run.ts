import type { ChildProcess } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { IpProtocol, ipv4, udp } from '@weft/encap';
import { createTwoNodes, type Netns, sweepNetns } from '@weft/testkit';
import { machineInfo } from '../machine.js';

/**
 * The raw I/O ceiling of @weft/tun: packets per second moved TUN -> UDP and UDP -> TUN by a
 * process that does no protocol work, with batches of 1, 8, 32 and 64, between two namespaces.
 * A generator process feeds the path and a counter process counts what comes out.
 */
const worker = fileURLToPath(new URL('./worker.js', import.meta.url));
const seconds = Number(process.env.WEFT_BENCH_IO_SECONDS ?? 2);
const batches = [1, 8, 32, 64];

interface Row {
  direction: string;
  batch: number;
  packetsPerSecond: number;
}

function start(ns: Netns, args: string[]): { child: ChildProcess; count: () => number } {
  const child = ns.spawn([process.execPath, worker, ...args]);
  let last = 0;
  let buffered = '';
  child.stdout?.on('data', (d: Buffer) => {
    buffered += d.toString();
    const lines = buffered.split('\n');
    buffered = lines.pop() ?? '';
    for (const l of lines) if (l.startsWith('count ')) last = Number(l.slice(6));
  });
  child.stderr?.on('data', (d: Buffer) => process.stderr.write(d));
  return { child, count: () => last };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** An IPv4/UDP packet from 10.98.0.2 to 10.98.0.1:9001 with 18 payload bytes (64 bytes with Ethernet). */
function innerPacket(): string {
  const buf = Buffer.alloc(20 + 8 + 18, 0x42);
  ipv4.emit(
    { src: 0x0a620002, dst: 0x0a620001, protocol: IpProtocol.udp, ttl: 64, payloadLength: 26 },
    buf,
  );
  udp.emit({ srcPort: 40000, dstPort: 9001, payloadLength: 18 }, buf, 20, {
    ipVersion: 4,
    ipOffset: 0,
  });
  return buf.toString('hex');
}

async function measure(direction: 'tun-to-udp' | 'udp-to-tun', batch: number): Promise<Row> {
  const nodes = createTwoNodes('bmio');
  const children: ChildProcess[] = [];
  try {
    let counter: { child: ChildProcess; count: () => number };
    if (direction === 'tun-to-udp') {
      counter = start(nodes.b, ['count', nodes.ipB, '9000']);
      children.push(counter.child);
      children.push(start(nodes.a, ['tun-to-udp', String(batch), nodes.ipB, '9000']).child);
      await sleep(300);
      children.push(
        start(nodes.a, ['gen', '10.98.0.2', '9', Buffer.alloc(36, 0x42).toString('hex')]).child,
      );
    } else {
      children.push(start(nodes.a, ['udp-to-tun', String(batch), nodes.ipA, '9100']).child);
      await sleep(300);
      counter = start(nodes.a, ['count', '10.98.0.1', '9001']);
      children.push(counter.child);
      await sleep(200);
      children.push(start(nodes.b, ['gen', nodes.ipA, '9100', innerPacket()]).child);
    }
    await sleep(700);
    const c0 = counter.count();
    const t0 = Date.now();
    await sleep(seconds * 1000);
    const pps = ((counter.count() - c0) * 1000) / (Date.now() - t0);
    return { direction, batch, packetsPerSecond: Math.round(pps) };
  } finally {
    for (const c of children) c.kill('SIGKILL');
    nodes.delete();
  }
}

const cleanup = () => sweepNetns('bmio');
process.once('SIGINT', () => {
  cleanup();
  process.exit(130);
});

const rows: Row[] = [];
try {
  for (const direction of ['tun-to-udp', 'udp-to-tun'] as const) {
    for (const batch of batches) {
      process.stdout.write(`io ${direction} batch ${batch}: `);
      const row = await measure(direction, batch);
      rows.push(row);
      console.log(`${(row.packetsPerSecond / 1000).toFixed(0)}k packets/s`);
    }
  }
} finally {
  cleanup();
}
const dir = new URL('../../results/', import.meta.url);
mkdirSync(dir, { recursive: true });
writeFileSync(
  new URL('io.json', dir),
  `${JSON.stringify({ machine: machineInfo(), seconds, rows }, null, 2)}\n`,
);
console.log('wrote bench/results/io.json');
