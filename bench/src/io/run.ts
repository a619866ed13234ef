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
  /** Delivered past the mover, counted by the receiving process: the figure quoted. */
  packetsPerSecond: number;
  /** Handed to the kernel by the mover; above packetsPerSecond when the far side drops. */
  moverPacketsPerSecond: number;
}

/** A worker's latest sample: its packet count and when it was taken (ms). */
interface Sample {
  count: number;
  atMs: number;
}

interface Worker {
  child: ChildProcess;
  sample: () => Sample;
}

function start(ns: Netns, args: string[]): Worker {
  const child = ns.spawn([process.execPath, worker, ...args]);
  let last: Sample = { count: 0, atMs: Date.now() };
  let buffered = '';
  child.stdout?.on('data', (d: Buffer) => {
    buffered += d.toString();
    const lines = buffered.split('\n');
    buffered = lines.pop() ?? '';
    for (const l of lines) {
      const [word, count, atMs] = l.split(' ');
      if (word === 'count') last = { count: Number(count), atMs: Number(atMs) };
    }
  });
  child.stderr?.on('data', (d: Buffer) => process.stderr.write(d));
  return { child, sample: () => last };
}

function rate(a: Sample, b: Sample): number {
  return b.atMs > a.atMs ? ((b.count - a.count) * 1000) / (b.atMs - a.atMs) : 0;
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
  const run = (ns: Netns, args: string[]): Worker => {
    const w = start(ns, args);
    children.push(w.child);
    return w;
  };
  try {
    let counter: Worker;
    let mover: Worker;
    if (direction === 'tun-to-udp') {
      // gen (a) -> kernel -> TUN io0 -> mover (a) -> UDP over the veth -> counter (b)
      counter = run(nodes.b, ['count', nodes.ipB, '9000']);
      mover = run(nodes.a, ['tun-to-udp', String(batch), nodes.ipB, '9000']);
      await sleep(300);
      run(nodes.a, ['gen', '10.98.0.2', '9', Buffer.alloc(36, 0x42).toString('hex')]);
    } else {
      // gen (b) -> UDP over the veth -> mover (a) -> TUN io0 -> kernel -> counter (a)
      mover = run(nodes.a, ['udp-to-tun', String(batch), nodes.ipA, '9100']);
      await sleep(300);
      counter = run(nodes.a, ['count', '10.98.0.1', '9001']);
      await sleep(200);
      run(nodes.b, ['gen', nodes.ipA, '9100', innerPacket()]);
    }
    await sleep(700);
    const c0 = counter.sample();
    const m0 = mover.sample();
    await sleep(seconds * 1000);
    const c1 = counter.sample();
    const m1 = mover.sample();
    for (const c of children) {
      if (c.exitCode !== null)
        throw new Error(`io ${direction} batch ${batch}: a worker exited (${c.exitCode})`);
    }
    if (c1.count === c0.count)
      throw new Error(`io ${direction} batch ${batch}: no packet came through the path`);
    return {
      direction,
      batch,
      packetsPerSecond: Math.round(rate(c0, c1)),
      moverPacketsPerSecond: Math.round(rate(m0, m1)),
    };
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
      console.log(
        `${(row.packetsPerSecond / 1000).toFixed(0)}k packets/s delivered (mover ${(row.moverPacketsPerSecond / 1000).toFixed(0)}k/s)`,
      );
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
