import { spawnSync } from 'node:child_process';
import { isWeftError } from '@weft/core';
import { WEFTD_CLI } from '@weft/testkit';
import { describe, expect, it } from 'vitest';
import { FLAGS, helpText, parseFlags } from '../src/index.js';

describe('weftd flags', () => {
  it("has flannel's defaults", () => {
    const o = parseFlags([], {});
    expect(o).toMatchObject({
      store: 'embedded',
      storePath: '/var/lib/weft/subnets.json',
      etcdPrefix: '/coreos.com/network',
      subnetFile: '/run/flannel/subnet.env',
      ipMasq: false,
      vxlanMode: 'auto',
      releaseOnExit: false,
      leaseTtlSeconds: 86400,
      renewMarginMinutes: 60,
    });
  });

  it('reads flags in both forms, and each flag from its WEFTD_ environment twin', () => {
    const o = parseFlags(
      ['--etcd-endpoints=http://a:2379,http://b:2379', '--ip-masq', '--healthz-port', '8080'],
      { WEFTD_IFACE: 'eth1', WEFTD_VXLAN_MODE: 'userspace', WEFTD_HEALTHZ_PORT: '9' },
    );
    expect(o.store).toBe('etcd');
    expect(o.etcdEndpoints).toEqual(['http://a:2379', 'http://b:2379']);
    expect(o.ipMasq).toBe(true);
    expect(o.healthzPort).toBe(8080); // the flag wins over the environment
    expect(o.iface).toEqual(['eth1']);
    expect(o.vxlanMode).toBe('userspace');
  });

  it('refuses what it does not know, saying where to look', () => {
    const err = (argv: string[], env = {}) => {
      try {
        parseFlags(argv, env);
      } catch (e) {
        return isWeftError(e, 'ERR_WEFTD_FLAG') ? e.message : 'other error';
      }
      return 'parsed';
    };
    expect(err(['--no-such-flag'])).toBe('unknown flag --no-such-flag (see weftd --help)');
    expect(err(['--vxlan-mode', 'sometimes'])).toBe(
      '--vxlan-mode: "sometimes" must be one of kernel, userspace, auto',
    );
    expect(err(['--healthz-port', 'x'])).toBe('--healthz-port: "x" is not a non-negative integer');
    expect(err(['--store', 'etcd'])).toBe('--store etcd needs --etcd-endpoints');
    expect(err([], { WEFTD_IP_MASQ: 'maybe' })).toBe('WEFTD_IP_MASQ: "maybe" is not true or false');
    expect(err(['--subnet-file'])).toBe('--subnet-file needs a value');
  });

  it('documents every flag with its environment twin in --help', () => {
    const run = spawnSync(process.execPath, [WEFTD_CLI, '--help'], { encoding: 'utf8' });
    expect(run.status).toBe(0);
    expect(run.stdout).toBe(`${helpText()}\n`);
    const help = helpText();
    for (const f of FLAGS) {
      expect(help).toContain(`--${f.name}`);
      expect(help).toContain(`env WEFTD_${f.name.toUpperCase().replace(/-/g, '_')}`);
    }
  });
});
