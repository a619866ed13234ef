import {
  CniError,
  DEFAULT_DATA_DIR,
  DEFAULT_SUBNET_FILE,
  delegateConfig,
  parseNetConf,
  parseSubnetEnv,
} from '@weft/cni';
import { describe, expect, it } from 'vitest';
import { FLANNEL_TEST_ENVS } from './spec.js';

const { V4, V6, DUAL } = FLANNEL_TEST_ENVS;

/**
 * subnet.env and the delegate configuration, against the expectations in flannel's own plugin
 * tests (flannel-io/cni-plugin, flannel_linux_test.go): the same subnet.env files and inputs must
 * give the same delegate configuration, key for key.
 */
const TWO_NETWORKS =
  'FLANNEL_NETWORK=10.1.0.0/16,192.168.0.0/16\nFLANNEL_SUBNET=10.1.17.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=true\n';

const INPUT = JSON.stringify({
  name: 'cni-flannel',
  type: 'flannel',
  subnetFile: '/x',
  dataDir: '/y',
});
const INPUT_ROUTES = [{ dst: '10.96.0.0/12' }, { dst: '192.168.244.0/24', gw: '10.1.17.20' }];
const withIpam = (ipam: Record<string, unknown>) =>
  JSON.stringify({
    ...JSON.parse(INPUT),
    ipam: { 'unknown-param': 'unknown-value', routes: INPUT_ROUTES, ...ipam },
  });

const delegateFor = (input: string, env: string) =>
  delegateConfig(parseNetConf(input), parseSubnetEnv(env));

describe('subnet.env', () => {
  it("reads flannel's files: networks and subnets as networks, MTU, masquerade", () => {
    expect(parseSubnetEnv(V4)).toEqual({
      networks: ['10.1.0.0/16'],
      subnet: '10.1.17.0/24',
      ipv6Networks: [],
      mtu: 1472,
      ipMasq: true,
    });
    expect(parseSubnetEnv(V6)).toEqual({
      networks: [],
      ipv6Networks: ['fc00::/48'],
      ipv6Subnet: 'fc00::/64',
      mtu: 1472,
      ipMasq: true,
    });
    expect(parseSubnetEnv(DUAL)).toMatchObject({ subnet: '10.1.17.0/24', ipv6Subnet: 'fc00::/64' });
    // A network listed twice is one route, as flannel dedupes it.
    expect(
      parseSubnetEnv(TWO_NETWORKS.replace('192.168.0.0/16', '192.168.0.0/16,10.1.0.0/16')).networks,
    ).toEqual(['10.1.0.0/16', '192.168.0.0/16']);
  });

  it('what weftd writes reads back (IPMASQ=false, CRLF, unknown keys and blank lines ignored)', () => {
    const env = parseSubnetEnv(
      '# weft\r\nFLANNEL_NETWORK=10.244.0.0/16\r\n\r\nFLANNEL_SUBNET=10.244.5.1/24\r\nFLANNEL_MTU=1450\r\nFLANNEL_IPMASQ=false\r\nWEFT_X=1\r\nFOO\r\n',
    );
    expect(env).toEqual({
      networks: ['10.244.0.0/16'],
      subnet: '10.244.5.0/24',
      ipv6Networks: [],
      mtu: 1450,
      ipMasq: false,
    });
    // flannel: anything but "true" does not masquerade.
    expect(parseSubnetEnv(V4.replace('=true', '=yes')).ipMasq).toBe(false);
  });

  it("missing keys: flannel's message, naming every one", () => {
    expect(() => parseSubnetEnv('foo=bar', '/run/flannel/subnet.env')).toThrow(
      '/run/flannel/subnet.env is missing FLANNEL_NETWORK, FLANNEL_IPV6_NETWORK, FLANNEL_SUBNET, FLANNEL_IPV6_SUBNET, FLANNEL_MTU, FLANNEL_IPMASQ',
    );
  });

  it("lines and keys as flannel's reader takes them: one CR before the newline, the key as it stands", () => {
    // A known key with a space after it is not that key (flannel skips "FLANNEL_MTU =1400" too).
    expect(parseSubnetEnv(`FLANNEL_MTU \nFLANNEL_MTU =1400\n${V4}`).mtu).toBe(1472);
    // "\r" alone ends no line: the value runs on, and is no CIDR.
    expect(() => parseSubnetEnv(V4.replaceAll('\n', '\r'))).toThrow(
      /FLANNEL_NETWORK is not a CIDR/,
    );
    // Without "=", a known key is an error once its CR is gone (flannel's plugin crashes there).
    expect(() => parseSubnetEnv(`${V4}FLANNEL_MTU\r\n`)).toThrow(/FLANNEL_MTU has no value/);
  });

  it('FLANNEL_MTU with leading zeros, as strconv.ParseUint reads it', () => {
    expect(parseSubnetEnv(V4.replace('=1472', '=0001472')).mtu).toBe(1472);
    expect(() => parseSubnetEnv(V4.replace('=1472', `=${'0'.repeat(400)}1`))).toThrow(
      /FLANNEL_MTU must be a whole number from 68 to 65535/,
    );
  });

  it('an IPv4-mapped address is no IPv6 subnet or network (flannel would make it an IPv4 one)', () => {
    expect(() => parseSubnetEnv(`${DUAL}FLANNEL_IPV6_SUBNET=::ffff:10.2.0.1/120\n`)).toThrow(
      /FLANNEL_IPV6_SUBNET is an IPv4-mapped address, not an IPv6 CIDR/,
    );
    expect(() => parseSubnetEnv(`${DUAL}FLANNEL_IPV6_NETWORK=fc00::/48,::ffff:0:0/96\n`)).toThrow(
      /FLANNEL_IPV6_NETWORK is an IPv4-mapped address/,
    );
  });

  it.each([
    ['FLANNEL_SUBNET=10.1.17.1', /FLANNEL_SUBNET is not a CIDR/],
    ['FLANNEL_SUBNET=fc00::1/64', /FLANNEL_SUBNET must be an IPv4 CIDR/],
    ['FLANNEL_IPV6_SUBNET=10.1.0.1/24', /FLANNEL_IPV6_SUBNET must be an IPv6 CIDR/],
    ['FLANNEL_NETWORK=10.1.0.0/16,', /FLANNEL_NETWORK is not a CIDR/],
    ['FLANNEL_MTU=-1', /FLANNEL_MTU must be a whole number from 68 to 65535/],
    ['FLANNEL_MTU=67', /FLANNEL_MTU must be/],
    ['FLANNEL_MTU=65536', /FLANNEL_MTU must be/],
    ['FLANNEL_MTU=1e3', /FLANNEL_MTU must be/],
    ['FLANNEL_MTU', /FLANNEL_MTU has no value/],
  ])('%s is code 7 naming the key', (line, msg) => {
    const text = `${V4}${line}\n`;
    let err: unknown;
    try {
      parseSubnetEnv(text, 'subnet.env');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(CniError);
    expect((err as CniError).cniCode).toBe(7);
    expect((err as CniError).code).toBe('ERR_CNI_BAD_CONFIG');
    expect((err as CniError).msg).toMatch(msg);
  });
});

describe("the delegate configuration (flannel's expectations)", () => {
  const bridge = { ipMasq: false, isGateway: true, mtu: 1472, name: 'cni-flannel', type: 'bridge' };

  it('IPv4', () => {
    expect(delegateFor(INPUT, V4)).toEqual({
      ...bridge,
      ipam: {
        routes: [{ dst: '10.1.0.0/16' }],
        ranges: [[{ subnet: '10.1.17.0/24' }]],
        type: 'host-local',
      },
    });
  });

  it('IPv4 with two networks: a route to each', () => {
    expect(delegateFor(INPUT, TWO_NETWORKS).ipam).toEqual({
      routes: [{ dst: '10.1.0.0/16' }, { dst: '192.168.0.0/16' }],
      ranges: [[{ subnet: '10.1.17.0/24' }]],
      type: 'host-local',
    });
  });

  it('IPv6', () => {
    expect(delegateFor(INPUT, V6)).toEqual({
      ...bridge,
      ipam: {
        routes: [{ dst: 'fc00::/48' }],
        ranges: [[{ subnet: 'fc00::/64' }]],
        type: 'host-local',
      },
    });
  });

  it('dual stack: a range per family, IPv4 first', () => {
    expect(delegateFor(INPUT, DUAL)).toEqual({
      ...bridge,
      ipam: {
        routes: [{ dst: '10.1.0.0/16' }, { dst: 'fc00::/48' }],
        ranges: [[{ subnet: '10.1.17.0/24' }], [{ subnet: 'fc00::/64' }]],
        type: 'host-local',
      },
    });
  });

  it('an ipam section is the base: its type and unknown keys kept, its routes first', () => {
    for (const [env, routes, ranges] of [
      [V4, [{ dst: '10.1.0.0/16' }], [[{ subnet: '10.1.17.0/24' }]]],
      [V6, [{ dst: 'fc00::/48' }], [[{ subnet: 'fc00::/64' }]]],
      [
        DUAL,
        [{ dst: '10.1.0.0/16' }, { dst: 'fc00::/48' }],
        [[{ subnet: '10.1.17.0/24' }], [{ subnet: 'fc00::/64' }]],
      ],
    ] as const) {
      expect(delegateFor(withIpam({ type: 'my-ipam' }), env).ipam).toEqual({
        type: 'my-ipam',
        'unknown-param': 'unknown-value',
        routes: [...INPUT_ROUTES, ...routes],
        ranges,
      });
      // Without a type: host-local.
      expect(delegateFor(withIpam({}), env).ipam).toMatchObject({ type: 'host-local' });
    }
  });

  it("kube-flannel's delegate options pass through; what the delegate sets itself is not overwritten", () => {
    const input = (delegate: Record<string, unknown>, cniVersion = '0.3.1') =>
      JSON.stringify({ name: 'cbr0', cniVersion, type: 'flannel', delegate });
    expect(delegateFor(input({ hairpinMode: true, isDefaultGateway: true }), V4)).toMatchObject({
      cniVersion: '0.3.1',
      hairpinMode: true,
      isDefaultGateway: true,
      isGateway: true,
    });
    expect(
      delegateFor(input({ mtu: 1400, ipMasq: true, isGateway: false, bridge: 'mynet0' }), V4),
    ).toMatchObject({
      mtu: 1400,
      ipMasq: true,
      isGateway: false,
      bridge: 'mynet0',
    });
    // ipMasq is the inverse of FLANNEL_IPMASQ: the bridge masquerades when the daemon does not.
    expect(delegateFor(input({}), V4.replace('=true', '=false')).ipMasq).toBe(true);
    // isGateway is a bridge option only.
    expect(delegateFor(input({ type: 'ipvlan', master: 'eth0' }), V4)).not.toHaveProperty(
      'isGateway',
    );
  });

  it('runtimeConfig goes to the delegate; no cniVersion in, none out (as flannel)', () => {
    const d = delegateFor(
      JSON.stringify({ name: 'n', runtimeConfig: { portMappings: [{ hostPort: 80 }] } }),
      V4,
    );
    expect(d.runtimeConfig).toEqual({ portMappings: [{ hostPort: 80 }] });
    expect(d).not.toHaveProperty('cniVersion');
  });

  it("the plugin's defaults are flannel's: /run/flannel/subnet.env and /var/lib/cni/flannel", () => {
    const conf = parseNetConf('{"name": "cni-flannel", "type": "flannel"}');
    expect([conf.subnetFile, conf.dataDir]).toEqual([DEFAULT_SUBNET_FILE, DEFAULT_DATA_DIR]);
    expect([DEFAULT_SUBNET_FILE, DEFAULT_DATA_DIR]).toEqual([
      '/run/flannel/subnet.env',
      '/var/lib/cni/flannel',
    ]);
    expect(conf.cniVersion).toBe('0.1.0');
  });
});

describe("ipam.routes as flannel passes them on (libcni's types.Route)", () => {
  const routesFor = (routes: unknown) =>
    delegateFor(JSON.stringify({ ...JSON.parse(INPUT), ipam: { routes } }), V4).ipam as {
      routes: unknown;
    };

  it('canonical text, host bits kept; gw empty or null left out; only the keys types.Route has', () => {
    expect(
      routesFor([
        { dst: 'FC00:0:0:0:0:0:0:1/64', gw: 'FE80:0:0:0:0:0:0:1', note: 'x', metric: 5 },
        { dst: '10.96.0.1/12', gw: '' },
        { dst: '10.97.0.0/16', gw: null, mtu: null, table: null },
        { dst: '10.98.0.0/16', mtu: 0, advmss: 0, priority: 0, table: 0, scope: 0 },
        { dst: '10.99.0.0/16', mtu: 1400, advmss: 1360, priority: 10, table: 100, scope: 253 },
      ]).routes,
    ).toEqual([
      { dst: 'fc00::1/64', gw: 'fe80::1' },
      { dst: '10.96.0.1/12' },
      { dst: '10.97.0.0/16' },
      { dst: '10.98.0.0/16', table: 0, scope: 0 },
      { dst: '10.99.0.0/16', mtu: 1400, advmss: 1360, priority: 10, table: 100, scope: 253 },
      { dst: '10.1.0.0/16' },
    ]);
  });

  it('routes null: only the networks', () => {
    expect(routesFor(null).routes).toEqual([{ dst: '10.1.0.0/16' }]);
  });

  it.each([
    [[{ dst: '10.96.0.0/12', mtu: '1400' }], /"mtu" must be a whole number/],
    [[{ dst: '10.96.0.0/12', mtu: 1.5 }], /"mtu" must be a whole number/],
    [[{ dst: '10.96.0.0/12', table: true }], /"table" must be a whole number/],
    [[{ dst: '10.96.0.0/12', priority: -(2 ** 63) }], /"priority" must be a whole number/],
    [[{ dst: '::ffff:10.96.0.0/108' }], /IPv4-mapped: write the IPv4 network/],
    [[{ dst: '10.96.0.0/12', gw: '::ffff:10.1.17.20' }], /IPv4-mapped: write the IPv4 address/],
    [[{ gw: '10.1.17.20' }], /each route needs a "dst" CIDR/],
    [[null], /each route needs a "dst" CIDR/],
    [[{ dst: null }], /"dst" must be a CIDR/],
  ])('%j is code 7', (routes, details) => {
    let err: unknown;
    try {
      routesFor(routes);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(CniError);
    expect((err as CniError).cniCode).toBe(7);
    expect((err as CniError).msg).toBe('failed to parse ipam.routes');
    expect((err as CniError).details).toMatch(details);
  });
});

describe('the configuration as flannel decodes it (Go, libcni types.PluginConf)', () => {
  const codeOf = (stdin: string) => {
    try {
      parseNetConf(stdin);
    } catch (e) {
      return [(e as CniError).cniCode, (e as CniError).msg];
    }
    return 'ok';
  };
  const conf = (extra: Record<string, unknown>) => JSON.stringify({ name: 'cbr0', ...extra });

  it("libcni's own keys of the wrong type are code 7, well typed ones pass (none reach the delegate)", () => {
    for (const extra of [
      { type: 5 },
      { capabilities: 'portMappings' },
      { capabilities: { portMappings: 'yes' } },
      { dns: '10.96.0.10' },
      { dns: { nameservers: '10.96.0.10' } },
      { dns: { domain: 5 } },
      { 'cni.dev/valid-attachments': 5 },
      { 'cni.dev/valid-attachments': [{ containerID: 5 }] },
    ]) {
      expect(codeOf(conf(extra)), JSON.stringify(extra)).toEqual([
        7,
        expect.stringMatching(/ must be /),
      ]);
    }
    expect(
      codeOf(
        conf({
          type: null,
          capabilities: { portMappings: true, bandwidth: null },
          dns: { nameservers: ['10.96.0.10'], domain: null, search: null, options: [null] },
          'cni.dev/valid-attachments': [{ containerID: 'c1', ifname: 'eth0' }, null],
        }),
      ),
    ).toBe('ok');
  });

  it("skel's codes: a name that is not a string is 6 (decoding), JSON null is 7 (no name)", () => {
    expect(codeOf(conf({ name: 5 }))).toEqual([
      6,
      'error unmarshall network config: "name" must be a string',
    ]);
    expect(codeOf('null')).toEqual([7, 'missing network name']);
    expect(codeOf(conf({ cniVersion: 1 }))).toEqual([
      6,
      'decoding version from network config: cniVersion must be a string',
    ]);
  });

  it('subnetFile and dataDir null: the defaults, as Go leaves a string unset', () => {
    const c = parseNetConf(conf({ subnetFile: null, dataDir: null }));
    expect([c.subnetFile, c.dataDir]).toEqual([DEFAULT_SUBNET_FILE, DEFAULT_DATA_DIR]);
  });

  it('nesting deeper than 1000 levels is code 6 (JSON.stringify could not write it), anywhere', () => {
    const MAX_NESTING = 1000;
    const nested = (levels: number) => `${'['.repeat(levels)}${']'.repeat(levels)}`;
    // The top level is 1, delegate 2, its "x" 3.
    expect(codeOf(`{"name": "cbr0", "delegate": {"x": ${nested(MAX_NESTING - 2)}}}`)).toBe('ok');
    for (const stdin of [
      `{"name": "cbr0", "delegate": {"x": ${nested(MAX_NESTING - 1)}}}`,
      `{"name": "cbr0", "unknown": ${nested(200_000)}}`,
    ]) {
      expect(codeOf(stdin)).toEqual([
        6,
        `error unmarshall network config: nested deeper than ${MAX_NESTING} levels`,
      ]);
    }
  });

  it('a number beyond a double is code 7, not null for the delegate', () => {
    expect(codeOf('{"name": "cbr0", "delegate": {"x": 1e400}}')).toEqual([
      7,
      'a number in "delegate" is out of range',
    ]);
    expect(codeOf('{"name": "cbr0", "ipam": {"x": [-1e999]}}')).toEqual([
      7,
      'a number in "ipam" is out of range',
    ]);
    expect(codeOf('{"name": "cbr0", "runtimeConfig": {"x": 1e309}}')).toEqual([
      7,
      'a number in "runtimeConfig" is out of range',
    ]);
  });

  it('an unpaired surrogate is U+FFFD, in values and keys; "__proto__" is a key like any other', () => {
    const d = delegateFor(
      '{"name": "cbr0", "delegate": {"label": "a\\ud800b\\udc00", "k\\udbff": 1, "ok": "\\ud83d\\ude00", "__proto__": {"isGateway": false}}}',
      V4,
    );
    expect(d.label).toBe('a\ufffdb\ufffd');
    expect(d['k\ufffd']).toBe(1);
    expect(d.ok).toBe('😀');
    expect(Object.keys(d)).toContain('__proto__');
    expect(d.isGateway).toBe(true);
    expect(JSON.stringify(d)).toContain('"__proto__":{"isGateway":false}');
  });
});
