import type { ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { Netns } from './netns.js';

/** The weft-dataplane CLI of this workspace (built by `pnpm build`). */
export const DATAPLANE_CLI = fileURLToPath(new URL('../../dataplane/dist/cli.js', import.meta.url));

/** What the CLI prints on SIGUSR1 (the shape of @weft/dataplane's CounterSnapshot). */
export interface CounterSnapshot {
  txPackets: number;
  txBytes: number;
  rxPackets: number;
  rxBytes: number;
  drops: Record<string, number>;
  icmpErrorsSent: number;
  arpReplies: number;
  arpReceived: number;
  backpressureEvents: number;
  neighborsOverflow: number;
  fdbOverflow: number;
  /** The wireguard backend's handshake, cookie and keepalive counts. */
  wireguard?: Record<string, number>;
}

/** A weft-dataplane process running inside a node namespace. */
export interface RunningNode {
  child: ChildProcess;
  ready: { device: string; mtu: number; port: number; type: string; offload: boolean };
  counters(): Promise<CounterSnapshot>;
  /** The process's heap after a full collection (when started with --expose-gc) and its RSS. */
  memory(): Promise<{ heapUsed: number; rss: number }>;
  tables(): Promise<{
    routes: unknown[];
    neighbors?: { ip: string; mac: string; state: string; learned: boolean }[];
    fdb?: { mac: string; dst: string; static: boolean }[];
  }>;
  stop(): Promise<void>;
}

/** Starts `weft-dataplane <config>` in `ns` and waits for its `ready` line. */
export async function startDataplane(
  ns: Netns,
  config: object,
  nodeArgs: string[] = [],
): Promise<RunningNode> {
  const child = ns.spawn([process.execPath, ...nodeArgs, DATAPLANE_CLI, JSON.stringify(config)]);
  let buffer = '';
  let stderr = '';
  const waiters: { prefix: string; resolve: (line: string) => void }[] = [];
  child.stdout?.on('data', (d: Buffer) => {
    buffer += d.toString();
    let nl = buffer.indexOf('\n');
    while (nl >= 0) {
      const line = buffer.slice(0, nl);
      buffer = buffer.slice(nl + 1);
      const w = waiters.findIndex((x) => line.startsWith(x.prefix));
      if (w >= 0) waiters.splice(w, 1)[0].resolve(line);
      nl = buffer.indexOf('\n');
    }
  });
  child.stderr?.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  const next = (prefix: string, timeoutMs = 10_000) =>
    new Promise<string>((resolve, reject) => {
      const onExit = (code: number | null) => {
        clearTimeout(t);
        reject(new Error(`weft-dataplane in ${ns.name} exited ${code}: ${stderr}`));
      };
      // Settled either way, the waiter leaves no timer or exit listener behind (counters() is polled).
      waiters.push({
        prefix,
        resolve: (line) => {
          clearTimeout(t);
          child.off('exit', onExit);
          resolve(line);
        },
      });
      const t = setTimeout(() => {
        child.off('exit', onExit);
        reject(new Error(`no "${prefix}" line from weft-dataplane in ${ns.name}: ${stderr}`));
      }, timeoutMs);
      child.once('exit', onExit);
    });
  const readyLine = await next('ready ');
  return {
    child,
    ready: JSON.parse(readyLine.slice(6)),
    async counters() {
      const p = next('counters ');
      child.kill('SIGUSR1');
      return JSON.parse((await p).slice(9)) as CounterSnapshot;
    },
    async memory() {
      const p = next('memory ');
      child.kill('SIGUSR1');
      return JSON.parse((await p).slice(7));
    },
    async tables() {
      const p = next('tables ');
      child.kill('SIGUSR1');
      return JSON.parse((await p).slice(7));
    },
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await exited;
    },
  };
}
