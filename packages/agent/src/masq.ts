import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { WeftError } from '@weft/core';

const run = promisify(execFile);

/**
 * --ip-masq: flannel's masquerade rules, in a chain of weft's own (WEFT-POSTRTG) jumped to from
 * nat POSTROUTING: traffic within the cluster network keeps its addresses; pods reaching out of
 * it are masqueraded; traffic into this node's subnet from outside keeps its source.
 */
export async function setupMasquerade(network: string, subnet: string): Promise<void> {
  const ipt = async (...args: string[]) => {
    try {
      return await run('iptables', ['-w', '5', '-t', 'nat', ...args]);
    } catch (err) {
      const e = err as NodeJS.ErrnoException & { stderr?: string };
      if (e.code === 'ENOENT')
        throw new WeftError(
          'ERR_WEFTD_IPTABLES',
          '--ip-masq needs iptables: install it (Debian: apt-get install iptables)',
        );
      throw Object.assign(new Error(e.stderr?.trim() || e.message), { stderr: e.stderr });
    }
  };
  await ipt('-N', 'WEFT-POSTRTG').catch(() => undefined); // exists already: fine
  await ipt('-F', 'WEFT-POSTRTG');
  const rules = [
    [
      '-s',
      network,
      '-d',
      network,
      '-m',
      'comment',
      '--comment',
      'weft: within the cluster network',
      '-j',
      'RETURN',
    ],
    [
      '-s',
      network,
      '!',
      '-d',
      '224.0.0.0/4',
      '-m',
      'comment',
      '--comment',
      'weft: pods leaving the cluster network',
      '-j',
      'MASQUERADE',
      '--random-fully',
    ],
    [
      '!',
      '-s',
      network,
      '-d',
      subnet,
      '-m',
      'comment',
      '--comment',
      "weft: into this node's subnet",
      '-j',
      'RETURN',
    ],
    [
      '!',
      '-s',
      network,
      '-d',
      network,
      '-m',
      'comment',
      '--comment',
      'weft: into the cluster network from outside',
      '-j',
      'MASQUERADE',
      '--random-fully',
    ],
  ];
  try {
    for (const rule of rules) await ipt('-A', 'WEFT-POSTRTG', ...rule);
    const jump = [
      'POSTROUTING',
      '-m',
      'comment',
      '--comment',
      'weft masquerade',
      '-j',
      'WEFT-POSTRTG',
    ];
    await ipt('-C', ...jump).catch(() => ipt('-A', ...jump));
  } catch (err) {
    if (err instanceof WeftError) throw err;
    throw new WeftError(
      'ERR_WEFTD_IPTABLES',
      `--ip-masq: iptables refused a rule: ${(err as Error).message}`,
    );
  }
}
