import { execFile } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { formatIpv4, parseIpv4, parseMac, WeftError } from '@weft/core';
import {
  ETHERNET_HEADER_BYTES,
  EtherType,
  IcmpType,
  IPV4_FLAG_DF,
  IpProtocol,
  icmp,
  ipv4Check,
  ipv4HeaderLength,
  ipv4Protocol,
  read16,
  Status,
  UDP_HEADER_BYTES,
  udpChecksumIpv4,
  VXLAN_HEADER_BYTES,
  vxlanVni,
  write16,
  writeIpv4Header,
  writeMac,
  writeUdpHeader,
  writeVxlanHeader,
} from '@weft/encap';
import { vxlanLeaseData } from '@weft/subnet';
import { allocSlab, PacketRing, SendTable, TunErrorCode, UdpSocket } from '@weft/tun';
import { vtepAddress } from '../kernel.js';
import type { DoctorContext, Lease4 } from './context.js';
import type { CheckResult, PathCell, PeerRow } from './report.js';

/**
 * The path checks: probes from the doctor's own UDP socket, encapsulated as the backend
 * encapsulates (VXLAN, or flannel's bare-IPv4-in-UDP), addressed from this node's VTEP address
 * to the peer's. The peer decapsulates the probe like any packet from this node, and its answer
 * comes back the way a pod's reply would: routed by the peer's own state for this node's lease,
 * to this node's public IP and the backend's port. Who holds that port decides how the answer is
 * seen:
 *
 * - nobody (no dataplane up here): the doctor binds the port itself and reads the answer
 *   encapsulated. The probe is an ICMP echo to the peer's VTEP address; echo replies are never
 *   rate-limited, so many sizes go at once.
 * - this node's dataplane (the kernel's VXLAN socket, weftd's userspace socket; neither can be
 *   shared, and a kernel VXLAN device answers to the peer's configured port, never to the outer
 *   source port): the dataplane decapsulates the answer and hands it to this node's kernel. The
 *   probe is then a UDP datagram from this node's VTEP address to a closed port of the peer's;
 *   the peer's kernel answers with ICMP port unreachable, which this node's kernel delivers as
 *   ECONNREFUSED to a UDP socket the doctor bound to that address and connected to that port.
 *   The peer's kernel rate-limits those ICMP errors (6 at once, then 1 a second per destination:
 *   net.ipv4.icmp_ratelimit), so these probes go one at a time and a silent one is sent again
 *   after a second before it counts as lost.
 *
 * Either way the answer proves the whole path: this node's underlay and the peer's port, the
 * peer's decapsulation, its route, neighbor and FDB entry for this node, and this node's
 * decapsulation. Probes carry DF (inner and outer), so the largest one answered is the largest
 * packet that crosses.
 */

const VXLAN_OVERHEAD = VXLAN_HEADER_BYTES + ETHERNET_HEADER_BYTES + 20 + UDP_HEADER_BYTES;
const UDP_OVERHEAD = 20 + UDP_HEADER_BYTES;
/** An inner packet of this size always fits: IPv4 + UDP/ICMP headers + the doctor's marker. */
const SMALL = 64;
/** traceroute's ports: the ones least likely to have a listener. */
const CLOSED_PORT_BASE = 33434;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

type Encap = 'vxlan' | 'udp';

interface Target {
  publicIp: number;
  vtep: number;
  vtepMac?: number;
}

/** Sends encapsulated probes from one UDP socket (DF set), and reads answers when it holds the port. */
class ProbeSocket {
  private readonly slab: Buffer;
  private readonly table = new SendTable(64);
  private next = 0;
  private readonly waiting: (() => void)[] = [];

  private constructor(
    readonly socket: UdpSocket,
    readonly ownsPort: boolean,
    /** Room per datagram: the largest probe (jumbo underlays included) and its encapsulation. */
    readonly stride: number,
  ) {
    this.slab = allocSlab(this.table.capacity * stride);
    socket.attachSlab(1, this.slab);
    socket.setSendTable(this.table);
  }

  /** The backend's port when free (answers come to this socket), else an ephemeral one. */
  static open(address: string, port: number, largestFrame: number): ProbeSocket {
    const stride = Math.max(2048, largestFrame + 64);
    try {
      return new ProbeSocket(UdpSocket.open({ address, port, dontFragment: true }), true, stride);
    } catch (err) {
      if (!(err instanceof WeftError) || err.code !== TunErrorCode.addressInUse) throw err;
    }
    return new ProbeSocket(UdpSocket.open({ address, port: 0, dontFragment: true }), false, stride);
  }

  /** Sends one datagram; waits for room when the kernel's queue is full. */
  async send(payload: Uint8Array, ip: number, port: number): Promise<void> {
    for (;;) {
      const i = this.next;
      this.next = (this.next + 1) % this.table.capacity;
      this.slab.set(payload, i * this.stride);
      this.table.set4(i, 1, i * this.stride, payload.length, ip, port);
      if (this.socket.send(i, 1) === 1) return;
      await new Promise<void>((resolve) => {
        this.waiting.push(resolve);
        if (this.waiting.length === 1)
          this.socket.onWritable(() => {
            for (const w of this.waiting.splice(0)) w();
          });
      });
    }
  }

  close(): void {
    this.socket.close();
  }
}

/** Writes IPv4 + (UDP | ICMP echo) of `size` bytes from src to dst, DF set, at buf[off]. */
function innerPacket(
  buf: Buffer,
  off: number,
  size: number,
  src: number,
  dst: number,
  kind: { udp: { sport: number; dport: number } } | { echo: { id: number; seq: number } },
  ident: number,
): void {
  const payload = size - 20;
  if ('udp' in kind) {
    writeIpv4Header(buf, off, src, dst, IpProtocol.udp, payload, 64, ident, IPV4_FLAG_DF);
    const u = off + 20;
    writeUdpHeader(buf, u, kind.udp.sport, kind.udp.dport, payload - UDP_HEADER_BYTES);
    buf.write('weftd doctor', u + UDP_HEADER_BYTES, 'latin1');
    write16(buf, u + 6, udpChecksumIpv4(buf, off, u, payload));
  } else {
    writeIpv4Header(buf, off, src, dst, IpProtocol.icmp, payload, 64, ident, IPV4_FLAG_DF);
    const data = Buffer.alloc(payload - 8);
    data.write('weftd doctor', 0, 'latin1');
    icmp.emit(
      {
        type: IcmpType.echoRequest,
        code: 0,
        rest: ((kind.echo.id << 16) | kind.echo.seq) >>> 0,
        data,
      },
      buf,
      off + 20,
    );
  }
}

/** Probes that answer "did a packet of `size` bytes make the round trip, and how fast". */
interface Prober {
  /** How many probes may be in flight at once (1: the peer rate-limits its answers). */
  readonly parallel: number;
  probe(target: Target, sizes: number[]): Promise<(number | undefined)[]>;
}

class Encapsulator {
  constructor(
    private readonly encap: Encap,
    private readonly vni: number,
    private readonly ownMac: number,
  ) {}

  /** The UDP payload carrying an inner packet written by `write` (inner size bytes). */
  frame(size: number, target: Target, write: (buf: Buffer, off: number) => void): Buffer {
    if (this.encap === 'udp') {
      const buf = Buffer.alloc(size);
      write(buf, 0);
      return buf;
    }
    const buf = Buffer.alloc(VXLAN_HEADER_BYTES + ETHERNET_HEADER_BYTES + size);
    writeVxlanHeader(buf, 0, this.vni);
    writeMac(buf, VXLAN_HEADER_BYTES, target.vtepMac ?? 0);
    writeMac(buf, VXLAN_HEADER_BYTES + 6, this.ownMac);
    write16(buf, VXLAN_HEADER_BYTES + 12, EtherType.ipv4);
    write(buf, VXLAN_HEADER_BYTES + ETHERNET_HEADER_BYTES);
    return buf;
  }

  /** Where the inner IPv4 packet of a received datagram starts, or -1. */
  innerOffset(slab: Buffer, off: number, len: number): number {
    if (this.encap === 'udp') return off;
    if (len < VXLAN_HEADER_BYTES + ETHERNET_HEADER_BYTES + 20) return -1;
    if ((slab[off] & 0x08) === 0 || vxlanVni(slab, off) !== this.vni) return -1;
    if (read16(slab, off + VXLAN_HEADER_BYTES + 12) !== EtherType.ipv4) return -1;
    return off + VXLAN_HEADER_BYTES + ETHERNET_HEADER_BYTES;
  }
}

/** No dataplane here: ICMP echo inside the encapsulation, answers read from the backend's port. */
class EchoProber implements Prober {
  readonly parallel = 16;
  private readonly id = (process.pid ^ Math.floor(Math.random() * 0xffff)) & 0xffff;
  private seq = 0;
  private readonly pending = new Map<number, { sent: number; resolve: (rtt: number) => void }>();
  constructor(
    private readonly socket: ProbeSocket,
    private readonly wrap: Encapsulator,
    private readonly own: number,
    private readonly port: number,
    private readonly timeoutMs: number,
  ) {
    // The ring stays reachable through the socket that reads into it.
    const ring = new PacketRing({ slots: 64, stride: socket.stride, headroom: 0 });
    socket.socket.startReading(ring, (count) => {
      for (let i = 0; i < count; i++) {
        const off = ring.slotOffset(i);
        const len = ring.lengths[i];
        if (len <= 0) continue;
        const ip = this.wrap.innerOffset(ring.slab, off, len);
        if (ip < 0) continue;
        const ipLen = off + len - ip;
        if (ipv4Check(ring.slab, ip, ipLen) !== Status.ok) continue;
        if (ipv4Protocol(ring.slab, ip) !== IpProtocol.icmp) continue;
        const h = ip + ipv4HeaderLength(ring.slab, ip);
        if (h + 8 > off + len || ring.slab[h] !== IcmpType.echoReply) continue;
        if (read16(ring.slab, h + 4) !== this.id) continue;
        const p = this.pending.get(read16(ring.slab, h + 6));
        p?.resolve(performance.now() - p.sent);
      }
    });
  }

  private once(target: Target, size: number): Promise<number | undefined> {
    const seq = this.seq++ & 0xffff;
    const frame = this.wrap.frame(size, target, (buf, off) =>
      innerPacket(buf, off, size, this.own, target.vtep, { echo: { id: this.id, seq } }, seq),
    );
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.pending.delete(seq);
        resolve(undefined);
      }, this.timeoutMs);
      this.pending.set(seq, {
        sent: performance.now(),
        resolve: (rtt) => {
          clearTimeout(timer);
          this.pending.delete(seq);
          resolve(rtt);
        },
      });
      void this.socket.send(frame, target.publicIp, this.port);
    });
  }

  async probe(target: Target, sizes: number[]): Promise<(number | undefined)[]> {
    const first = await Promise.all(sizes.map((s) => this.once(target, s)));
    // One more try for the silent ones: a packet lost once is not a path that drops it.
    const again = await Promise.all(
      sizes.map((s, i) => (first[i] === undefined ? this.once(target, s) : first[i])),
    );
    return again;
  }
}

/**
 * A dataplane here holds the port: a UDP datagram to a closed port of the peer's VTEP address,
 * answered by ICMP port unreachable, seen as ECONNREFUSED on a socket bound to our VTEP address.
 */
class RefusedProber implements Prober {
  readonly parallel = 1;
  private ident = 0;

  constructor(
    private readonly socket: ProbeSocket,
    private readonly wrap: Encapsulator,
    private readonly own: string,
    private readonly port: number,
    private readonly timeoutMs: number,
  ) {}

  private async once(target: Target, size: number, attempt: number): Promise<number | undefined> {
    const dport = CLOSED_PORT_BASE + ((target.vtep + attempt + this.ident) % 100);
    const s = createSocket('udp4');
    try {
      await new Promise<void>((resolve, reject) => {
        s.once('error', reject);
        s.bind(0, this.own, () => {
          // Node calls back with the error when connect fails (the types say no argument).
          s.connect(dport, formatIpv4(target.vtep), (...args: unknown[]) => {
            s.off('error', reject);
            const err = args[0] as Error | undefined;
            if (err) reject(err);
            else resolve();
          });
        });
      });
    } catch {
      s.close();
      return undefined;
    }
    const sport = s.address().port;
    const ident = this.ident++ & 0xffff;
    const frame = this.wrap.frame(size, target, (buf, off) =>
      innerPacket(
        buf,
        off,
        size,
        parseIpv4(this.own),
        target.vtep,
        { udp: { sport, dport } },
        ident,
      ),
    );
    return new Promise((resolve) => {
      let sent = 0;
      const done = (rtt: number | undefined) => {
        clearTimeout(timer);
        s.removeAllListeners('error');
        try {
          s.close();
        } catch {}
        resolve(rtt);
      };
      const timer = setTimeout(() => done(undefined), this.timeoutMs);
      s.on('error', (err: NodeJS.ErrnoException) => {
        // EMSGSIZE: a hop said "fragmentation needed" for the inner packet: it did not cross.
        done(err.code === 'EMSGSIZE' ? undefined : performance.now() - sent);
      });
      sent = performance.now();
      void this.socket.send(frame, target.publicIp, this.port);
    });
  }

  async probe(target: Target, sizes: number[]): Promise<(number | undefined)[]> {
    const out: (number | undefined)[] = [];
    for (const size of sizes) {
      const started = performance.now();
      let rtt = await this.once(target, size, 0);
      if (rtt === undefined) {
        // Silent: lost, too big, or the peer's ICMP budget spent. A token comes back each second.
        await sleep(Math.max(0, 1100 - (performance.now() - started)));
        rtt = await this.once(target, size, 1);
      }
      out.push(rtt);
    }
    return out;
  }
}

/** The largest size in (lo, hi] that crosses, given lo crosses and hi is the target. */
async function largestCrossing(
  prober: Prober,
  target: Target,
  lo: number,
  hi: number,
): Promise<number> {
  const [full] = await prober.probe(target, [hi]);
  if (full !== undefined) return hi;
  let fail = hi;
  while (fail - lo > 1) {
    const k = Math.min(prober.parallel, fail - lo - 1);
    const sizes: number[] = [];
    for (let j = 1; j <= k; j++) sizes.push(Math.floor(lo + ((fail - lo) * j) / (k + 1)));
    const unique = [...new Set(sizes)].filter((s) => s > lo && s < fail);
    const rtts = await prober.probe(target, unique);
    let newLo = lo;
    let newFail = fail;
    unique.forEach((s, i) => {
      if (rtts[i] !== undefined) newLo = Math.max(newLo, s);
    });
    unique.forEach((s, i) => {
      if (rtts[i] === undefined && s > newLo) newFail = Math.min(newFail, s);
    });
    lo = newLo;
    fail = newFail;
  }
  return lo;
}

/** The underlay: a UDP datagram to a closed port (ECONNREFUSED), else ping. */
async function underlayProbe(ip: string, timeoutMs: number): Promise<PathCell> {
  for (let attempt = 0; attempt < 2; attempt++) {
    const rtt = await new Promise<number | undefined>((resolve) => {
      const s = createSocket('udp4');
      let sent = 0;
      const done = (v: number | undefined) => {
        clearTimeout(timer);
        s.removeAllListeners('error');
        try {
          s.close();
        } catch {}
        resolve(v);
      };
      const timer = setTimeout(() => done(undefined), timeoutMs);
      s.on('error', (err: NodeJS.ErrnoException) =>
        done(err.code === 'ECONNREFUSED' ? performance.now() - sent : undefined),
      );
      s.connect(CLOSED_PORT_BASE + 99 - attempt, ip, () => {
        sent = performance.now();
        s.send(Buffer.from('weftd doctor'));
      });
    });
    if (rtt !== undefined) return { status: 'ok', detail: `${rtt.toFixed(2)} ms`, rttMs: rtt };
    if (attempt === 0) await sleep(Math.max(1100 - timeoutMs, 0));
  }
  // No ICMP for UDP from there (a firewall may drop it): ask ping, when it is installed.
  const ping = await new Promise<number | undefined>((resolve) => {
    execFile('ping', ['-n', '-c', '1', '-W', '1', ip], { timeout: 3000 }, (err, stdout) => {
      if (err) return resolve(undefined);
      const m = /time[=<]([\d.]+) ms/.exec(stdout);
      resolve(m ? Number(m[1]) : 0);
    });
  });
  if (ping !== undefined) return { status: 'ok', detail: `${ping.toFixed(2)} ms`, rttMs: ping };
  return { status: 'fail', detail: 'no answer' };
}

export interface PathResults {
  method: string;
  port: number;
  rows: PeerRow[];
  /** A reason the overlay could not be probed at all (then a ✗ check line). */
  problem?: CheckResult;
}

/** Runs the path checks against each peer (in parallel: each peer rate-limits on its own). */
export async function probePeers(ctx: DoctorContext, peers: Lease4[]): Promise<PathResults> {
  const u = ctx.underlay!;
  const encap: Encap | undefined =
    ctx.backendType === 'vxlan' ? 'vxlan' : ctx.backendType === 'udp' ? 'udp' : undefined;
  const expected = ctx.expectedMtu ?? 1450;
  const timeoutMs = ctx.doctor.probeTimeoutMs;
  const port = ctx.port;
  const row = (l: Lease4, underlay: PathCell, overlay: PathCell, mtu?: PeerRow['pathMtu']) => ({
    subnet: l.subnet,
    publicIp: l.attrs.publicIp,
    backend: l.attrs.backendType,
    underlay,
    overlay,
    pathMtu: mtu ?? { status: 'skip' as const, detail: '-', expected },
  });
  const underlays = peers.map((l) => underlayProbe(l.attrs.publicIp, timeoutMs));
  if (!encap || !ctx.own) {
    const cells = await Promise.all(underlays);
    // host-gw and alloc have no overlay; WireGuard answers only packets sealed with a session key.
    const why = !ctx.own
      ? 'this node has no lease, so no peer can answer it'
      : ctx.backendType === 'wireguard'
        ? 'WireGuard answers only authenticated packets: the overlay is not probed'
        : `${ctx.backendType}: no encapsulation to probe`;
    const none: PathCell = { status: 'skip', detail: 'not probed' };
    return {
      method: `underlay only; ${why}`,
      port,
      rows: peers.map((l, i) => row(l, cells[i], none)),
    };
  }
  const own = vtepAddress(ctx.own.subnet);
  const ownMac = encap === 'vxlan' ? vxlanLeaseData(ctx.own.attrs)?.vtepMac : undefined;
  const wrap = new Encapsulator(encap, ctx.vni, ownMac ? parseMac(ownMac) : 0);
  let socket: ProbeSocket;
  try {
    socket = ProbeSocket.open(
      // The doctor finds the underlay by IPv4 (findUnderlay's default): it has an IPv4 address.
      u.ifaceAddress!,
      port,
      expected + (encap === 'vxlan' ? VXLAN_HEADER_BYTES + ETHERNET_HEADER_BYTES : 0),
    );
  } catch (err) {
    const cells = await Promise.all(underlays);
    return {
      method: 'not probed',
      port,
      rows: peers.map((l, i) => row(l, cells[i], { status: 'fail', detail: 'not probed' })),
      problem: {
        id: 'probe',
        status: 'fail',
        title: `the path probes cannot open a UDP socket on ${u.ifaceAddress}: ${(err as Error).message}`,
        fix: "run the doctor as root in the node's network namespace",
      },
    };
  }
  try {
    let prober: Prober;
    let method: string;
    if (socket.ownsPort) {
      prober = new EchoProber(socket, wrap, parseIpv4(own), port, timeoutMs);
      method = `no dataplane holds UDP ${port} here: ICMP echo from ${own} inside ${encap === 'vxlan' ? 'VXLAN' : "flannel's UDP"}, answers read on :${port} by the doctor`;
    } else {
      if (!ctx.addresses.some((a) => a.address === own)) {
        const cells = await Promise.all(underlays);
        return {
          method: 'not probed',
          port,
          rows: peers.map((l, i) => row(l, cells[i], { status: 'fail', detail: 'not probed' })),
          problem: {
            id: 'probe',
            status: 'fail',
            title: `UDP ${port} is held here, but no device holds this node's VTEP address ${own}: answers from peers cannot arrive`,
            fix: `find what holds UDP ${port} (ss -ulpn) and stop it, or restart weftd so ${ctx.overlayName} gets ${own}`,
          },
        };
      }
      prober = new RefusedProber(socket, wrap, own, port, timeoutMs);
      method = `UDP from ${own} to a closed port inside ${encap === 'vxlan' ? 'VXLAN' : "flannel's UDP"}; the peer's ICMP port unreachable returns through ${ctx.overlayName ?? "this node's dataplane"} as ECONNREFUSED`;
    }
    const rows = await Promise.all(
      peers.map(async (l, i) => {
        const data = encap === 'vxlan' ? vxlanLeaseData(l.attrs) : undefined;
        const target: Target = {
          publicIp: parseIpv4(l.attrs.publicIp),
          vtep: parseIpv4(vtepAddress(l.subnet)),
          vtepMac: data ? parseMac(data.vtepMac) : undefined,
        };
        const [underlay, rtts] = await Promise.all([underlays[i], prober.probe(target, [SMALL])]);
        const rtt = rtts[0];
        if (rtt === undefined) {
          const fix =
            underlay.status === 'ok'
              ? `${l.attrs.publicIp} answers on the underlay but not through UDP ${port}: a firewall (there, here or between) drops UDP ${port}, or that node's dataplane is down, or it has no route, neighbor or FDB entry for this node's lease; run weftd doctor on ${l.attrs.publicIp}`
              : `${l.attrs.publicIp} does not answer at all: is the node up, and is its lease's public IP right?`;
          return {
            ...row(
              l,
              underlay,
              { status: 'fail', detail: 'no answer' },
              {
                status: 'fail',
                detail: '-',
                expected,
              },
            ),
            fix,
          } as PeerRow;
        }
        const largest = await largestCrossing(prober, target, SMALL, expected);
        const overhead = encap === 'vxlan' ? VXLAN_OVERHEAD : UDP_OVERHEAD;
        const mtu: PeerRow['pathMtu'] =
          largest >= expected
            ? { status: 'ok', detail: `${largest}`, bytes: largest, expected }
            : { status: 'fail', detail: `${largest} < ${expected}`, bytes: largest, expected };
        const r: PeerRow = row(l, underlay, { status: 'ok', detail: 'answers', rttMs: rtt }, mtu);
        if (mtu.status === 'fail')
          r.fix = `only ${largest}-byte packets cross to ${l.attrs.publicIp} with DF set, but pods send up to ${expected} (FLANNEL_MTU): a hop on the underlay carries only ${largest + overhead}; set ${encap === 'vxlan' ? `"Backend": {"MTU": ${largest + overhead}} in the network config` : `the underlay interface's MTU to ${largest + overhead}`} (or fix the hop), restart weftd and recreate the pods`;
        return r;
      }),
    );
    return { method, port, rows };
  } finally {
    socket.close();
  }
}
