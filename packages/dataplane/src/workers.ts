import { Worker } from 'node:worker_threads';
import { WeftError } from '@weft/core';
import type { IoStats, PacketRing, SendTable, UdpSocket } from '@weft/tun';
import type { CounterSnapshot } from './counters.js';
import type { RemoteNode } from './nodes.js';
import type { UdpIo } from './pump.js';

/**
 * Scaling out over cores: a multi-queue TUN device (one fd per queue; the kernel spreads flows
 * over the queues by their hash) and one UDP socket per worker, each bound to the backend's port
 * with SO_REUSEPORT (the kernel spreads datagrams over them by their 4-tuple), each queue and
 * socket driven by its own pump on its own thread. The main thread's backend is worker 0; the
 * others run in worker threads with the same options and node set. Each worker sends from a
 * socket of its own port, so that a weft peer's kernel, hashing the 4-tuple, spreads them too (a
 * VXLAN or flannel peer takes datagrams from any source port).
 */

/** A socket handed to a worker thread: its released fd and what UdpSocket.adopt needs. */
export interface SocketSpec {
  fd: number;
  family: 4 | 6;
  address: string;
  port: number;
}

/** What a worker thread runs: a backend over one queue and its sockets, with the node set. */
export interface WorkerSpec {
  type: 'udp' | 'vxlan';
  /** The backend's options (serialisable; what open() resolved: offloads, UDP coalescing). */
  options: Record<string, unknown>;
  device: { name: string; mtu: number; queueFd: number };
  receive: SocketSpec;
  send: SocketSpec;
  nodes: RemoteNode[];
  /** Which worker it is (1 and up; the main thread's backend is 0). */
  index: number;
}

/** Messages from a worker thread. */
type FromWorker =
  | { type: 'counters'; counters: CounterSnapshot }
  | { type: 'fault'; code: string; message: string }
  | { type: 'error'; message: string };

/**
 * A UDP side made of two sockets: datagrams are read from `receive` (bound to the backend's port)
 * and sent from `send` (a port of its own).
 */
export class SplitUdpIo implements UdpIo {
  readonly family: 4 | 6;
  readonly port: number;

  constructor(
    readonly receive: UdpSocket,
    readonly sender: UdpSocket,
  ) {
    this.family = receive.family;
    this.port = receive.port;
  }

  attachSlab(index: number, slab: Buffer): void {
    this.sender.attachSlab(index, slab);
  }
  setSendTable(table: SendTable): void {
    this.sender.setSendTable(table);
  }
  startReading(ring: PacketRing, onBatch: (count: number) => void, slabIndex?: number): void {
    this.receive.startReading(ring, onBatch, slabIndex);
  }
  send(start: number, count: number): number {
    return this.sender.send(start, count);
  }
  onWritable(callback: () => void): void {
    this.sender.onWritable(callback);
  }
  pause(): void {
    this.receive.pause();
  }
  resume(): void {
    this.receive.resume();
  }
  setBusyPoll(microseconds: number): void {
    this.receive.setBusyPoll(microseconds);
    this.sender.setBusyPoll(microseconds);
  }
  stats(): IoStats | undefined {
    const r = this.receive.stats();
    const s = this.sender.stats();
    if (!r || !s) return r ?? s;
    return {
      ...r,
      packetsSent: s.packetsSent,
      sendErrors: s.sendErrors,
      sendAgain: s.sendAgain,
      lastSendErrno: s.lastSendErrno,
      badDescriptors: s.badDescriptors,
      failedErrno: r.failedErrno || s.failedErrno,
    };
  }
  close(): void {
    this.receive.close();
    this.sender.close();
  }
}

/** The worker threads of a backend: node sets out, counters and faults back. */
export class WorkerPool {
  private readonly workers: Worker[] = [];
  private readonly latest: (CounterSnapshot | undefined)[] = [];
  private closed = false;

  constructor(specs: WorkerSpec[], onFault: (err: WeftError) => void) {
    for (const spec of specs) {
      const worker = new Worker(new URL('./worker.js', import.meta.url), { workerData: spec });
      const slot = this.latest.length;
      this.latest.push(undefined);
      worker.on('message', (m: FromWorker) => {
        if (m.type === 'counters') this.latest[slot] = m.counters;
        else if (m.type === 'fault')
          onFault(new WeftError(m.code, `worker ${spec.index}: ${m.message}`));
        else
          onFault(
            new WeftError('ERR_DATAPLANE_WORKER', `worker ${spec.index} failed: ${m.message}`),
          );
      });
      worker.on('error', (err) => {
        if (!this.closed)
          onFault(
            new WeftError('ERR_DATAPLANE_WORKER', `worker ${spec.index} failed: ${err.message}`),
          );
      });
      // The workers end when the backend closes; they never keep the process alive by themselves.
      worker.unref();
      this.workers.push(worker);
    }
  }

  get size(): number {
    return this.workers.length;
  }

  setNodes(nodes: RemoteNode[]): void {
    for (const w of this.workers) w.postMessage({ type: 'setNodes', nodes });
  }

  /** Adds the workers' latest counters (each at most 250 ms old) to `snapshot`. */
  addTo(snapshot: CounterSnapshot): void {
    snapshot.workers = [
      { txPackets: snapshot.txPackets, rxPackets: snapshot.rxPackets },
      ...this.latest.map((c) => ({ txPackets: c?.txPackets ?? 0, rxPackets: c?.rxPackets ?? 0 })),
    ];
    for (const c of this.latest) {
      if (!c) continue;
      snapshot.txPackets += c.txPackets;
      snapshot.txBytes += c.txBytes;
      snapshot.rxPackets += c.rxPackets;
      snapshot.rxBytes += c.rxBytes;
      snapshot.icmpErrorsSent += c.icmpErrorsSent;
      snapshot.arpReplies += c.arpReplies;
      snapshot.arpReceived += c.arpReceived;
      snapshot.backpressureEvents += c.backpressureEvents;
      snapshot.neighborsOverflow += c.neighborsOverflow;
      snapshot.fdbOverflow += c.fdbOverflow;
      for (const [reason, n] of Object.entries(c.drops))
        snapshot.drops[reason] = (snapshot.drops[reason] ?? 0) + n;
    }
  }

  /** Tells every worker to close its queue and sockets and end. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const w of this.workers) w.postMessage({ type: 'close' });
  }
}
