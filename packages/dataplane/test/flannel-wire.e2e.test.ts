import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { ipv4Check, Status } from '@weft/encap';
import {
  createTwoNodes,
  haveTools,
  privileged,
  readPcap,
  sweepNetns,
  tempDir,
  VECTORS_DIR,
  waitFor,
} from '@weft/testkit';
import { afterAll, describe, expect, it } from 'vitest';
import { startUdpNodes } from './udp-nodes.js';

const TAG = 'dpwire';

/*
 * Offsets from the start of the outer IPv4 header of a flannel UDP frame (no IP options):
 * outer IPv4 (20) | UDP (8) | inner IPv4 (20) | ICMP echo (8) | ping's timestamp (16) | pattern.
 * These fields differ between any two runs of the same ping; every other byte must be equal.
 */
const VARYING: readonly [number, number][] = [
  [4, 2], // outer IPv4 identification
  [10, 2], // outer IPv4 header checksum
  [26, 2], // UDP checksum (covers the varying bytes)
  [32, 2], // inner IPv4 identification
  [38, 2], // inner IPv4 header checksum
  [50, 2], // ICMP checksum
  [52, 2], // ICMP identifier (ping's, per process)
  [56, 16], // the time ping wrote into its payload
];

/** The frame from its outer IPv4 header on, with the varying fields zeroed, as hex. */
function masked(frame: Uint8Array): string {
  const ip = Buffer.from(frame.subarray(14));
  for (const [at, n] of VARYING) ip.fill(0, at, at + n);
  return ip.toString('hex');
}

/** The echo request/reply frames of a capture: UDP 8285 both ways, inner ICMP. */
function echoFrames(file: Buffer): Uint8Array[] {
  return readPcap(file)
    .records.filter((r) => {
      const d = r.data;
      return d[12] === 0x08 && d[13] === 0x00 && d[14 + 9] === 17 && d[14 + 28 + 9] === 1;
    })
    .map((r) => r.data);
}

describe.skipIf(
  !privileged('the flannel wire test') || !haveTools('the flannel wire test', 'dumpcap'),
)("weft's udp backend on the wire, against flannel's own proxy", () => {
  afterAll(() => sweepNetns(TAG));

  it('sends the same bytes flannel sent for the same pings (vectors/flannel-udp-8285.pcap)', async () => {
    // The vector's topology: a 198.18.0.1 with 10.244.1.0/24, b 198.18.0.2 with 10.244.2.0/24.
    const nodes = createTwoNodes(TAG);
    const dir = tempDir('weft-wire-');
    try {
      const { a, b } = await startUdpNodes(nodes);
      // As the vector was captured: no segmentation or checksum offload on the capturing veth.
      await nodes.a.exec(['ethtool', '-K', 'veth0', 'tx', 'off', 'tso', 'off', 'gso', 'off']);
      const file = join(dir.path, 'weft.pcap');
      const capture = nodes.a.spawn([
        'dumpcap',
        '-q',
        '-P', // classic pcap, not pcapng
        '-i',
        'veth0',
        '-f',
        'udp port 8285',
        '-w',
        file,
      ]);
      const exited = new Promise((resolve) => capture.once('exit', resolve));
      await new Promise<void>((resolve, reject) => {
        let err = '';
        const t = setTimeout(() => reject(new Error(`dumpcap did not start: ${err}`)), 10_000);
        capture.stderr?.on('data', (d: Buffer) => {
          err += d.toString();
          if (err.includes('Capturing on')) {
            clearTimeout(t);
            resolve();
          }
        });
      });
      // dumpcap says it is capturing a little before it is: small probe pings until one lands.
      await waitFor(async () => {
        await nodes.a.exec(['ping', '-c', '1', '-s', '8', '10.244.2.0']);
        return existsSync(file) && statSync(file).size > 24;
      }, 'dumpcap to capture');
      const ping = await nodes.a.exec(['ping', '-c', '3', '-i', '0.2', '-s', '100', '10.244.2.0']);
      expect(ping.stdout).toMatch(/3 received/);
      // An unrouted address: ICMP net unreachable from weft, and no frame on the wire.
      const lost = await nodes.a
        .exec(['ping', '-c', '1', '-W', '1', '10.244.77.1'])
        .catch((e: { stdout: string }) => e);
      expect(lost.stdout).toMatch(/Destination Net Unreachable/);
      await new Promise((r) => setTimeout(r, 300));
      capture.kill('SIGINT');
      await exited;
      await a.stop();
      await b.stop();

      // The probes carry 8 bytes (inner length 36); the pings to compare carry 100, as flannel's did.
      const ours = echoFrames(readFileSync(file)).filter((f) => f[14 + 28 + 3] === 128);
      const theirs = echoFrames(readFileSync(join(VECTORS_DIR, 'flannel-udp-8285.pcap')))
        // The vector's pings carry 100 bytes (inner length 128); its iperf3 session is not ours.
        .filter((f) => f[14 + 28 + 2] === 0 && f[14 + 28 + 3] === 128)
        .slice(0, 6);
      expect(theirs).toHaveLength(6);
      expect(ours).toHaveLength(6);
      for (let i = 0; i < 6; i++) {
        // Request a->b, reply b->a, in turn: each checked against flannel's frame at that place.
        expect(masked(ours[i]), `frame ${i + 1}`).toBe(masked(theirs[i]));
        const ip = Buffer.from(ours[i].subarray(14));
        expect(ipv4Check(ip, 0, ip.length), `outer header of frame ${i + 1}`).toBe(Status.ok);
        expect(ipv4Check(ip, 28, ip.length - 28), `inner header of frame ${i + 1}`).toBe(Status.ok);
        // The inner TTL is flannel's: 64, one lower after the sending side's proxy.
        expect(ip[28 + 8]).toBe(63);
      }
    } finally {
      nodes.delete();
      dir.remove();
    }
  });
});
