import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { WeftError } from '@weft/core';

const run = promisify(execFile);

export const TrafficErrorCode = {
  iptables: 'ERR_WEFTD_IPTABLES',
  nft: 'ERR_WEFTD_NFTABLES',
} as const;

/** kube-proxy's masquerade mark: traffic it marked is its business (flannel's KubeProxyMark). */
const KUBE_PROXY_MARK = '0x4000/0x4000';

/** The networks --ip-masq's rules name (flannel's masquerade rules are written from these). */
export interface MasqueradeRules {
  /** The cluster network, e.g. 10.244.0.0/16 (or the IPv6Network: the rules are then IPv6's). */
  network: string;
  /** This node's subnet, e.g. 10.244.3.0/24 (fd00:10:244:3::/64). */
  subnet: string;
  /** Masquerade with fully-random port mapping when the tool supports it (flannel's default). */
  fullyRandom: boolean;
}

/** One family's rules: masquerading (--ip-masq) and the FORWARD accepts for its cluster network. */
export interface FamilyTraffic {
  masq?: MasqueradeRules;
  /** The cluster network whose traffic FORWARD accepts (--iptables-forward-rules). */
  forward?: string;
}

const familyOf = (network: string): 4 | 6 => (network.includes(':') ? 6 : 4);

/** IPv4 multicast, or IPv6's: never masqueraded (flannel's masqRules / masqIP6Rules). */
const multicast = (family: 4 | 6) => (family === 4 ? '224.0.0.0/4' : 'ff00::/8');

/**
 * flanneld's traffic rules (pkg/trafficmngr): masquerading for --ip-masq and FORWARD accepts for
 * --iptables-forward-rules, for each family the network enables, with iptables and ip6tables or
 * (EnableNFTables) nftables tables flannel-ipv4 and flannel-ipv6, the same chains, tables,
 * comments and order as flannel's, so a node moving from flanneld to weftd keeps one set of rules.
 * ensure() checks and puts back what is missing (flannel checks every --iptables-resync seconds).
 */
export interface TrafficRules {
  readonly kind: 'iptables' | 'nftables';
  /** Removes the other kind's rules (flannel's CleanUp of the unused traffic manager). */
  cleanUpOther(): Promise<void>;
  /** Puts every rule in place if any is missing; true when something had to be repaired. */
  ensure(): Promise<boolean>;
}

type Tool = 'iptables' | 'ip6tables' | 'nft';

const ERROR_CODE: Record<Tool, string> = {
  iptables: TrafficErrorCode.iptables,
  ip6tables: TrafficErrorCode.iptables,
  nft: TrafficErrorCode.nft,
};

/** Runs iptables, ip6tables or nft; `need` names the flag that needs it, for the error. */
async function tool(
  cmd: Tool,
  args: string[],
  input?: string,
  need = '--ip-masq',
): Promise<string> {
  try {
    if (input === undefined) return (await run(cmd, args)).stdout;
    return await new Promise((resolve, reject) => {
      const child = execFile(cmd, args, (err, stdout, stderr) =>
        err ? reject(Object.assign(err, { stderr })) : resolve(stdout),
      );
      child.stdin?.end(input);
    });
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stderr?: string };
    if (e.code === 'ENOENT')
      throw new WeftError(
        ERROR_CODE[cmd],
        `${need} needs ${cmd}: install it (Debian: apt-get install ${cmd === 'nft' ? 'nftables' : 'iptables'})`,
      );
    throw new WeftError(
      ERROR_CODE[cmd],
      `${need}: ${cmd} ${args.join(' ')} failed: ${(e.stderr || e.message).trim()}`,
      { cause: err },
    );
  }
}

interface IptRule {
  table: 'nat' | 'filter';
  chain: string;
  spec: string[];
}

/** iptables >= 1.6.2 has --random-fully (flannel's HasRandomFully); ip6tables is the same program. */
async function iptablesHasRandomFully(
  cmd: 'iptables' | 'ip6tables',
  need: string,
): Promise<boolean> {
  const out = await tool(cmd, ['--version'], undefined, need);
  const m = /v(\d+)\.(\d+)\.(\d+)/.exec(out);
  if (!m) return false;
  const [maj, min, patch] = m.slice(1).map(Number);
  return maj > 1 || (maj === 1 && (min > 6 || (min === 6 && patch >= 2)));
}

/** flannel's masqRules and masqIP6Rules (pkg/trafficmngr/iptables/iptables.go): the family is the network's. */
export function iptablesMasqRules(m: MasqueradeRules, randomFully: boolean): IptRule[] {
  const c = ['-m', 'comment', '--comment', 'flanneld masq'];
  const masq = randomFully ? ['-j', 'MASQUERADE', '--random-fully'] : ['-j', 'MASQUERADE'];
  const r = (spec: string[]): IptRule => ({ table: 'nat', chain: 'FLANNEL-POSTRTG', spec });
  return [
    { table: 'nat', chain: 'POSTROUTING', spec: [...c, '-j', 'FLANNEL-POSTRTG'] },
    r(['-m', 'mark', '--mark', KUBE_PROXY_MARK, ...c, '-j', 'RETURN']),
    r(['-s', m.subnet, '-d', m.network, ...c, '-j', 'RETURN']),
    r(['-s', m.network, '-d', m.subnet, ...c, '-j', 'RETURN']),
    r(['!', '-s', m.network, '-d', m.subnet, ...c, '-j', 'RETURN']),
    r(['-s', m.network, '!', '-d', multicast(familyOf(m.network)), ...c, ...masq]),
    r(['!', '-s', m.network, '-d', m.network, ...c, ...masq]),
  ];
}

/** flannel's forwardRules: accept what comes from or goes to the cluster network. */
export function iptablesForwardRules(network: string): IptRule[] {
  const c = ['-m', 'comment', '--comment', 'flanneld forward'];
  return [
    { table: 'filter', chain: 'FORWARD', spec: [...c, '-j', 'FLANNEL-FWD'] },
    { table: 'filter', chain: 'FLANNEL-FWD', spec: ['-s', network, ...c, '-j', 'ACCEPT'] },
    { table: 'filter', chain: 'FLANNEL-FWD', spec: ['-d', network, ...c, '-j', 'ACCEPT'] },
  ];
}

const OWN_CHAINS = new Set(['FLANNEL-POSTRTG', 'FLANNEL-FWD']);

/** One family's rules with iptables (IPv4) or ip6tables (IPv6): the same chains in each. */
class IptablesRules implements TrafficRules {
  readonly kind = 'iptables';
  private rules: IptRule[] | undefined;
  private readonly cmd: 'iptables' | 'ip6tables';

  constructor(
    private readonly masq: MasqueradeRules | undefined,
    private readonly forwardNetwork: string | undefined,
    family: 4 | 6 = 4,
  ) {
    this.cmd = family === 4 ? 'iptables' : 'ip6tables';
  }

  private get need(): string {
    return this.masq ? '--ip-masq' : '--iptables-forward-rules';
  }

  private ipt(table: string, args: string[]): Promise<string> {
    return tool(this.cmd, ['-w', '5', '-t', table, ...args], undefined, this.need);
  }

  private async exists(r: IptRule): Promise<boolean> {
    try {
      await this.ipt(r.table, ['-C', r.chain, ...r.spec]);
      return true;
    } catch {
      return false;
    }
  }

  private async chainExists(table: string, chain: string): Promise<boolean> {
    try {
      await this.ipt(table, ['-S', chain]);
      return true;
    } catch {
      return false;
    }
  }

  async cleanUpOther(): Promise<void> {
    await tool('nft', ['delete', 'table', 'ip', 'flannel-ipv4']).catch(() => undefined);
    await tool('nft', ['delete', 'table', 'ip6', 'flannel-ipv6']).catch(() => undefined);
    if (this.cmd === 'ip6tables') return;
    // weft before 0.2 kept its masquerade rules in a chain of its own.
    const jump = [
      'POSTROUTING',
      '-m',
      'comment',
      '--comment',
      'weft masquerade',
      '-j',
      'WEFT-POSTRTG',
    ];
    while (
      await this.ipt('nat', ['-D', ...jump]).then(
        () => true,
        () => false,
      )
    );
    await this.ipt('nat', ['-F', 'WEFT-POSTRTG']).catch(() => undefined);
    await this.ipt('nat', ['-X', 'WEFT-POSTRTG']).catch(() => undefined);
  }

  private async wanted(): Promise<IptRule[]> {
    if (!this.rules) {
      const random = this.masq?.fullyRandom
        ? await iptablesHasRandomFully(this.cmd, this.need)
        : false;
      this.rules = [
        ...(this.masq ? iptablesMasqRules(this.masq, random) : []),
        ...(this.forwardNetwork ? iptablesForwardRules(this.forwardNetwork) : []),
      ];
    }
    return this.rules;
  }

  async ensure(): Promise<boolean> {
    const rules = await this.wanted();
    let complete = true;
    for (const r of rules) {
      const target = r.spec[r.spec.length - 1];
      const own = OWN_CHAINS.has(r.chain) ? r.chain : OWN_CHAINS.has(target) ? target : undefined;
      if ((own && !(await this.chainExists(r.table, own))) || !(await this.exists(r))) {
        complete = false;
        break;
      }
    }
    if (complete) return false;
    // As flannel's ipTablesBootstrap: our chains are emptied and refilled in order; the jumps
    // into them are removed and appended again.
    for (const chain of OWN_CHAINS) {
      const table = chain === 'FLANNEL-FWD' ? 'filter' : 'nat';
      if (!rules.some((r) => r.chain === chain)) continue;
      if (await this.chainExists(table, chain)) await this.ipt(table, ['-F', chain]);
      else await this.ipt(table, ['-N', chain]);
    }
    for (const r of rules) {
      if (!OWN_CHAINS.has(r.chain))
        while (await this.exists(r)) await this.ipt(r.table, ['-D', r.chain, ...r.spec]);
      await this.ipt(r.table, ['-A', r.chain, ...r.spec]);
    }
    return true;
  }
}

/** flannel's nftables masquerade rules (pkg/trafficmngr/nftables addMasqRules), in order; `ip6` ones for an IPv6 network. */
export function nftMasqRules(m: MasqueradeRules, fullyRandom: boolean): string[] {
  const masq = fullyRandom ? 'masquerade fully-random' : 'masquerade';
  const f = familyOf(m.network);
  const ip = f === 4 ? 'ip' : 'ip6';
  return [
    'meta mark 0x4000 return',
    `${ip} saddr ${m.subnet} ${ip} daddr ${m.network} return`,
    `${ip} saddr ${m.network} ${ip} daddr ${m.subnet} return`,
    // flannel's nftables rule here is `saddr != pod, daddr cluster` (its iptables one differs).
    `${ip} saddr != ${m.subnet} ${ip} daddr ${m.network} return`,
    `${ip} saddr ${m.network} ${ip} daddr != ${multicast(f)} ${masq}`,
    `${ip} saddr != ${m.network} ${ip} daddr ${m.network} ${masq}`,
  ];
}

/** flannel's nftables forward rules: accept what comes from or goes to the cluster network. */
export function nftForwardRules(network: string): string[] {
  const ip = familyOf(network) === 4 ? 'ip' : 'ip6';
  return [`${ip} saddr ${network} accept`, `${ip} daddr ${network} accept`];
}

/** nftables: table ip flannel-ipv4 and table ip6 flannel-ipv6, each with its forward and postrtg chains. */
class NftablesRules implements TrafficRules {
  readonly kind = 'nftables';

  constructor(private readonly families: { family: 4 | 6; rules: FamilyTraffic }[]) {}

  private get need(): string {
    return this.families.some((f) => f.rules.masq) ? '--ip-masq' : '--iptables-forward-rules';
  }

  async cleanUpOther(): Promise<void> {
    for (const cmd of ['iptables', 'ip6tables'] as const)
      for (const [table, chain, jump] of [
        ['nat', 'FLANNEL-POSTRTG', 'POSTROUTING'],
        ['filter', 'FLANNEL-FWD', 'FORWARD'],
      ]) {
        const rules = await tool(cmd, ['-w', '5', '-t', table, '-S', jump]).catch(() => '');
        for (const line of rules.split('\n')) {
          if (!line.endsWith(`-j ${chain}`)) continue;
          const spec = line.replace(/^-A \S+ /, '').match(/"[^"]*"|\S+/g) ?? [];
          await tool(cmd, [
            '-w',
            '5',
            '-t',
            table,
            '-D',
            jump,
            ...spec.map((s) => s.replace(/^"|"$/g, '')),
          ]).catch(() => undefined);
        }
        await tool(cmd, ['-w', '5', '-t', table, '-F', chain]).catch(() => undefined);
        await tool(cmd, ['-w', '5', '-t', table, '-X', chain]).catch(() => undefined);
      }
  }

  /** The chains as flannel's knftables transactions make them (both tables, as flannel's Init). */
  private script(): {
    text: string;
    chains: { family: 'ip' | 'ip6'; table: string; chain: string; rules: string[] }[];
  } {
    const chains: { family: 'ip' | 'ip6'; table: string; chain: string; rules: string[] }[] = [];
    const lines = [
      'add table ip flannel-ipv4 { comment "rules for flannel-ipv4" ; }',
      'add table ip6 flannel-ipv6 { comment "rules for flannel-ipv6" ; }',
    ];
    for (const { family, rules: r } of this.families) {
      const fam = family === 4 ? 'ip' : 'ip6';
      const table = family === 4 ? 'flannel-ipv4' : 'flannel-ipv6';
      if (r.forward) {
        const rules = nftForwardRules(r.forward);
        chains.push({ family: fam, table, chain: 'forward', rules });
        lines.push(
          `add chain ${fam} ${table} forward { type filter hook forward priority filter ; comment "chain to accept flannel traffic" ; }`,
          `flush chain ${fam} ${table} forward`,
          ...rules.map((x) => `add rule ${fam} ${table} forward ${x}`),
        );
      }
      if (r.masq) {
        const rules = nftMasqRules(r.masq, r.masq.fullyRandom);
        chains.push({ family: fam, table, chain: 'postrtg', rules });
        lines.push(
          `add chain ${fam} ${table} postrtg { type nat hook postrouting priority srcnat ; comment "chain to manage traffic masquerading by flannel" ; }`,
          `flush chain ${fam} ${table} postrtg`,
          ...rules.map((x) => `add rule ${fam} ${table} postrtg ${x}`),
        );
      }
    }
    return { text: `${lines.join('\n')}\n`, chains };
  }

  /** Whether each chain holds exactly its rules, in order (as `nft list` prints them back). */
  private async intact(
    chains: { family: 'ip' | 'ip6'; table: string; chain: string; rules: string[] }[],
  ): Promise<boolean> {
    for (const { family, table, chain, rules } of chains) {
      let listed: string;
      try {
        listed = await tool('nft', ['list', 'chain', family, table, chain]);
      } catch {
        return false;
      }
      const have = listed
        .split('\n')
        .map((l) => l.trim())
        .filter((l) => /(return|accept|masquerade.*)$/.test(l));
      if (have.length !== rules.length) return false;
      // nft prints marks zero-padded: meta mark 0x00004000.
      const norm = (r: string) => r.replace(/0x0*([0-9a-f]+)/g, '0x$1');
      for (let i = 0; i < rules.length; i++) if (norm(have[i]) !== norm(rules[i])) return false;
    }
    return true;
  }

  async ensure(): Promise<boolean> {
    const { text, chains } = this.script();
    if (await this.intact(chains)) return false;
    await tool('nft', ['-f', '-'], text, this.need);
    return true;
  }
}

/** Several families' iptables/ip6tables rules, kept as one. */
class EachFamily implements TrafficRules {
  constructor(
    readonly kind: 'iptables',
    private readonly parts: TrafficRules[],
  ) {}

  async cleanUpOther(): Promise<void> {
    for (const p of this.parts) await p.cleanUpOther();
  }

  async ensure(): Promise<boolean> {
    let repaired = false;
    for (const p of this.parts) if (await p.ensure()) repaired = true;
    return repaired;
  }
}

/**
 * The rules for these families (IPv4 as `masq`/`forwardNetwork`, IPv6 as `ipv6`): iptables and
 * ip6tables, or nftables' two tables.
 */
export function trafficRules(
  kind: 'iptables' | 'nftables',
  masq: MasqueradeRules | undefined,
  forwardNetwork: string | undefined,
  ipv6?: FamilyTraffic,
): TrafficRules {
  const families: { family: 4 | 6; rules: FamilyTraffic }[] = [];
  if (masq || forwardNetwork)
    families.push({ family: 4, rules: { masq, forward: forwardNetwork } });
  if (ipv6?.masq || ipv6?.forward) families.push({ family: 6, rules: ipv6 });
  if (kind === 'nftables') return new NftablesRules(families);
  return new EachFamily(
    'iptables',
    families.map((f) => new IptablesRules(f.rules.masq, f.rules.forward, f.family)),
  );
}
