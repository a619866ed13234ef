import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { formatCidr, ipv4InCidr, parseCidr, parseIpv4, tryParseIpv4 } from '@weft/core';
import { vtepAddress } from '../kernel.js';
import {
  iptablesForwardRules,
  iptablesMasqRules,
  nftForwardRules,
  nftMasqRules,
} from '../traffic.js';
import type { CniFacts } from './cni.js';
import { type DoctorContext, peerLeases } from './context.js';
import type { CheckResult } from './report.js';

const run = promisify(execFile);

/** Runs a tool; undefined when it fails, and `why` (if given) says how. */
async function tool(
  cmd: string,
  args: string[],
  why?: (reason: string) => void,
): Promise<string | undefined> {
  try {
    return (await run(cmd, args, { timeout: 10_000, maxBuffer: 64 << 20 })).stdout;
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stderr?: string };
    why?.(
      e.code === 'ENOENT'
        ? `${cmd} is not installed`
        : `${cmd} failed: ${(e.stderr || e.message).trim().split('\n')[0]}`,
    );
    return undefined;
  }
}

/** A packet to judge the rules by: what a peer sends us, what we send, what pods forward. */
export interface ProbePacket {
  proto: 'udp' | 'tcp';
  /** IPv4 addresses as numbers; undefined: any (a rule matching on it is only "maybe"). */
  src?: number;
  dst?: number;
  sport?: number;
  dport?: number;
  in?: string;
  out?: string;
}

type Match = 'yes' | 'no' | 'maybe';

export interface Verdict {
  verdict: 'accept' | 'drop' | 'reject';
  /** The rule (or `policy DROP`) that decided; undefined for an accepting policy. */
  by?: string;
  /** Rules that might have decided otherwise before it (matches this reader cannot judge). */
  unsure: string[];
}

// iptables-save ----------------------------------------------------------------------------

interface IptChain {
  policy?: string;
  rules: { args: string[]; text: string }[];
}

/** iptables-save's words: quoted strings ("flanneld masq") are one word. */
function words(line: string): string[] {
  return (line.match(/"(?:[^"\\]|\\.)*"|\S+/g) ?? []).map((w) =>
    w.startsWith('"') ? w.slice(1, -1).replace(/\\"/g, '"') : w,
  );
}

/** Parses iptables-save output: table -> chain -> policy and rules. */
export function parseIptablesSave(text: string): Map<string, Map<string, IptChain>> {
  const tables = new Map<string, Map<string, IptChain>>();
  let table: Map<string, IptChain> | undefined;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line.startsWith('*')) {
      table = new Map();
      tables.set(line.slice(1), table);
    } else if (line.startsWith(':') && table) {
      const [name, policy] = line.slice(1).split(/\s+/);
      table.set(name, { policy: policy === '-' ? undefined : policy, rules: [] });
    } else if (line.startsWith('-A ') && table) {
      const w = words(line);
      const chain = w[1];
      if (!table.has(chain)) table.set(chain, { rules: [] });
      table.get(chain)!.rules.push({ args: w.slice(2), text: line });
    }
  }
  return tables;
}

function protoMatches(spec: string, proto: string): boolean {
  const names: Record<string, string> = { '6': 'tcp', '17': 'udp', '1': 'icmp' };
  const p = names[spec] ?? spec.toLowerCase();
  return p === 'all' || p === proto;
}

function addressMatch(spec: string, ip: number | undefined): Match {
  if (ip === undefined) return 'maybe';
  let any = false;
  for (const part of spec.split(',')) {
    try {
      const c = parseCidr(part.includes('/') ? part : `${part}/32`, { allowHostBits: true });
      if (c.family === 4 && ipv4InCidr(ip, c)) any = true;
    } catch {
      return 'maybe';
    }
  }
  return any ? 'yes' : 'no';
}

function ifaceMatch(spec: string, name: string | undefined): Match {
  if (name === undefined) return 'maybe';
  return (spec.endsWith('+') ? name.startsWith(spec.slice(0, -1)) : name === spec) ? 'yes' : 'no';
}

/** "8472", "8000:9000", "53,8472,10000:10010". */
function portMatch(spec: string, port: number | undefined): Match {
  if (port === undefined) return 'maybe';
  for (const part of spec.split(',')) {
    const [a, b] = part.split(':');
    const lo = a === '' ? 0 : Number(a);
    const hi = b === undefined ? lo : b === '' ? 65535 : Number(b);
    if (!Number.isInteger(lo) || !Number.isInteger(hi)) return 'maybe';
    if (port >= lo && port <= hi) return 'yes';
  }
  return 'no';
}

const and = (a: Match, b: Match): Match =>
  a === 'no' || b === 'no' ? 'no' : a === 'maybe' || b === 'maybe' ? 'maybe' : 'yes';
const not = (m: Match): Match => (m === 'yes' ? 'no' : m === 'no' ? 'yes' : 'maybe');

/** Options of match modules that say nothing about which packets match. */
const NEUTRAL = new Set(['--comment']);

/** Whether a rule's match part takes the packet; returns the target (and its chain) too. */
function iptMatch(
  args: string[],
  p: ProbePacket,
): { match: Match; target?: string; goto: boolean } {
  let m: Match = 'yes';
  let target: string | undefined;
  let goto = false;
  for (let i = 0; i < args.length; i++) {
    let neg = false;
    let a = args[i];
    if (a === '!') {
      neg = true;
      a = args[++i];
    }
    const v = args[i + 1];
    const take = (r: Match) => {
      m = and(m, neg ? not(r) : r);
      i++;
    };
    switch (a) {
      case '-j':
      case '-g':
        target = v;
        goto = a === '-g';
        return { match: m, target, goto };
      case '-p':
        take(protoMatches(v, p.proto) ? 'yes' : 'no');
        break;
      case '-s':
        take(addressMatch(v, p.src));
        break;
      case '-d':
        take(addressMatch(v, p.dst));
        break;
      case '-i':
        take(ifaceMatch(v, p.in));
        break;
      case '-o':
        take(ifaceMatch(v, p.out));
        break;
      case '--dport':
      case '--dports':
      case '--destination-port':
      case '--destination-ports':
        take(portMatch(v, p.dport));
        break;
      case '--sport':
      case '--sports':
      case '--source-port':
      case '--source-ports':
        take(portMatch(v, p.sport));
        break;
      case '--state':
      case '--ctstate':
        // The packets judged open a flow: NEW.
        take(v.split(',').includes('NEW') ? 'yes' : 'no');
        break;
      case '-m':
        i++;
        break;
      default:
        if (NEUTRAL.has(a)) i++;
        else if (a.startsWith('-')) {
          // A match this reader cannot judge (marks, sets, addrtype, limits...): maybe.
          m = and(m, 'maybe');
          if (v !== undefined && !v.startsWith('-') && v !== '!') i++;
        }
    }
  }
  return { match: m, target, goto };
}

const BUILTIN = new Set(['INPUT', 'OUTPUT', 'FORWARD', 'PREROUTING', 'POSTROUTING']);

/** Walks a chain of an iptables table as the kernel would for `p` (jumps, RETURN, policy). */
export function iptablesVerdict(
  table: Map<string, IptChain>,
  chain: string,
  p: ProbePacket,
): Verdict {
  const unsure: string[] = [];
  const walk = (name: string, depth: number): Verdict | 'return' => {
    const c = table.get(name);
    if (!c || depth > 32) return 'return';
    for (const r of c.rules) {
      const { match, target, goto } = iptMatch(r.args, p);
      if (match === 'no' || !target) continue;
      if (target === 'ACCEPT' || target === 'DROP' || target === 'REJECT') {
        if (match === 'maybe') {
          unsure.push(r.text);
          continue;
        }
        return {
          verdict: target === 'ACCEPT' ? 'accept' : target === 'DROP' ? 'drop' : 'reject',
          by: r.text,
          unsure,
        };
      }
      if (target === 'RETURN') {
        if (match === 'yes') return 'return';
        unsure.push(r.text);
        continue;
      }
      if (table.has(target) && !BUILTIN.has(target)) {
        if (match === 'maybe') {
          // Judge the chain anyway: what it decides is only a maybe.
          const v = walk(target, depth + 1);
          if (v !== 'return' && v.verdict !== 'accept' && v.by) unsure.push(v.by);
          continue;
        }
        const v = walk(target, depth + 1);
        if (v !== 'return') return v;
        if (goto) return 'return';
      }
      // Other targets (LOG, MARK, CT, ...) do not end the walk.
    }
    if (BUILTIN.has(name)) {
      const policy = c.policy ?? 'ACCEPT';
      return policy === 'DROP'
        ? { verdict: 'drop', by: `:${name} DROP (the chain's policy)`, unsure }
        : { verdict: 'accept', unsure };
    }
    return 'return';
  };
  const v = walk(chain, 0);
  return v === 'return' ? { verdict: 'accept', unsure } : v;
}

// nftables ----------------------------------------------------------------------------------

type NftExpr = Record<string, unknown>;
interface NftChain {
  family: string;
  table: string;
  name: string;
  hook?: string;
  prio?: number;
  policy?: string;
  rules: { expr: NftExpr[]; text: string }[];
}

/** `nft -j list ruleset` as chains with their rules. */
export function parseNftRuleset(json: string): NftChain[] {
  let doc: { nftables?: Record<string, unknown>[] };
  try {
    doc = JSON.parse(json);
  } catch {
    return [];
  }
  const chains = new Map<string, NftChain>();
  const key = (f: unknown, t: unknown, c: unknown) => `${f} ${t} ${c}`;
  for (const item of doc.nftables ?? []) {
    const c = item.chain as Record<string, unknown> | undefined;
    if (c)
      chains.set(key(c.family, c.table, c.name), {
        family: String(c.family),
        table: String(c.table),
        name: String(c.name),
        hook: c.hook as string | undefined,
        prio: c.prio as number | undefined,
        policy: c.policy as string | undefined,
        rules: [],
      });
    const r = item.rule as Record<string, unknown> | undefined;
    if (r) {
      const chain = chains.get(key(r.family, r.table, r.chain));
      chain?.rules.push({
        expr: (r.expr as NftExpr[]) ?? [],
        text: `${r.family} ${r.table} ${r.chain}: ${describeNft((r.expr as NftExpr[]) ?? [])}`,
      });
    }
  }
  return [...chains.values()];
}

/** A short nft-like rendering of a rule's expressions, for messages. */
function describeNft(expr: NftExpr[]): string {
  const parts: string[] = [];
  for (const e of expr) {
    const m = e.match as Record<string, unknown> | undefined;
    if (m) {
      const left = m.left as Record<string, Record<string, unknown>>;
      const l = left.payload
        ? `${left.payload.protocol} ${left.payload.field}`
        : left.meta
          ? `meta ${left.meta.key}`
          : left.ct
            ? `ct ${left.ct.key}`
            : JSON.stringify(left);
      const op = m.op === '==' || m.op === 'in' ? '' : `${m.op} `;
      parts.push(`${l} ${op}${JSON.stringify(m.right)}`);
    } else {
      const k = Object.keys(e)[0];
      if (k && k !== 'counter') parts.push(k);
    }
  }
  return parts.join(' ');
}

function nftValueMatch(right: unknown, value: number | string | undefined): Match {
  if (value === undefined) return 'maybe';
  const one = (r: unknown): Match => {
    if (typeof r === 'number' || typeof r === 'string') {
      if (typeof value === 'number' && typeof r === 'string') {
        if (tryParseIpv4(r.split('/')[0]) !== undefined) return addressMatch(r, value);
        return r === String(value) ? 'yes' : 'maybe';
      }
      return r === value ? 'yes' : 'no';
    }
    if (typeof r === 'object' && r !== null) {
      const o = r as Record<string, unknown>;
      if (Array.isArray(o.range) && typeof value === 'number') {
        const [lo, hi] = o.range as number[];
        return value >= lo && value <= hi ? 'yes' : 'no';
      }
      if (o.prefix && typeof value === 'number') {
        const pf = o.prefix as { addr: string; len: number };
        return addressMatch(`${pf.addr}/${pf.len}`, value);
      }
      if (Array.isArray(o.set)) {
        let any: Match = 'no';
        for (const x of o.set) {
          const r2 = one(x);
          if (r2 === 'yes') return 'yes';
          if (r2 === 'maybe') any = 'maybe';
        }
        return any;
      }
    }
    return 'maybe';
  };
  return one(right);
}

function nftMatch(m: Record<string, unknown>, p: ProbePacket): Match {
  const left = m.left as Record<string, Record<string, unknown>>;
  let value: number | string | undefined;
  let known = true;
  if (left?.payload) {
    const { protocol, field } = left.payload as { protocol: string; field: string };
    if (protocol === 'ip' && field === 'saddr') value = p.src;
    else if (protocol === 'ip' && field === 'daddr') value = p.dst;
    else if (protocol === 'ip' && field === 'protocol') value = p.proto;
    else if ((protocol === p.proto || protocol === 'th') && field === 'dport') value = p.dport;
    else if ((protocol === p.proto || protocol === 'th') && field === 'sport') value = p.sport;
    else if (protocol === 'udp' || protocol === 'tcp')
      return 'no'; // another protocol's header
    else known = false;
  } else if (left?.meta) {
    const k = left.meta.key;
    if (k === 'l4proto' || k === 'protocol') value = k === 'l4proto' ? p.proto : 'ip';
    else if (k === 'iifname') value = p.in;
    else if (k === 'oifname') value = p.out;
    else if (k === 'nfproto') value = 'ipv4';
    else known = false;
  } else if (left?.ct && left.ct.key === 'state') {
    const r = m.right;
    const states = Array.isArray(r) ? r : typeof r === 'string' ? [r] : [];
    const has = states.includes('new');
    return (m.op === '!=' ? !has : has) ? 'yes' : 'no';
  } else known = false;
  if (!known) return 'maybe';
  const r = nftValueMatch(m.right, value);
  return m.op === '!=' ? not(r) : r;
}

/** Walks one nftables chain (jumps, gotos, return, policy) for `p`. */
function nftChainVerdict(chains: NftChain[], start: NftChain, p: ProbePacket): Verdict {
  const unsure: string[] = [];
  const find = (name: string) =>
    chains.find((c) => c.family === start.family && c.table === start.table && c.name === name);
  const walk = (c: NftChain, depth: number): Verdict | 'return' => {
    if (depth > 32) return 'return';
    for (const r of c.rules) {
      let m: Match = 'yes';
      let decided: Verdict | 'return' | undefined;
      for (const e of r.expr) {
        if (e.match) {
          m = and(m, nftMatch(e.match as Record<string, unknown>, p));
          if (m === 'no') break;
          continue;
        }
        const verdict =
          'accept' in e ? 'accept' : 'drop' in e ? 'drop' : 'reject' in e ? 'reject' : undefined;
        if (verdict) {
          if (m === 'maybe') {
            unsure.push(r.text);
            break;
          }
          decided = { verdict, by: r.text, unsure };
          break;
        }
        if ('return' in e) {
          if (m === 'yes') decided = 'return';
          else unsure.push(r.text);
          break;
        }
        const jump = (e.jump ?? e.goto) as { target: string } | undefined;
        if (jump) {
          const t = find(jump.target);
          if (!t) break;
          const v = walk(t, depth + 1);
          if (m === 'maybe') {
            if (v !== 'return' && v.verdict !== 'accept' && v.by) unsure.push(v.by);
            break;
          }
          if (v !== 'return') decided = v;
          else if (e.goto) decided = 'return';
          break;
        }
        if (!('counter' in e || 'log' in e || 'limit' in e || 'mangle' in e || 'notrack' in e))
          m = and(m, 'maybe');
      }
      if (decided) return decided;
    }
    return 'return';
  };
  const v = walk(start, 0);
  if (v !== 'return') return v;
  return start.policy === 'drop'
    ? {
        verdict: 'drop',
        by: `${start.family} ${start.table} ${start.name} (policy drop)`,
        unsure,
      }
    : { verdict: 'accept', unsure };
}

/** Every base chain on `hook` must let the packet through (a drop anywhere is final). */
export function nftVerdict(chains: NftChain[], hook: string, p: ProbePacket): Verdict {
  const unsure: string[] = [];
  const base = chains
    .filter((c) => c.hook === hook && (c.family === 'ip' || c.family === 'inet'))
    .sort((a, b) => (a.prio ?? 0) - (b.prio ?? 0));
  for (const c of base) {
    const v = nftChainVerdict(chains, c, p);
    unsure.push(...v.unsure);
    if (v.verdict !== 'accept') return { ...v, unsure };
  }
  return { verdict: 'accept', unsure };
}

// the checks -------------------------------------------------------------------------------

interface Rulesets {
  ipt?: Map<string, Map<string, IptChain>>;
  nft?: NftChain[];
  /** The iptables binary is iptables-nft: its tables are also in nft's ruleset. */
  iptablesOnNft: boolean;
  /** Why a ruleset could not be read (not installed, or failed: no privilege). */
  unread: string[];
}

async function readRulesets(): Promise<Rulesets> {
  const unread: string[] = [];
  const why = (r: string) => unread.push(r);
  const [save, nftJson, version] = await Promise.all([
    tool('iptables-save', [], why),
    tool('nft', ['-j', 'list', 'ruleset'], why),
    tool('iptables', ['-V']),
  ]);
  const iptablesOnNft = /nf_tables/.test(version ?? '');
  let nft = nftJson !== undefined ? parseNftRuleset(nftJson) : undefined;
  // iptables-nft's own tables are judged through iptables-save, where its rules read as written.
  if (nft && iptablesOnNft)
    nft = nft.filter(
      (c) =>
        !(
          (c.family === 'ip' || c.family === 'ip6') &&
          ['filter', 'nat', 'mangle', 'raw', 'security'].includes(c.table)
        ),
    );
  return {
    ipt: save !== undefined ? parseIptablesSave(save) : undefined,
    nft,
    iptablesOnNft,
    unread,
  };
}

function judge(rs: Rulesets, chain: 'INPUT' | 'OUTPUT' | 'FORWARD', p: ProbePacket): Verdict {
  const filter = rs.ipt?.get('filter');
  const a = filter ? iptablesVerdict(filter, chain, p) : { verdict: 'accept' as const, unsure: [] };
  if (a.verdict !== 'accept') return a;
  const b = rs.nft
    ? nftVerdict(rs.nft, chain.toLowerCase(), p)
    : { verdict: 'accept' as const, unsure: [] };
  return { ...b, unsure: [...a.unsure, ...b.unsure] };
}

const n = (ip: string | undefined) => (ip ? tryParseIpv4(ip) : undefined);
const plural = (k: number, w: string) => `${k} ${w}${k === 1 ? '' : 's'}`;

/**
 * The firewall against the overlay: rules that drop or reject the backend's UDP port (in from
 * each peer, out to it), the FORWARD chain against pod traffic, and flannel's masquerade and
 * forward rules when weftd is meant to hold them.
 */
export async function checkFirewall(ctx: DoctorContext, cni: CniFacts): Promise<CheckResult[]> {
  const out: CheckResult[] = [];
  const u = ctx.underlay;
  if (!u || !ctx.backendType) return out;
  const rs = await readRulesets();
  const privilege = rs.unread.some((r) => / failed: /.test(r));
  if (privilege || (!rs.ipt && !rs.nft)) {
    // Rules that cannot be read are not rules that are absent: nothing about them is said.
    out.push({
      id: 'firewall',
      status: 'warn',
      title: `the firewall was not read: ${rs.unread.join('; ')}`,
      fix: privilege
        ? 'run the doctor as root (CAP_NET_ADMIN), as weftd runs'
        : 'install iptables and nftables (or run the doctor where weftd runs)',
    });
    return out;
  }
  const { peers } = peerLeases(ctx);
  const encapsulates = ['vxlan', 'udp', 'wireguard'].includes(ctx.backendType);
  if (encapsulates) {
    const port = ctx.port;
    const targets = peers.length > 0 ? peers.map((l) => l.attrs.publicIp) : [undefined];
    const blocked: string[] = [];
    const unsure = new Set<string>();
    for (const peer of targets) {
      const inbound = judge(rs, 'INPUT', {
        proto: 'udp',
        src: n(peer),
        dst: n(u.ifaceAddress),
        dport: port,
        in: u.iface.name,
      });
      const outbound = judge(rs, 'OUTPUT', {
        proto: 'udp',
        src: n(u.ifaceAddress),
        dst: n(peer),
        dport: port,
        out: u.iface.name,
      });
      for (const [v, dir] of [
        [inbound, `from ${peer ?? 'other nodes'}`],
        [outbound, `to ${peer ?? 'other nodes'}`],
      ] as const) {
        if (v.verdict !== 'accept') blocked.push(`${dir}: ${v.verdict} by ${v.by}`);
        for (const x of v.unsure) unsure.add(x);
      }
    }
    if (blocked.length > 0)
      out.push({
        id: 'firewall-port',
        status: 'fail',
        title: `UDP ${port} (the ${ctx.backendType} backend's port) is blocked ${blocked.join('; ')}`,
        fix: `accept UDP ${port} between the nodes before that rule (e.g. iptables -I INPUT -p udp --dport ${port} -s <node network> -j ACCEPT), or delete the rule`,
        explains: `flannel troubleshooting "Firewalls": ${ctx.backendType} uses UDP ${port}; pods on other nodes time out while the nodes ping each other`,
      });
    else if (unsure.size > 0)
      out.push({
        id: 'firewall-port',
        status: 'warn',
        title: `UDP ${port} is accepted, unless one of these rules matches (it tests what this reader cannot judge): ${[...unsure].slice(0, 3).join(' | ')}`,
        fix: `make sure UDP ${port} between the nodes is accepted before them`,
      });
    else
      out.push({
        id: 'firewall-port',
        status: 'ok',
        title: `UDP ${port} from and to ${peers.length > 0 ? plural(peers.length, 'peer') : 'other nodes'}: no rule drops it`,
      });
  }

  // Pod traffic through this node: a peer's pod to one of ours over the overlay, and back.
  const own = ctx.own;
  if (own && ctx.config?.network) {
    const network = formatCidr(ctx.config.network);
    const ownPod = parseIpv4(vtepAddress(own.subnet)) + 2;
    // A peer's subnet, or (alone) another subnet of the network.
    const size = 2 ** (32 - ctx.config.subnetLen);
    const first = ctx.config.subnetMin;
    const other =
      peers[0]?.subnet ??
      formatCidr({
        family: 4,
        address: parseIpv4(vtepAddress(own.subnet)) === first ? first + size : first,
        prefixLength: ctx.config.subnetLen,
      });
    const remotePod = parseIpv4(vtepAddress(other)) + 2;
    const overlayDev =
      ctx.backendType === 'host-gw' ? u.iface.name : (ctx.overlayName ?? u.iface.name);
    const inbound = judge(rs, 'FORWARD', {
      proto: 'tcp',
      src: remotePod,
      dst: ownPod,
      sport: 40000,
      dport: 80,
      in: overlayDev,
      out: cni.bridge,
    });
    const outbound = judge(rs, 'FORWARD', {
      proto: 'tcp',
      src: ownPod,
      dst: remotePod,
      sport: 40000,
      dport: 80,
      in: cni.bridge,
      out: overlayDev,
    });
    const bad = [inbound, outbound].filter((v) => v.verdict !== 'accept');
    if (bad.length > 0)
      out.push({
        id: 'firewall-forward',
        status: 'fail',
        title: `forwarded pod traffic in ${network} is dropped: ${bad[0].verdict} by ${bad[0].by}`,
        fix: ctx.options.iptablesForwardRules
          ? "weftd puts flannel's accept rules in place (FLANNEL-FWD, or the nftables forward chain): start weftd, and make sure no earlier rule drops the cluster network"
          : `run weftd with --iptables-forward-rules (the default), or accept ${network} in FORWARD yourself`,
        explains:
          'flannel troubleshooting "Connectivity": Docker 1.13+ sets the FORWARD policy to DROP, and pods on different hosts cannot talk',
      });
    else
      out.push({
        id: 'firewall-forward',
        status: 'ok',
        title: `FORWARD lets pod traffic through (${overlayDev} <-> ${cni.bridge})`,
      });
  }

  const enableNft = ctx.config?.enableNftables ?? false;
  if (ctx.options.ipMasq && own && ctx.config?.network) {
    const m = { network: formatCidr(ctx.config.network), subnet: own.subnet, fullyRandom: true };
    const missing = enableNft
      ? await missingNftChain('postrtg', [nftMasqRules(m, true), nftMasqRules(m, false)])
      : await missingIptables(m, 'nat');
    out.push(
      missing.length === 0
        ? {
            id: 'masquerade',
            status: 'ok',
            title: `--ip-masq: flannel's masquerade rules are in place (${enableNft ? 'nftables flannel-ipv4 postrtg' : 'iptables FLANNEL-POSTRTG'})`,
          }
        : {
            id: 'masquerade',
            status: 'fail',
            title: `--ip-masq, but ${plural(missing.length, 'masquerade rule')} missing: ${missing[0]}${missing.length > 1 ? ', ...' : ''}`,
            fix: 'start weftd with --ip-masq: it puts them back within --iptables-resync seconds (and says so in its log if it cannot)',
            explains:
              'pods reach other pods but nothing outside the cluster network (replies go to pod addresses the outside cannot route)',
          },
    );
  }
  if (ctx.options.iptablesForwardRules && ctx.config?.network && rs.ipt && !enableNft) {
    const missing = await missingIptablesForward(formatCidr(ctx.config.network));
    if (missing.length > 0)
      out.push({
        id: 'forward-rules',
        status: 'warn',
        title: `flannel's FORWARD accept rules are missing: ${missing[0]}`,
        fix: 'start weftd (it adds FLANNEL-FWD with --iptables-forward-rules, the default); without them pod traffic depends on the FORWARD policy',
      });
  }
  if (enableNft && ctx.options.iptablesForwardRules && ctx.config?.network && rs.nft) {
    const missing = await missingNftChain('forward', [
      nftForwardRules(formatCidr(ctx.config.network)),
    ]);
    if (missing.length > 0)
      out.push({
        id: 'forward-rules',
        status: 'warn',
        title: `flannel's nftables forward chain is missing or changed: ${missing[0]}`,
        fix: 'start weftd (EnableNFTables: it keeps table ip flannel-ipv4, chain forward)',
      });
  }
  if (rs.unread.length > 0)
    out.push({
      id: 'firewall-tools',
      status: 'ok',
      title: `${rs.unread.join(' and ')}: those rules cannot be present`,
    });
  return out;
}

/** `iptables -C` each of flannel's masquerade rules (either --random-fully form). */
async function missingIptables(
  m: { network: string; subnet: string; fullyRandom: boolean },
  table: string,
): Promise<string[]> {
  const missing: string[] = [];
  const withRandom = iptablesMasqRules(m, true);
  const without = iptablesMasqRules(m, false);
  for (let i = 0; i < withRandom.length; i++) {
    let found = false;
    for (const r of [withRandom[i], without[i]]) {
      if (
        (await tool('iptables', ['-w', '5', '-t', table, '-C', r.chain, ...r.spec])) !== undefined
      ) {
        found = true;
        break;
      }
    }
    if (!found) missing.push(`-t ${table} -A ${without[i].chain} ${without[i].spec.join(' ')}`);
  }
  return missing;
}

async function missingIptablesForward(network: string): Promise<string[]> {
  const missing: string[] = [];
  for (const r of iptablesForwardRules(network))
    if (
      (await tool('iptables', ['-w', '5', '-t', r.table, '-C', r.chain, ...r.spec])) === undefined
    )
      missing.push(`-A ${r.chain} ${r.spec.join(' ')}`);
  return missing;
}

/** Whether nft's flannel-ipv4 `chain` holds one of the rule lists, in order. */
async function missingNftChain(chain: string, variants: string[][]): Promise<string[]> {
  const listed = await tool('nft', ['list', 'chain', 'ip', 'flannel-ipv4', chain]);
  if (listed === undefined) return [`table ip flannel-ipv4 chain ${chain}`];
  const have = listed
    .split('\n')
    .map((l) => l.trim().replace(/\s*counter packets \d+ bytes \d+/, ''))
    .filter((l) => /(return|accept|masquerade.*)$/.test(l))
    .map((r) => r.replace(/0x0*([0-9a-f]+)/g, '0x$1'));
  for (const rules of variants) {
    const want = rules.map((r) => r.replace(/0x0*([0-9a-f]+)/g, '0x$1'));
    if (want.length === have.length && want.every((r, i) => r === have[i])) return [];
  }
  return variants[0].filter((r, i) => have[i] !== r.replace(/0x0*([0-9a-f]+)/g, '0x$1'));
}
