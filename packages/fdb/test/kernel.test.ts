import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { formatIpv4, parseMac } from '@weft/core';
import { parseVxlanFrame } from '@weft/encap';
import { createNetns, haveTools, type Netns, privileged, readPcap, tempDir } from '@weft/testkit';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Fdb } from '../src/index.js';

/**
 * The FDB against the kernel's VXLAN FDB, the table weft replaces: the same `bridge fdb`
 * operations are applied to a kernel VXLAN device in a namespace of our own and to an `Fdb`, and
 * (1) the entries left must be the same, (2) frames the kernel sends must reach exactly the VTEPs
 * `destinations()` lists: head-end replication of broadcast and unknown unicast to every
 * all-zeros destination, a known MAC to its own.
 */
const ZERO = '00:00:00:00:00:00';
const VNI = 42;
const PORT = 4789;
const canRun =
  privileged('the FDB kernel comparison') &&
  haveTools('the FDB kernel comparison', 'bridge', 'dumpcap');

type Op =
  | { kind: 'append'; dst: string }
  | { kind: 'delDefault'; dst: string }
  | { kind: 'replace'; mac: string; dst: string }
  | { kind: 'del'; mac: string };

const dsts = ['198.18.0.2', '198.18.0.3', '198.18.0.4', '198.18.0.5'];
// Unicast only: the kernel refuses `replace` for group MACs (phase 2 below adds one with `add`).
const macs = ['02:00:00:00:00:91', '02:00:00:00:00:92'];
const op: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ kind: fc.constant('append' as const), dst: fc.constantFrom(...dsts) }),
  fc.record({ kind: fc.constant('delDefault' as const), dst: fc.constantFrom(...dsts) }),
  fc.record({
    kind: fc.constant('replace' as const),
    mac: fc.constantFrom(...macs),
    dst: fc.constantFrom(...dsts),
  }),
  fc.record({ kind: fc.constant('del' as const), mac: fc.constantFrom(...macs) }),
);

/** The `bridge` command for an operation; deleting what is absent fails in the kernel, hence `|| true`. */
function bridgeCommand(o: Op): string {
  switch (o.kind) {
    case 'append':
      return `bridge fdb append ${ZERO} dev vx0 dst ${o.dst}`;
    case 'delDefault':
      return `bridge fdb del ${ZERO} dev vx0 dst ${o.dst} 2>/dev/null || true`;
    case 'replace':
      return `bridge fdb replace ${o.mac} dev vx0 dst ${o.dst}`;
    case 'del':
      return `bridge fdb del ${o.mac} dev vx0 2>/dev/null || true`;
  }
}

function applyToWeft(fdb: Fdb, o: Op): void {
  switch (o.kind) {
    case 'append':
      fdb.appendDefault(o.dst);
      return;
    case 'delDefault':
      fdb.removeDefault(o.dst);
      return;
    case 'replace':
      fdb.add({ mac: o.mac, dst: o.dst });
      return;
    case 'del':
      fdb.remove(o.mac);
      return;
  }
}

/** The kernel's entries with a remote, as sorted `mac dst` lines. */
async function kernelEntries(ns: Netns): Promise<string[]> {
  const { stdout } = await ns.exec(['bridge', '-j', 'fdb', 'show', 'dev', 'vx0']);
  const rows = JSON.parse(stdout || '[]') as { mac: string; dst?: string }[];
  return rows
    .filter((r) => r.dst !== undefined)
    .map((r) => `${r.mac} ${r.dst}`)
    .sort();
}

function weftEntries(fdb: Fdb): string[] {
  return fdb
    .dump()
    .filter((e) => e.static)
    .map((e) => `${e.mac} ${e.dst}`)
    .sort();
}

describe.skipIf(!canRun)('FDB against the kernel VXLAN FDB', () => {
  let ns: Netns;

  beforeAll(async () => {
    ns = createNetns('fdbkern');
    // The underlay: one end of a veth pair going nowhere, ARP off so every encapsulated copy
    // leaves at once, where a capture on it sees it.
    await ns.sh(`
      sysctl -qw net.ipv6.conf.default.disable_ipv6=1
      ip link add u0 type veth peer name u1
      ip link set u0 arp off
      ip addr add 198.18.0.1/24 dev u0
      ip link set u1 up
      ip link set u0 up
      ip link add vx0 type vxlan id ${VNI} dstport ${PORT} local 198.18.0.1 dev u0 nolearning
      ip link set vx0 address 02:00:00:00:00:01
      ip addr add 10.99.0.1/24 dev vx0
      ip link set vx0 up
    `);
  });

  afterAll(() => {
    ns?.delete();
  });

  it('random append / del / replace sequences leave the same entries in both', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(op, { minLength: 1, maxLength: 12 }), async (ops) => {
        await ns.sh('bridge fdb flush dev vx0 2>/dev/null || true');
        await ns.sh(`for m in ${ZERO} ${macs.join(' ')}; do
          while bridge fdb del $m dev vx0 2>/dev/null; do :; done
        done`);
        expect(await kernelEntries(ns)).toEqual([]);
        const fdb = new Fdb({ defaultPort: PORT, defaultVni: VNI });
        await ns.sh(ops.map(bridgeCommand).join('\n'));
        for (const o of ops) applyToWeft(fdb, o);
        expect(weftEntries(fdb)).toEqual(await kernelEntries(ns));
      }),
      { numRuns: 25 },
    );
  });

  it('frames the kernel sends reach exactly the VTEPs destinations() lists', async () => {
    const known = '02:00:00:00:00:99';
    const unknown = '02:00:00:00:00:88';
    const setup = [
      `bridge fdb append ${ZERO} dev vx0 dst 198.18.0.2`,
      `bridge fdb append ${ZERO} dev vx0 dst 198.18.0.3`,
      `bridge fdb append ${ZERO} dev vx0 dst 198.18.0.4`,
      `bridge fdb append ${ZERO} dev vx0 dst 198.18.0.3`,
      `bridge fdb replace ${known} dev vx0 dst 198.18.0.5`,
      `ip neigh replace 10.99.0.99 lladdr ${known} dev vx0 nud permanent`,
      `ip neigh replace 10.99.0.88 lladdr ${unknown} dev vx0 nud permanent`,
    ];
    const fdb = new Fdb({ defaultPort: PORT, defaultVni: VNI });
    fdb.appendDefault('198.18.0.2');
    fdb.appendDefault('198.18.0.3');
    fdb.appendDefault('198.18.0.4');
    fdb.appendDefault('198.18.0.3');
    fdb.add({ mac: known, dst: '198.18.0.5' });
    await ns.sh(`bridge fdb flush dev vx0 2>/dev/null || true
      for m in ${ZERO} ${macs.join(' ')} ff:ff:ff:ff:ff:ff; do while bridge fdb del $m dev vx0 2>/dev/null; do :; done; done
      ${setup.join('\n')}`);

    // Phase 1: broadcast (ARP for an absent host), unknown unicast, known unicast.
    let seen = await capture(
      ns,
      'ping -c1 -W1 10.99.0.77 >/dev/null 2>&1 & ping -c3 -i0.3 -W1 10.99.0.88 >/dev/null 2>&1 & ' +
        'ping -c3 -i0.3 -W1 10.99.0.99 >/dev/null 2>&1 & wait',
    );
    const expectFor = (mac: number) =>
      fdb
        .destinations(mac)
        .map((e) => formatIpv4(e.remote4))
        .sort();
    expect(expectFor(0xffffffffffff)).toEqual(['198.18.0.2', '198.18.0.3', '198.18.0.4']);
    expect(seen.get(0xffffffffffff)).toEqual(expectFor(0xffffffffffff));
    expect(seen.get(parseMac(unknown))).toEqual(expectFor(parseMac(unknown)));
    expect(seen.get(parseMac(known))).toEqual(['198.18.0.5']);
    expect(seen.get(parseMac(known))).toEqual(expectFor(parseMac(known)));

    // Phase 2: a static entry for the broadcast MAC takes broadcast off the default list, in the
    // kernel (exact match first) and in weft alike.
    await ns.sh('bridge fdb add ff:ff:ff:ff:ff:ff dev vx0 dst 198.18.0.6');
    fdb.add({ mac: 'ff:ff:ff:ff:ff:ff', dst: '198.18.0.6' });
    seen = await capture(ns, 'ping -c1 -W1 10.99.0.76 >/dev/null 2>&1 || true');
    expect(seen.get(0xffffffffffff)).toEqual(['198.18.0.6']);
    expect(seen.get(0xffffffffffff)).toEqual(expectFor(0xffffffffffff));
    // Removing one default destination removes it from unknown unicast's replication too.
    await ns.sh(`bridge fdb del ${ZERO} dev vx0 dst 198.18.0.3`);
    fdb.removeDefault('198.18.0.3');
    await ns.sh('ip neigh replace 10.99.0.87 lladdr 02:00:00:00:00:87 dev vx0 nud permanent');
    seen = await capture(ns, 'ping -c3 -i0.3 -W1 10.99.0.87 >/dev/null 2>&1 || true');
    expect(seen.get(parseMac('02:00:00:00:00:87'))).toEqual(['198.18.0.2', '198.18.0.4']);
    expect(seen.get(parseMac('02:00:00:00:00:87'))).toEqual(
      expectFor(parseMac('02:00:00:00:00:87')),
    );
  });
});

/**
 * Captures VXLAN frames on the underlay while `traffic` runs, and returns for each inner
 * destination MAC the sorted outer destination addresses its copies went to.
 */
async function capture(ns: Netns, traffic: string): Promise<Map<number, string[]>> {
  const dir = tempDir('weft-fdbcap-');
  try {
    const file = join(dir.path, 'u0.pcap');
    const child = spawn(
      'ip',
      ['netns', 'exec', ns.name, 'dumpcap', '-P', '-i', 'u0', '-f', `udp port ${PORT}`, '-w', file],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    try {
      await new Promise<void>((resolve, reject) => {
        let err = '';
        child.stderr.on('data', (chunk: Buffer) => {
          err += chunk.toString();
          // dumpcap says so a moment before its socket sees packets: give it that moment.
          if (err.includes('Capturing on')) setTimeout(resolve, 500);
        });
        child.once('exit', (code) => reject(new Error(`dumpcap exited (${code}): ${err}`)));
      });
      await ns.sh(traffic, { timeoutMs: 20_000 });
      // Let the last copies reach the capture file.
      await new Promise((r) => setTimeout(r, 300));
    } finally {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGINT');
      await exited;
    }
    const seen = new Map<number, Set<string>>();
    for (const record of readPcap(readFileSync(file)).records) {
      const f = parseVxlanFrame(record.data);
      if (f.ip.version !== 4 || f.vxlan.vni !== VNI) continue;
      let set = seen.get(f.inner.dst);
      if (!set) {
        set = new Set();
        seen.set(f.inner.dst, set);
      }
      set.add(formatIpv4(f.ip.header.dst));
    }
    return new Map([...seen].map(([mac, set]) => [mac, [...set].sort()]));
  } finally {
    dir.remove();
  }
}
