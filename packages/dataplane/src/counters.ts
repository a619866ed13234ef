import { Status } from '@weft/encap';

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
  /** A received frame with an inner 802.1Q/802.1ad tag (RFC 7348 6.1: dropped unless configured otherwise). */
  dropVlanTagged: 18,
  /** From a known node, an inner source address outside that node's subnet. */
  dropSpoofedInner: 19,
  /** An inner IPv4 header or (with offloads) TCP checksum that does not verify. */
  dropBadChecksum: 20,
  /** ARP messages over VXLAN taken in (from inside the sending node's subnet): learned, answered if for us. */
  arpReceived: 21,
} as const;

/** The drop counter for a failed hot-path check: one fault, one reason, in every backend. */
export function dropFor(status: number): number {
  switch (status) {
    case Status.truncated:
      return Counter.dropTruncated;
    case Status.ttlExpired:
      return Counter.dropTtl;
    case Status.vxlanWrongVni:
      return Counter.dropWrongVni;
    case Status.wrongDstMac:
      return Counter.dropWrongDstMac;
    case Status.badChecksum:
      return Counter.dropBadChecksum;
    case Status.unsupported:
      return Counter.dropUnsupported;
    default:
      return Counter.dropBadHeader;
  }
}

/** A counter's name: a key of {@link Counter}. */
export type CounterName = keyof typeof Counter;
const NAMES = Object.keys(Counter) as CounterName[];
export const COUNTER_COUNT = NAMES.length;

/** A backend's counters as plain numbers, from {@link Backend.counters}. */
export interface CounterSnapshot {
  txPackets: number;
  txBytes: number;
  rxPackets: number;
  rxBytes: number;
  /** Drops by reason (without the `drop` prefix): noRoute, ttl, badHeader, wrongVni, ... */
  drops: Record<string, number>;
  icmpErrorsSent: number;
  arpReplies: number;
  arpReceived: number;
  backpressureEvents: number;
  /** Learned neighbors evicted because the table was full (vxlan TUN mode; 0 elsewhere). */
  neighborsOverflow: number;
  /** Learned FDB entries evicted because the table was full (vxlan; 0 elsewhere). */
  fdbOverflow: number;
  /** With workers > 1, what each pump moved (the main thread's first): how flows spread. */
  workers?: { txPackets: number; rxPackets: number }[];
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
    arpReceived: values[Counter.arpReceived],
    backpressureEvents: values[Counter.backpressureEvents],
    neighborsOverflow: 0,
    fdbOverflow: 0,
  };
}

/** Total drops across reasons. */
export function totalDrops(snapshot: Pick<CounterSnapshot, 'drops'>): number {
  return Object.values(snapshot.drops).reduce((a, b) => a + b, 0);
}
