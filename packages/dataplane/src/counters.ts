/**
 * Per-backend counters in one Float64Array, indexed by number on the hot path (an increment is
 * one array store) and turned into named plain values for status output and metrics.
 */
export const Counter = {
  /** Packets and bytes from the local kernel (TUN/TAP) sent to the underlay. */
  txPackets: 0,
  txBytes: 1,
  /** Packets and bytes from the underlay written to the local kernel. */
  rxPackets: 2,
  rxBytes: 3,
  /** Drops, by reason. */
  dropNoRoute: 4,
  dropTtl: 5,
  dropBadHeader: 6,
  dropWrongVni: 7,
  dropWrongDstMac: 8,
  dropTruncated: 9,
  dropSendError: 10,
  dropUnknownSource: 11,
  dropNoNeighbor: 12,
  dropNoFdb: 13,
  dropUnsupported: 14,
  /** ICMP errors written back to the local kernel (net unreachable, time exceeded). */
  icmpErrorsSent: 15,
  /** ARP requests over the overlay answered for our VTEP address. */
  arpReplies: 16,
  /** Datagrams handed to the kernel that it could not take at once (EAGAIN); resent later, not lost. */
  backpressureEvents: 17,
} as const;

export type CounterName = keyof typeof Counter;
const NAMES = Object.keys(Counter) as CounterName[];
export const COUNTER_COUNT = NAMES.length;

export interface CounterSnapshot {
  txPackets: number;
  txBytes: number;
  rxPackets: number;
  rxBytes: number;
  /** Drops by reason (without the `drop` prefix): noRoute, ttl, badHeader, wrongVni, ... */
  drops: Record<string, number>;
  icmpErrorsSent: number;
  arpReplies: number;
  backpressureEvents: number;
}

export function snapshotCounters(values: Float64Array): CounterSnapshot {
  const drops: Record<string, number> = {};
  for (const name of NAMES) {
    if (name.startsWith('drop'))
      drops[name[4].toLowerCase() + name.slice(5)] = values[Counter[name]];
  }
  return {
    txPackets: values[Counter.txPackets],
    txBytes: values[Counter.txBytes],
    rxPackets: values[Counter.rxPackets],
    rxBytes: values[Counter.rxBytes],
    drops,
    icmpErrorsSent: values[Counter.icmpErrorsSent],
    arpReplies: values[Counter.arpReplies],
    backpressureEvents: values[Counter.backpressureEvents],
  };
}

/** Total drops across reasons. */
export function totalDrops(snapshot: CounterSnapshot): number {
  return Object.values(snapshot.drops).reduce((a, b) => a + b, 0);
}
