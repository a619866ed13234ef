/**
 * What `weftd doctor` found: one result per check (✓ ok, ! warn, ✗ fail), each ! and ✗ with
 * the fix, and a row per peer for the path checks. The text and the JSON carry the same facts.
 */
export type Status = 'ok' | 'warn' | 'fail';

export const MARK: Record<Status | 'skip', string> = { ok: '✓', warn: '!', fail: '✗', skip: '-' };

/** One node check's result, a line of the report. */
export interface CheckResult {
  /** Stable name of the check (tun, ip-forward, cni-bin, ...): what scripts key on. */
  id: string;
  status: Status;
  /** One line: what was found. */
  title: string;
  /** What to do about it (every warn and fail has one). */
  fix?: string;
  /** The flannel symptom (error message or issue) this check explains. */
  explains?: string;
}

/** One path check of one peer: underlay, overlay or path MTU; `skip` when it cannot be probed. */
export interface PathCell {
  status: Status | 'skip';
  /** What was measured or why it failed, short enough for a table cell. */
  detail: string;
  rttMs?: number;
}

/** One peer's row of the path checks: its lease, then underlay, overlay and path MTU. */
export interface PeerRow {
  /** The peer's subnet and public IP, from its lease. */
  subnet: string;
  publicIp: string;
  /** The backend type its lease names. */
  backend: string;
  /** The peer reached on the underlay (its public IP). */
  underlay: PathCell;
  /** A probe encapsulated as the backend's packets, to the peer's VTEP (its subnet's first) address. */
  overlay: PathCell;
  /** The largest packet that crossed with DF set, against what this node's pods send. */
  pathMtu: PathCell & { bytes?: number; expected: number };
  /** What to do when a cell failed. */
  fix?: string;
}

/** Everything `weftd doctor` found: what `--json` prints, and what renderText formats. */
export interface DoctorReport {
  /** This node as the doctor found it (what could not be found is absent). */
  node: {
    publicIp?: string;
    iface?: string;
    subnet?: string;
    backend?: string;
    mode?: string;
    store: string;
  };
  checks: CheckResult[];
  /** How the path probes went out and how their answers came back. */
  probe?: { method: string; port: number };
  peers: PeerRow[];
  /** Leases this node does not forward to (another backend or VNI), with why. */
  notPeers: { subnet: string; publicIp: string; why: string }[];
  /** True when nothing is ✗: the exit status is 0 exactly then. */
  ok: boolean;
}

export function worst(statuses: Status[]): Status {
  if (statuses.includes('fail')) return 'fail';
  if (statuses.includes('warn')) return 'warn';
  return 'ok';
}

export function reportOk(checks: CheckResult[], peers: PeerRow[]): boolean {
  return (
    !checks.some((c) => c.status === 'fail') &&
    !peers.some((p) => [p.underlay, p.overlay, p.pathMtu].some((c) => c.status === 'fail'))
  );
}

const pad = (s: string, n: number) => (s.length >= n ? `${s} ` : s.padEnd(n));

function cell(c: PathCell): string {
  return `${MARK[c.status]} ${c.detail}`;
}

/** The peer table alone (also what the demo prints). */
export function peerTable(report: DoctorReport): string[] {
  const lines: string[] = [];
  if (report.peers.length === 0) {
    lines.push(
      report.notPeers.length > 0
        ? '  no peer of this backend: nothing to probe'
        : '  no other node holds a lease: nothing to probe',
    );
  } else {
    const port = report.probe ? `:${report.probe.port}` : '';
    lines.push(
      `  ${pad('peer', 16)}${pad('public IP', 15)}${pad('underlay', 16)}${pad(`overlay${port}`, 16)}${pad('path MTU', 18)}RTT`,
    );
    for (const p of report.peers) {
      const rtt = p.overlay.rttMs !== undefined ? `${p.overlay.rttMs.toFixed(2)} ms` : '-';
      lines.push(
        `  ${pad(p.subnet, 16)}${pad(p.publicIp, 15)}${pad(cell(p.underlay), 16)}${pad(cell(p.overlay), 16)}${pad(cell(p.pathMtu), 18)}${rtt}`,
      );
      if (p.fix) lines.push(`      fix: ${p.fix}`);
    }
  }
  for (const n of report.notPeers)
    lines.push(`  (not probed: ${n.subnet} at ${n.publicIp}: ${n.why})`);
  return lines;
}

/** The whole report as text: a header, one line per check (with fix and explanation), the table. */
export function renderText(report: DoctorReport): string {
  const n = report.node;
  const who = [
    n.publicIp
      ? `node ${n.publicIp}${n.iface ? ` on ${n.iface}` : ''}`
      : 'node (underlay not found)',
    n.subnet ? `lease ${n.subnet}` : 'no lease',
    n.backend ? `${n.backend}${n.mode ? ` (${n.mode})` : ''}` : undefined,
    n.store,
  ].filter(Boolean);
  const lines = [`weftd doctor: ${who.join(', ')}`, ''];
  for (const c of report.checks) {
    lines.push(`${MARK[c.status]} ${c.title}`);
    if (c.status !== 'ok') {
      if (c.fix) lines.push(`    fix: ${c.fix}`);
      if (c.explains) lines.push(`    explains: ${c.explains}`);
    }
  }
  lines.push('');
  lines.push(
    report.probe
      ? `path checks from this node (${report.probe.method})`
      : 'path checks from this node',
  );
  lines.push(...peerTable(report));
  const fails =
    report.checks.filter((c) => c.status === 'fail').length +
    report.peers.filter((p) => [p.underlay, p.overlay, p.pathMtu].some((c) => c.status === 'fail'))
      .length;
  const warns = report.checks.filter((c) => c.status === 'warn').length;
  lines.push('');
  lines.push(
    report.ok
      ? `no problem found${warns ? ` (${warns} warning${warns > 1 ? 's' : ''})` : ''}`
      : `${fails} problem${fails > 1 ? 's' : ''} found`,
  );
  return `${lines.join('\n')}\n`;
}
