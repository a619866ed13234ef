import { readFileSync } from 'node:fs';
import type { Netns } from '@weft/testkit';

/** iperf3, ping and /proc readings for one case. */

export interface TcpRun {
  bitsPerSecond: number;
  bytes: number;
}

export interface ProcessUsage {
  /** user + system CPU seconds so far. */
  cpuSeconds: number;
  /** Peak resident set (VmHWM), bytes. */
  peakRssBytes: number;
}

const CLK_TCK = 100;

export function processUsage(pid: number): ProcessUsage {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command name (which may hold spaces) start after the last ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const utime = Number(fields[11]);
  const stime = Number(fields[12]);
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const hwm = /VmHWM:\s+(\d+) kB/.exec(status);
  return { cpuSeconds: (utime + stime) / CLK_TCK, peakRssBytes: hwm ? Number(hwm[1]) * 1024 : 0 };
}

async function iperfServer(server: Netns, address: string, port: number): Promise<() => void> {
  const child = server.spawn([
    'iperf3',
    '-s',
    '-1',
    '--forceflush',
    '-B',
    address,
    '-p',
    String(port),
  ]);
  // iperf3 prints "Server listening" once bound.
  await new Promise<void>((resolve, reject) => {
    let out = '';
    const timer = setTimeout(
      () => reject(new Error(`iperf3 server on ${address} did not start: ${out}`)),
      5000,
    );
    child.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('listening')) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`iperf3 server exited (${code}): ${out}`));
    });
  });
  return () => child.kill('SIGKILL');
}

/** How a TCP run differs from one stream of full-size segments. */
export interface TcpShape {
  /** Parallel streams (iperf3 -P), default 1. */
  streams?: number;
  /** The MSS the client asks for (iperf3 -M), default the path's. */
  mss?: number;
}

/** TCP for `seconds`, client in `client`, server in `server` at `address`: bytes received in all. */
export async function tcpRun(
  client: Netns,
  server: Netns,
  address: string,
  seconds: number,
  shape: TcpShape = {},
  port = 5201,
): Promise<TcpRun> {
  const stop = await iperfServer(server, address, port);
  try {
    const extra = [
      ...(shape.streams && shape.streams > 1 ? ['-P', String(shape.streams)] : []),
      ...(shape.mss ? ['-M', String(shape.mss)] : []),
    ];
    const { stdout } = await client.exec(
      ['iperf3', '-c', address, '-p', String(port), '-t', String(seconds), ...extra, '-J'],
      { timeoutMs: (seconds + 20) * 1000 },
    );
    const result = JSON.parse(stdout) as {
      end: { sum_received: { bits_per_second: number; bytes: number } };
    };
    return {
      bitsPerSecond: result.end.sum_received.bits_per_second,
      bytes: result.end.sum_received.bytes,
    };
  } finally {
    stop();
  }
}

/** 64-byte UDP datagrams as fast as iperf3 sends them; delivered = sent x (1 - loss). */
export async function udpRun(
  client: Netns,
  server: Netns,
  address: string,
  seconds: number,
  port = 5202,
): Promise<number> {
  const stop = await iperfServer(server, address, port);
  try {
    const { stdout } = await client.exec(
      [
        'iperf3',
        '-c',
        address,
        '-p',
        String(port),
        '-u',
        '-b',
        '0',
        '-l',
        '64',
        '-t',
        String(seconds),
        '-J',
      ],
      {
        timeoutMs: (seconds + 20) * 1000,
      },
    );
    const sum = (
      JSON.parse(stdout) as {
        end: { sum: { packets: number; lost_percent: number; seconds: number } };
      }
    ).end.sum;
    return (sum.packets * (1 - sum.lost_percent / 100)) / sum.seconds;
  } finally {
    stop();
  }
}

/** Round-trip times of `count` pings at a 2 ms interval, in milliseconds, sorted. */
export async function pingRun(client: Netns, address: string, count: number): Promise<number[]> {
  const { stdout } = await client.exec(
    ['ping', '-c', String(count), '-i', '0.002', '-W', '1', address],
    { timeoutMs: 60_000 },
  );
  const rtts = [...stdout.matchAll(/time=([\d.]+) ms/g)].map((m) => Number(m[1]));
  return rtts.sort((a, b) => a - b);
}

export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i];
}

export function median(values: number[]): number {
  return percentile(
    [...values].sort((a, b) => a - b),
    50,
  );
}
