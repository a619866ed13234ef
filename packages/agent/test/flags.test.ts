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

  it("takes flanneld's flags as flanneld does: FLANNELD_ twins, one dash or two, repeatable --iface and --iface-regex, ranges", () => {
    const o = parseFlags(
      ['-iface', 'eth0', '--iface=10.0.0.5', '-iface-regex', '^10\\.', '--ip-masq=false'],
      {
        FLANNELD_PUBLIC_IP: '198.18.0.9',
        FLANNELD_IPTABLES_FORWARD_RULES: 'false',
        FLANNELD_SUBNET_LEASE_RENEW_MARGIN: '1439',
        FLANNELD_IP_MASQ: 'true',
        WEFTD_IPTABLES_RESYNC: '7',
        FLANNELD_IPTABLES_RESYNC: '9',
        FLANNELD_IFACE_CAN_REACH: '198.18.0.1',
        FLANNELD_PUBLIC_IPV6: 'fc00::9',
      },
    );
    expect(o).toMatchObject({
      iface: ['eth0', '10.0.0.5'],
      ifaceRegex: ['^10\\.'],
      ipMasq: false, // the flag wins over the environment
      publicIp: '198.18.0.9',
      iptablesForwardRules: false,
      renewMarginMinutes: 1439,
      iptablesResyncSeconds: 7, // WEFTD_ before FLANNELD_
      ifaceCanReach: '198.18.0.1',
      publicIpv6: 'fc00::9',
    });
    expect(parseFlags([], {})).toMatchObject({
      iface: [],
      ifaceRegex: [],
      iptablesForwardRules: true,
      iptablesResyncSeconds: 5,
      ipMasqFullyRandomDisable: false,
      ipBlackholeRoute: false,
      version: false,
    });
    const err = (argv: string[], env = {}) => {
      try {
        parseFlags(argv, env);
      } catch (e) {
        return isWeftError(e, 'ERR_WEFTD_FLAG') ? e.message : 'other error';
      }
      return 'parsed';
    };
    expect(err(['--subnet-lease-renew-margin', '0'])).toBe(
      '--subnet-lease-renew-margin: 0 is out of range: 1..1439',
    );
    expect(err([], { FLANNELD_SUBNET_LEASE_RENEW_MARGIN: '1440' })).toBe(
      'FLANNELD_SUBNET_LEASE_RENEW_MARGIN: 1440 is out of range: 1..1439',
    );
    expect(err(['--iface-regex', '('])).toMatch(/^--iface-regex: "\(" is not a regex/);
    expect(err(['--public-ip', 'eth0'])).toBe('--public-ip: "eth0" is not an IPv4 address');
    expect(err(['--public-ipv6', '10.0.0.1'])).toBe(
      '--public-ipv6: "10.0.0.1" is not an IPv6 address',
    );
    expect(err(['--iface-can-reach', 'far'])).toBe('--iface-can-reach: "far" is not an IP address');
    expect(err(['--iptables-resync', '0'])).toBe('--iptables-resync: 0 is out of range: 1..86400');
    expect(err(['--net-config-path', '/etc/kube-flannel/net-conf.json'])).toMatch(
      /^--net-config-path is a flanneld flag weftd does not take: .*weftd put-config/,
    );
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
