import type { Options } from '../flags.js';
import { checkCni } from './cni.js';
import { type DoctorOptions, gather, peerLeases } from './context.js';
import { checkFirewall } from './firewall.js';
import { checkMtu, checkOffloads } from './mtu.js';
import {
  checkCapability,
  checkConfig,
  checkDaemon,
  checkDuplicateIps,
  checkForwarding,
  checkLease,
  checkRpFilter,
  checkTun,
  checkUnderlay,
  checkVxlanMode,
  checkWireguardMode,
} from './node.js';
import { probePeers } from './probe.js';
import { type CheckResult, type DoctorReport, type PeerRow, reportOk } from './report.js';
import { checkKernelState } from './state.js';

export { DOCTOR_FLAGS, type DoctorOptions, parseDoctorFlags } from './context.js';
export {
  iptablesVerdict,
  nftVerdict,
  type ProbePacket,
  parseIptablesSave,
  parseNftRuleset,
  type Verdict,
} from './firewall.js';
export { checksumBugKernel, parseEthtoolFeatures } from './mtu.js';
export {
  type CheckResult,
  type DoctorReport,
  MARK,
  type PathCell,
  type PeerRow,
  peerTable,
  renderText,
  type Status,
} from './report.js';

/**
 * `weftd doctor`: checks the node the daemon's flags describe, whether weftd runs or not, and
 * probes the path to every peer. It changes nothing on the node: it reads, sends probes, and for
 * a moment may hold the backend's UDP port (only when nothing else does) and a VXLAN or WireGuard
 * device it creates, never brings up, and removes (only when no such device shows the kernel has it).
 */
export async function runDoctor(options: Options, doctor: DoctorOptions): Promise<DoctorReport> {
  const ctx = await gather(options, doctor);
  try {
    const checks: CheckResult[] = [];
    /** A check that throws is a ✗ line of its own, never the end of the report. */
    const run = async <T>(id: string, fn: () => T | Promise<T>, fallback: T): Promise<T> => {
      try {
        return await fn();
      } catch (err) {
        checks.push({
          id,
          status: 'fail',
          title: `the ${id} check could not run: ${(err as Error).message}`,
          fix: "run the doctor as root in the node's network namespace (as weftd runs)",
        });
        return fallback;
      }
    };
    const add = async (id: string, fn: () => CheckResult[] | Promise<CheckResult[]>) => {
      checks.push(...(await run(id, fn, [])));
    };
    await add('config', () => checkConfig(ctx));
    await add('iface', () => checkUnderlay(ctx));
    await add('lease', () => checkLease(ctx));
    await add('duplicate-public-ip', () => checkDuplicateIps(ctx));
    await add('weftd', () => checkDaemon(ctx));
    const vxlan = await run('vxlan-mode', () => checkVxlanMode(ctx), { results: [] });
    const wg = await run('wireguard-mode', () => checkWireguardMode(ctx), { results: [] });
    await add('tun', () => checkTun(ctx, vxlan.kernelVxlan ?? wg.kernel));
    await add('cap-net-admin', () => checkCapability());
    checks.push(...vxlan.results, ...wg.results);
    await add('ip-forward', () => checkForwarding(ctx));
    const cni = await run('cni', () => checkCni(ctx), {
      results: [],
      facts: { bridge: 'cni0', subnetFile: options.subnetFile },
    });
    await add('rp-filter', () => checkRpFilter(ctx, cni.facts.bridge));
    checks.push(...cni.results);
    await add('mtu', () => checkMtu(ctx, cni.facts));
    await add('offload', () => checkOffloads(ctx));
    await add('firewall', () => checkFirewall(ctx, cni.facts));
    await add('kernel-state', () => checkKernelState(ctx));

    const { peers, others } = peerLeases(ctx);
    let rows: PeerRow[] = [];
    let probe: DoctorReport['probe'];
    if (doctor.paths && ctx.underlay && peers.length > 0) {
      const paths = await run('probe', () => probePeers(ctx, peers), undefined);
      if (paths) {
        rows = paths.rows;
        probe = { method: paths.method, port: paths.port };
        if (paths.problem) checks.push(paths.problem);
      }
    }
    return {
      node: {
        publicIp: ctx.underlay?.publicIp,
        iface: ctx.underlay?.iface.name,
        subnet: ctx.own?.subnet,
        backend: ctx.backendType,
        mode: ctx.running ? ctx.running : ctx.overlayName ? 'no dataplane up' : undefined,
        store: ctx.storeDescription,
      },
      checks,
      probe,
      peers: rows,
      notPeers: others.map((o) => ({
        subnet: o.lease.subnet,
        publicIp: o.lease.attrs.publicIp,
        why: o.why,
      })),
      ok: reportOk(checks, rows),
    };
  } finally {
    await ctx.close();
  }
}
