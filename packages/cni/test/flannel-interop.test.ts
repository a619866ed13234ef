import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DEFAULT_SUBNET_FILE, IFNAME_KEY, parseNetConf, runPlugin } from '@weft/cni';
import { type FlannelCniAnswer, flannelCniAdd, haveTools, tempDir } from '@weft/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FLANNEL_TEST_ENVS } from './spec.js';

const { V4, V6, DUAL } = FLANNEL_TEST_ENVS;

/**
 * weft-cni's ADD against flannel's own: a Go fixture (testkit, fixtures/flannel-cni) restates
 * flannel-io/cni-plugin's cmdAdd (loadFlannelNetConf, loadFlannelSubnetEnv, doCmdAdd,
 * getDelegateIPAM, delegateAdd) with the parts of libcni it runs through (skel's checks,
 * types.PluginConf, types.Route, invoke.FindInPath), under Debian's golang-go. Each case is one
 * configuration and subnet.env: flannel's logic builds its delegate configuration (or fails), and
 * weft-cni runs the same ADD (runPlugin, CNI_PATH with stand-in delegates that record their
 * stdin). Where flannel succeeds, the delegate gets the same configuration from both, and both
 * records hold it; where flannel fails, weft fails too. Every case where weft does otherwise says
 * so and why, and the test asserts that exact difference.
 */
type Json = Record<string, unknown>;

/** What an ADD does: succeed, fail with skel's error JSON (999: the plugin's own error), or crash. */
type Outcome = 'ok' | number | 'panic';

interface Case {
  what: string;
  /** subnet.env's text (V4 unless given); null: there is no such file. */
  env?: string | null;
  /**
   * The configuration: an object is laid over BASE (a key set to undefined is left out); a string
   * is stdin as it stands. @SUBNET@, @DATA@ and @DIR@ are replaced by the case's paths.
   */
  conf?: Json | string;
  /** What flannel's logic does (checked against the fixture, so the table stays true). */
  flannel: Outcome;
  /**
   * What weft does where it is not what flannel does. Where flannel answers 999 (libcni's
   * ErrInternal: every failure of the plugin's own), this is weft's own code (the spec's, see the
   * README's table): not a difference in kind, both fail.
   */
  weft?: 'ok' | number;
  /** weft's delegate configuration is the one flannel builds from this input instead. */
  weftAs?: { env?: string; conf?: Json | string };
  /** The delegate refuses cniVersion 1.1.0 (code 1), as Debian 12's plugins do. */
  delegateRefuses110?: boolean;
  /** flannel fails after writing its record (weft writes none for an ADD it refuses). */
  flannelLeavesRecord?: boolean;
  /** Why weft differs: required whenever it does (outcome, delegate, record). */
  why?: string;
  /** What weft's error says. */
  weftMsg?: RegExp;
}

/** V4 with the line of `key` replaced by `line` (or removed when line is ''). */
const v4With = (key: string, line: string, base = V4) =>
  base.replace(new RegExp(`^${key}=.*\\n`, 'm'), line === '' ? '' : `${line}\n`);

/** The configuration every object case starts from (subnetFile and dataDir: the case's). */
const BASE: Json = { cniVersion: '1.0.0', name: 'cbr0', type: 'flannel' };

/** A JSON value of `levels` nested arrays. */
const nested = (levels: number) => `${'['.repeat(levels)}${']'.repeat(levels)}`;

const KUBE_FLANNEL_DELEGATE = { hairpinMode: true, isDefaultGateway: true };
const FLANNEL_TEST_ROUTES = [
  { dst: '10.96.0.0/12' },
  { dst: '192.168.244.0/24', gw: '10.1.17.20' },
];

const TRIMS =
  'weft trims white space around a value (flannel takes it as it stands, so the ADD fails, or, for FLANNEL_IPMASQ, "true " reads as false and the bridge masquerades pod-to-pod traffic as well): the file is the daemon\'s, and a space a person adds must not change what it says';
const NOT_BARE_KEY =
  'flannel indexes past the end of a known key with no "=" and crashes (no error JSON for the runtime); weft says which key has no value';
const MTU_RANGE =
  'weft refuses an MTU no link can have (68..65535; RFC 791, and the largest an IP packet can be): flannel passes it on and the pod fails in the delegate, or, for 0, gets the bridge default 1500 on an overlay that carries less';
const FAMILY =
  'weft refuses a CIDR of the other family under a key that names one (flanneld never writes one): flannel takes any family under any key, giving IPv6 ranges from FLANNEL_SUBNET or IPv4 ones from FLANNEL_IPV6_SUBNET';
const MAPPED =
  'weft refuses IPv4-mapped IPv6 addresses (::ffff:a.b.c.d): Go prints them as IPv4 and keeps only the last 32 bits of the mask, so flannel turns an IPv6 key or route into a different IPv4 one';
const NO_DST =
  'weft refuses a route without a "dst" CIDR (or not an object): flannel writes "<nil>" as its dst, which the IPAM plugin then fails to parse';
const GO_CASE =
  "Go's encoding/json also matches object keys case-insensitively, which nothing in CNI means: weft reads the keys as the spec spells them";
const IPAM_TYPE_CHECKED =
  "weft checks ipam.type before the ADD (a non-empty string naming a plugin in CNI_PATH): flannel passes it on and the delegate fails, after flannel's record is written";
const LONG_LINE =
  "flannel's line reader (bufio.Scanner) fails on a line over 64 KiB; weft reads the file whole";

const CASES: Case[] = [
  // ---- subnet.env as flanneld and weftd write it ----
  { what: "IPv4 (flannel's own test file)", flannel: 'ok' },
  { what: 'IPv6 only', env: V6, flannel: 'ok' },
  { what: 'dual stack: a range and a route per family, IPv4 first', env: DUAL, flannel: 'ok' },
  {
    what: 'two networks, one listed twice: one route each',
    env: v4With('FLANNEL_NETWORK', 'FLANNEL_NETWORK=10.1.0.0/16,192.168.0.0/16,10.1.0.0/16'),
    flannel: 'ok',
  },
  {
    what: 'dual stack, two networks per family',
    env: v4With(
      'FLANNEL_IPV6_NETWORK',
      'FLANNEL_IPV6_NETWORK=fc00::/48,fd00:1::/64,fc00::/48',
      v4With('FLANNEL_NETWORK', 'FLANNEL_NETWORK=10.1.0.0/16,192.168.0.0/16', DUAL),
    ),
    flannel: 'ok',
  },
  {
    what: 'host bits in FLANNEL_NETWORK and FLANNEL_SUBNET: the networks they are in',
    env: 'FLANNEL_NETWORK=10.1.2.3/16\nFLANNEL_SUBNET=10.1.17.99/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=true\n',
    flannel: 'ok',
  },
  {
    what: 'IPv6 in upper case and uncompressed: canonical text (RFC 5952)',
    env: 'FLANNEL_IPV6_NETWORK=FC00:0000:0000:0000:0000:0000:0000:0000/48\nFLANNEL_IPV6_SUBNET=2001:DB8:0:0:1:0:0:1/112\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=true\n',
    flannel: 'ok',
  },
  {
    what: 'FLANNEL_IPMASQ=false: the bridge masquerades',
    env: v4With('FLANNEL_IPMASQ', 'FLANNEL_IPMASQ=false'),
    flannel: 'ok',
  },
  ...['TRUE', 'yes', '1', ''].map(
    (v): Case => ({
      what: `FLANNEL_IPMASQ=${v}: anything but "true" is false`,
      env: v4With('FLANNEL_IPMASQ', `FLANNEL_IPMASQ=${v}`),
      flannel: 'ok',
    }),
  ),
  ...['1450', '9000', '65535', '68', '0001450'].map(
    (v): Case => ({
      what: `FLANNEL_MTU=${v}`,
      env: v4With('FLANNEL_MTU', `FLANNEL_MTU=${v}`),
      flannel: 'ok',
    }),
  ),
  {
    what: 'a key given twice: the later line wins (a network list is replaced, not merged)',
    env: `${V4}FLANNEL_MTU=1400\nFLANNEL_NETWORK=10.2.0.0/16\n`,
    flannel: 'ok',
  },
  {
    what: 'only an IPv6 network and only an IPv4 subnet: each half is there',
    env: 'FLANNEL_IPV6_NETWORK=fc00::/48\nFLANNEL_SUBNET=10.1.17.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=true\n',
    flannel: 'ok',
  },

  // ---- comments, blank lines, unknown keys, odd spacing, line ends ----
  {
    what: 'comments, blank lines, unknown and look-alike keys are skipped',
    env: `# written by weftd\n\nFLANNEL_NETWORKS=10.9.0.0/16\nflannel_mtu=9000\nexport FLANNEL_MTU=9000\n FLANNEL_MTU=9000\nFLANNEL_MTU =9000\n\tFLANNEL_SUBNET=10.9.1.1/24\nFOO\n=\n${V4}WEFT_X=1\n`,
    flannel: 'ok',
  },
  {
    what: 'a known key indented or with a space before "=" is not that key: missing',
    env: ` FLANNEL_MTU=1472\n${v4With('FLANNEL_MTU', 'FLANNEL_MTU =1472')}`,
    flannel: 999,
    weft: 7,
    weftMsg: /is missing FLANNEL_MTU$/,
  },
  { what: 'CRLF line ends', env: V4.replaceAll('\n', '\r\n'), flannel: 'ok' },
  { what: 'no newline after the last line', env: V4.trimEnd(), flannel: 'ok' },
  {
    what: 'CR alone ends no line: one long FLANNEL_NETWORK value',
    env: V4.replaceAll('\n', '\r'),
    flannel: 999,
    weft: 7,
  },
  {
    what: 'a known key with a space after it and no "=" is not that key: skipped',
    env: `FLANNEL_MTU \n${V4}`,
    flannel: 'ok',
  },
  {
    what: 'a value with a space after it (FLANNEL_MTU)',
    env: v4With('FLANNEL_MTU', 'FLANNEL_MTU=1472 '),
    flannel: 999,
    weft: 'ok',
    weftAs: { env: V4 },
    why: TRIMS,
  },
  {
    what: 'a value with two CRs before the newline',
    env: v4With('FLANNEL_MTU', 'FLANNEL_MTU=1472\r\r'),
    flannel: 999,
    weft: 'ok',
    weftAs: { env: V4 },
    why: TRIMS,
  },
  {
    what: 'a network list with a space after the comma',
    env: v4With('FLANNEL_NETWORK', 'FLANNEL_NETWORK=10.1.0.0/16, 192.168.0.0/16'),
    flannel: 999,
    weft: 'ok',
    weftAs: { env: v4With('FLANNEL_NETWORK', 'FLANNEL_NETWORK=10.1.0.0/16,192.168.0.0/16') },
    why: TRIMS,
  },
  {
    what: 'FLANNEL_SUBNET with a tab before it',
    env: v4With('FLANNEL_SUBNET', 'FLANNEL_SUBNET=\t10.1.17.1/24'),
    flannel: 999,
    weft: 'ok',
    weftAs: { env: V4 },
    why: TRIMS,
  },
  {
    what: 'FLANNEL_IPMASQ=true with a space after it',
    env: v4With('FLANNEL_IPMASQ', 'FLANNEL_IPMASQ=true '),
    flannel: 'ok',
    weftAs: { env: V4 },
    why: TRIMS,
  },
  {
    what: 'a comment line over 64 KiB',
    env: `#${'x'.repeat(70_000)}\n${V4}`,
    flannel: 999,
    weft: 'ok',
    weftAs: { env: V4 },
    why: LONG_LINE,
  },

  // ---- malformed subnet.env ----
  {
    what: 'an empty file: every key missing',
    env: '',
    flannel: 999,
    weft: 7,
    weftMsg:
      /is missing FLANNEL_NETWORK, FLANNEL_IPV6_NETWORK, FLANNEL_SUBNET, FLANNEL_IPV6_SUBNET, FLANNEL_MTU, FLANNEL_IPMASQ$/,
  },
  ...['FLANNEL_NETWORK', 'FLANNEL_SUBNET', 'FLANNEL_MTU', 'FLANNEL_IPMASQ'].map(
    (key): Case => ({
      what: `${key} missing`,
      env: v4With(key, ''),
      flannel: 999,
      weft: 7,
      weftMsg: new RegExp(`is missing ${key}`),
    }),
  ),
  ...[
    'FLANNEL_SUBNET=10.1.17.1',
    'FLANNEL_SUBNET=',
    'FLANNEL_SUBNET=010.1.17.1/24',
    'FLANNEL_SUBNET=10.1.17.1/33',
    'FLANNEL_SUBNET=10.1.17.1/24/8',
    'FLANNEL_SUBNET=10.1.17.1/ 24',
    'FLANNEL_IPV6_SUBNET=fe80::1%eth0/64',
    'FLANNEL_NETWORK=10.1.0.0/16,',
    'FLANNEL_NETWORK=10.1.0.0/16,,10.2.0.0/16',
    'FLANNEL_NETWORK=10.1.0.0/16;10.2.0.0/16',
    'FLANNEL_MTU=',
    'FLANNEL_MTU=-1',
    'FLANNEL_MTU=+1472',
    'FLANNEL_MTU=1e3',
    'FLANNEL_MTU=0x5c0',
    'FLANNEL_MTU=1_472',
    'FLANNEL_MTU=1472.0',
    'FLANNEL_MTU="1472"',
    'FLANNEL_MTU=1472 # overlay',
    'FLANNEL_MTU=4294967296',
  ].map(
    (line): Case => ({
      what: `malformed: ${line}`,
      env: `${V4}${line}\n`,
      flannel: 999,
      weft: 7,
    }),
  ),
  {
    what: 'a bad line before a good one: the bad one fails the ADD',
    env: `FLANNEL_SUBNET=10.1.17.1/99\n${V4}`,
    flannel: 999,
    weft: 7,
  },
  ...['FLANNEL_MTU', 'FLANNEL_IPMASQ', 'FLANNEL_NETWORK', 'FLANNEL_SUBNET\r'].map(
    (line): Case => ({
      what: `a known key with no "=": ${JSON.stringify(line)}`,
      env: `${V4}${line}\n`,
      flannel: 'panic',
      weft: 7,
      weftMsg: /has no value/,
      why: NOT_BARE_KEY,
    }),
  ),
  ...['0', '67', '65536', '4294967295'].map(
    (v): Case => ({
      what: `FLANNEL_MTU=${v}`,
      env: v4With('FLANNEL_MTU', `FLANNEL_MTU=${v}`),
      flannel: 'ok',
      weft: 7,
      weftMsg: /FLANNEL_MTU must be a whole number from 68 to 65535/,
      why: MTU_RANGE,
    }),
  ),
  {
    what: 'FLANNEL_SUBNET with a prefix length of four digits (/0024)',
    env: v4With('FLANNEL_SUBNET', 'FLANNEL_SUBNET=10.1.17.1/0024'),
    flannel: 'ok',
    weft: 7,
    why: "weft's CIDR parser (@weft/core) takes at most three digits of prefix length; Go's takes any number of leading zeros. Nothing writes them",
  },
  {
    what: 'an IPv6 subnet under FLANNEL_SUBNET',
    env: 'FLANNEL_NETWORK=fc00::/48\nFLANNEL_SUBNET=fc00::1/64\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=true\n',
    flannel: 'ok',
    weft: 7,
    weftMsg: /FLANNEL_NETWORK must be an IPv4 CIDR/,
    why: FAMILY,
  },
  {
    what: 'an IPv6 network in FLANNEL_NETWORK',
    env: v4With('FLANNEL_NETWORK', 'FLANNEL_NETWORK=10.1.0.0/16,fc00::/48'),
    flannel: 'ok',
    weft: 7,
    why: FAMILY,
  },
  {
    what: 'an IPv4 subnet under FLANNEL_IPV6_SUBNET',
    env: `${V4}FLANNEL_IPV6_SUBNET=10.2.0.1/24\n`,
    flannel: 'ok',
    weft: 7,
    why: FAMILY,
  },
  {
    what: 'an IPv4-mapped subnet under FLANNEL_IPV6_SUBNET',
    env: `${DUAL}FLANNEL_IPV6_SUBNET=::ffff:10.2.0.1/120\n`,
    flannel: 'ok',
    weft: 7,
    weftMsg: /IPv4-mapped/,
    why: MAPPED,
  },
  { what: 'no subnet.env', env: null, flannel: 999, weft: 11 },
  {
    what: 'subnetFile names a directory',
    conf: { subnetFile: '@DIR@' },
    flannel: 999,
    weft: 5,
  },

  // ---- the configuration ----
  {
    what: "kube-flannel's cni-conf.json (0.3.1, hairpin, default gateway)",
    conf: { cniVersion: '0.3.1', delegate: KUBE_FLANNEL_DELEGATE },
    flannel: 'ok',
  },
  ...['0.1.0', '0.2.0', '0.3.0', '0.4.0', '1.1.0'].map(
    (v): Case => ({ what: `cniVersion ${v}`, conf: { cniVersion: v }, flannel: 'ok' }),
  ),
  {
    what: 'cniVersion 1.1.0, the delegate speaks up to 1.0.0',
    conf: { cniVersion: '1.1.0', delegate: KUBE_FLANNEL_DELEGATE },
    delegateRefuses110: true,
    flannel: 'ok',
    why: "weft asks again at 1.0.0 when the delegate refuses 1.1.0 (Debian 12's plugins), after undoing the first ADD, and records what succeeded (README, VERSION); flannel's ADD fails there",
  },
  { what: 'no cniVersion: none for the delegate', conf: { cniVersion: undefined }, flannel: 'ok' },
  { what: 'cniVersion "": none for the delegate', conf: { cniVersion: '' }, flannel: 'ok' },
  { what: 'cniVersion null: none for the delegate', conf: { cniVersion: null }, flannel: 'ok' },
  { what: 'cniVersion 1.2.0', conf: { cniVersion: '1.2.0' }, flannel: 1 },
  { what: 'cniVersion 0.5.0', conf: { cniVersion: '0.5.0' }, flannel: 1 },
  { what: 'cniVersion 1 (a number)', conf: { cniVersion: 1 }, flannel: 6 },
  { what: 'no name', conf: { name: undefined }, flannel: 7 },
  { what: 'name ""', conf: { name: '' }, flannel: 7 },
  { what: 'name null', conf: { name: null }, flannel: 7 },
  { what: 'name with a space', conf: { name: 'cb r0' }, flannel: 7 },
  { what: 'name ../x', conf: { name: '../x' }, flannel: 7 },
  { what: 'name 5 (a number)', conf: { name: 5 }, flannel: 6 },
  { what: 'stdin is not JSON', conf: '{"name": "cbr0",', flannel: 6 },
  { what: 'stdin is a JSON array', conf: '[]', flannel: 6 },
  { what: 'stdin is a JSON string', conf: '"cbr0"', flannel: 6 },
  { what: 'stdin is JSON null: no name', conf: 'null', flannel: 7 },
  {
    what: 'a key given twice: the later one wins',
    conf: '{"name": "x", "name": "cbr0", "subnetFile": "@SUBNET@", "dataDir": "@DATA@", "delegate": {"mtu": 1, "mtu": 2}}',
    flannel: 'ok',
  },
  {
    what: 'delegate options kept as given, nested values too',
    conf: {
      delegate: {
        ...KUBE_FLANNEL_DELEGATE,
        bridge: 'mynet0',
        promiscMode: true,
        vlan: 100,
        nested: { list: [1, 'x', null, true, { deep: 1.5 }] },
        label: 'é中😀',
      },
    },
    flannel: 'ok',
  },
  {
    what: 'delegate options the plugin would set: not overwritten',
    conf: { delegate: { mtu: 1400, ipMasq: true, isGateway: false } },
    flannel: 'ok',
  },
  {
    what: 'delegate options the plugin would set, given as null: kept null',
    conf: { delegate: { mtu: null, ipMasq: null, isGateway: null } },
    flannel: 'ok',
  },
  {
    what: 'delegate cniVersion kept without a top-level one',
    conf: { cniVersion: undefined, delegate: { cniVersion: '0.3.1' } },
    flannel: 'ok',
  },
  {
    what: 'delegate cniVersion replaced by the top-level one',
    conf: { cniVersion: '1.0.0', delegate: { cniVersion: '0.3.1' } },
    flannel: 'ok',
  },
  {
    what: 'delegate ipvlan: no isGateway',
    conf: { delegate: { type: 'ipvlan', master: 'eth0' } },
    flannel: 'ok',
  },
  {
    what: 'delegate ipvlan with isGateway: kept',
    conf: { delegate: { type: 'ipvlan', isGateway: true } },
    flannel: 'ok',
  },
  { what: 'delegate null: as none', conf: { delegate: null }, flannel: 'ok' },
  { what: 'delegate {}', conf: { delegate: {} }, flannel: 'ok' },
  {
    what: 'delegate with a "__proto__" key: a key like any other',
    conf: '{"name": "cbr0", "subnetFile": "@SUBNET@", "dataDir": "@DATA@", "delegate": {"__proto__": {"isGateway": false}}, "ipam": {"__proto__": {"type": "my-ipam"}}}',
    flannel: 'ok',
  },
  {
    what: 'delegate with name',
    conf: { delegate: { name: 'x' } },
    flannel: 999,
    weft: 7,
    weftMsg: /must not have 'name'/,
  },
  { what: 'delegate with name null', conf: { delegate: { name: null } }, flannel: 999, weft: 7 },
  {
    what: 'delegate with ipam',
    conf: { delegate: { ipam: { type: 'host-local' } } },
    flannel: 999,
    weft: 7,
    weftMsg: /must not have 'ipam'/,
  },
  { what: 'delegate type 5', conf: { delegate: { type: 5 } }, flannel: 999, weft: 7 },
  { what: 'delegate type null', conf: { delegate: { type: null } }, flannel: 999, weft: 7 },
  {
    what: 'delegate type ""',
    conf: { delegate: { type: '' } },
    flannel: 999,
    weft: 7,
    flannelLeavesRecord: true,
    why: 'flannel fails after writing its record (FindInPath: no plugin name provided); weft checks first and writes none',
  },
  {
    what: 'delegate type ../bridge',
    conf: { delegate: { type: '../bridge' } },
    flannel: 999,
    weft: 7,
    flannelLeavesRecord: true,
    why: 'flannel fails after writing its record (FindInPath: invalid plugin name); weft checks first and writes none',
  },
  {
    what: 'delegate type not installed',
    conf: { delegate: { type: 'macvlan' } },
    flannel: 999,
    weft: 7,
    weftMsg: /failed to find plugin "macvlan"/,
    flannelLeavesRecord: true,
    why: 'flannel fails after writing its record (FindInPath: failed to find plugin); weft looks first and writes none',
  },
  { what: 'delegate a list', conf: { delegate: [] }, flannel: 999, weft: 7 },
  { what: 'delegate a string', conf: { delegate: 'bridge' }, flannel: 999, weft: 7 },
  {
    what: 'runtimeConfig goes to the delegate, over its own',
    conf: {
      runtimeConfig: { portMappings: [{ hostPort: 8080, containerPort: 80, protocol: 'tcp' }] },
      delegate: { runtimeConfig: { bandwidth: {} } },
    },
    flannel: 'ok',
  },
  { what: 'runtimeConfig {}', conf: { runtimeConfig: {} }, flannel: 'ok' },
  { what: 'runtimeConfig null: none', conf: { runtimeConfig: null }, flannel: 'ok' },
  { what: 'runtimeConfig a list', conf: { runtimeConfig: [] }, flannel: 999, weft: 7 },
  { what: 'prevResult a string', conf: { prevResult: 'x' }, flannel: 999, weft: 7 },
  {
    what: "libcni's own keys, well typed: not the delegate's",
    conf: {
      capabilities: { portMappings: true, bandwidth: null },
      dns: { nameservers: ['10.96.0.10'], domain: 'cluster.local', search: null, options: [null] },
      'cni.dev/valid-attachments': [{ containerID: 'c1', ifname: 'eth0' }, null],
      args: { cni: { x: 1 } },
    },
    flannel: 'ok',
  },
  ...(
    [
      ['type', 5],
      ['capabilities', 'portMappings'],
      ['capabilities', { portMappings: 'yes' }],
      ['dns', '10.96.0.10'],
      ['dns', { nameservers: '10.96.0.10' }],
      ['dns', { domain: 5 }],
      ['cni.dev/valid-attachments', 5],
      ['cni.dev/valid-attachments', [{ containerID: 5 }]],
    ] as const
  ).map(
    ([key, value]): Case => ({
      what: `libcni's ${key}: ${JSON.stringify(value)}`,
      conf: { [key]: value },
      flannel: 999,
      weft: 7,
    }),
  ),
  {
    what: 'subnetFile null: the default',
    conf: { subnetFile: null },
    env: null,
    flannel: existsSync(DEFAULT_SUBNET_FILE) ? 'ok' : 999,
    weft: existsSync(DEFAULT_SUBNET_FILE) ? 'ok' : 11,
    weftMsg: /\/run\/flannel\/subnet\.env does not exist/,
  },
  { what: 'subnetFile ""', conf: { subnetFile: '' }, flannel: 999, weft: 7 },
  { what: 'subnetFile 5', conf: { subnetFile: 5 }, flannel: 999, weft: 7 },
  {
    what: 'a number too large for a double in the delegate options',
    conf: '{"name": "cbr0", "subnetFile": "@SUBNET@", "dataDir": "@DATA@", "delegate": {"x": 1e400}}',
    flannel: 999,
    weft: 7,
  },
  {
    what: 'a number too large for a double in ipam',
    conf: '{"name": "cbr0", "subnetFile": "@SUBNET@", "dataDir": "@DATA@", "ipam": {"x": [-1e999]}}',
    flannel: 999,
    weft: 7,
  },
  {
    what: "numbers beyond a double's precision: the same double",
    conf: '{"name": "cbr0", "subnetFile": "@SUBNET@", "dataDir": "@DATA@", "delegate": {"big": 12345678901234567890, "tiny": 5e-324, "e": 1E+3}}',
    flannel: 'ok',
  },
  {
    what: 'a delegate option nested to level 1000 (the top level is 1)',
    conf: `{"name": "cbr0", "subnetFile": "@SUBNET@", "dataDir": "@DATA@", "delegate": {"x": ${nested(998)}}}`,
    flannel: 'ok',
  },
  {
    what: 'a delegate option nested to level 1001',
    conf: `{"name": "cbr0", "subnetFile": "@SUBNET@", "dataDir": "@DATA@", "delegate": {"x": ${nested(999)}}}`,
    flannel: 'ok',
    weft: 6,
    weftMsg: /^error unmarshall network config: nested deeper than 1000 levels$/,
    why: "weft refuses a configuration nested deeper than 1000 levels: Node's JSON.stringify, which writes the delegate's configuration, runs out of stack near 4000; Go's decoder goes to 10000",
  },
  {
    what: "an unknown key nested to level 10001: past Go's limit too",
    conf: `{"name": "cbr0", "subnetFile": "@SUBNET@", "dataDir": "@DATA@", "unknown": ${nested(10_000)}}`,
    flannel: 6,
  },
  {
    what: 'a number too small for a double: 0',
    conf: '{"name": "cbr0", "subnetFile": "@SUBNET@", "dataDir": "@DATA@", "delegate": {"x": 1e-400}}',
    flannel: 'ok',
  },
  {
    what: 'a lone UTF-16 surrogate in a delegate option or key: U+FFFD',
    conf: '{"name": "cbr0", "subnetFile": "@SUBNET@", "dataDir": "@DATA@", "delegate": {"label": "a\\ud800b\\udc00", "k\\udbff": 1}, "ipam": {"x": ["\\udfff"]}}',
    flannel: 'ok',
  },
  {
    what: 'Delegate spelt with a capital D',
    conf: { Delegate: { hairpinMode: true } },
    flannel: 'ok',
    weftAs: { conf: {} },
    why: GO_CASE,
  },
  {
    what: 'NAME in capitals, no name',
    conf: { name: undefined, NAME: 'cbr0' },
    flannel: 'ok',
    weft: 7,
    why: GO_CASE,
  },

  // ---- the ipam section ----
  { what: 'ipam {}: host-local', conf: { ipam: {} }, flannel: 'ok' },
  { what: 'ipam null: as none', conf: { ipam: null }, flannel: 'ok' },
  {
    what: "ipam of flannel's own test: its type, unknown keys and routes kept, its routes first",
    conf: {
      ipam: { type: 'my-ipam', 'unknown-param': 'unknown-value', routes: FLANNEL_TEST_ROUTES },
    },
    env: DUAL,
    flannel: 'ok',
  },
  {
    what: 'ipam without a type: host-local, the rest kept',
    conf: {
      ipam: { 'unknown-param': 'unknown-value', dataDir: '/run/ipam', routes: FLANNEL_TEST_ROUTES },
    },
    flannel: 'ok',
  },
  {
    what: 'ipam ranges and subnet given: ranges replaced, subnet kept',
    conf: { ipam: { ranges: [[{ subnet: '192.168.0.0/24' }]], subnet: '192.168.0.0/24' } },
    flannel: 'ok',
  },
  { what: 'ipam a list', conf: { ipam: [] }, flannel: 999, weft: 7 },
  {
    what: 'ipam type 5',
    conf: { ipam: { type: 5 } },
    flannel: 'ok',
    weft: 7,
    why: IPAM_TYPE_CHECKED,
  },
  {
    what: 'ipam type ""',
    conf: { ipam: { type: '' } },
    flannel: 'ok',
    weft: 7,
    why: IPAM_TYPE_CHECKED,
  },
  {
    what: 'ipam type null',
    conf: { ipam: { type: null } },
    flannel: 'ok',
    weft: 7,
    why: IPAM_TYPE_CHECKED,
  },
  {
    what: 'ipam type not installed',
    conf: { ipam: { type: 'dhcp' } },
    flannel: 'ok',
    weft: 7,
    weftMsg: /failed to find plugin "dhcp"/,
    why: IPAM_TYPE_CHECKED,
  },
  { what: 'ipam routes null: the networks only', conf: { ipam: { routes: null } }, flannel: 'ok' },
  { what: 'ipam routes []', conf: { ipam: { routes: [] } }, flannel: 'ok' },
  {
    what: 'routes as types.Route writes them: canonical text, host bits kept, unknown keys dropped',
    conf: {
      ipam: {
        routes: [
          { dst: '10.96.0.1/12', gw: '10.1.17.20', note: 'kube services', metric: 5 },
          { dst: 'FC00:0:0:0:0:0:0:1/64', gw: 'FE80:0:0:0:0:0:0:1' },
          { dst: '0.0.0.0/0' },
        ],
      },
    },
    env: DUAL,
    flannel: 'ok',
  },
  {
    what: 'route options of libcni 1.3: mtu, advmss, priority kept unless 0; table, scope kept, 0 too',
    conf: {
      ipam: {
        routes: [
          { dst: '10.96.0.0/12', mtu: 1400, advmss: 1360, priority: 10, table: 100, scope: 253 },
          { dst: '10.97.0.0/16', mtu: 0, advmss: 0, priority: 0, table: 0, scope: 0 },
          { dst: '10.98.0.0/16', mtu: null, table: null, gw: null },
          { dst: '10.99.0.0/16', gw: '', mtu: -1 },
        ],
      },
    },
    flannel: 'ok',
  },
  ...(
    [
      ['routes {}', {}],
      ['routes a string', '10.96.0.0/12'],
      ['a route a string', ['10.96.0.0/12']],
      ['a route with dst 5', [{ dst: 5 }]],
      ['a route with dst null', [{ dst: null }]],
      ['a route with dst not a CIDR', [{ dst: '10.96.0.0' }]],
      ['a route with a zone in dst', [{ dst: 'fe80::1%eth0/64' }]],
      ['a route with gw not an IP', [{ dst: '10.96.0.0/12', gw: '10.1.17' }]],
      ['a route with gw 5', [{ dst: '10.96.0.0/12', gw: 5 }]],
      ['a route with a zone in gw', [{ dst: 'fc00::/64', gw: 'fe80::1%eth0' }]],
      ['a route with mtu "1400"', [{ dst: '10.96.0.0/12', mtu: '1400' }]],
      ['a route with mtu 1.5', [{ dst: '10.96.0.0/12', mtu: 1.5 }]],
      ['a route with table true', [{ dst: '10.96.0.0/12', table: true }]],
    ] as const
  ).map(
    ([what, routes]): Case => ({
      what: `ipam: ${what}`,
      conf: { ipam: { routes } },
      flannel: 999,
      weft: 7,
      weftMsg: /failed to parse ipam\.routes/,
    }),
  ),
  {
    what: 'ipam: a route without dst',
    conf: { ipam: { routes: [{ gw: '10.1.17.20' }] } },
    flannel: 'ok',
    weft: 7,
    why: NO_DST,
  },
  {
    what: 'ipam: a route null',
    conf: { ipam: { routes: [null] } },
    flannel: 'ok',
    weft: 7,
    why: NO_DST,
  },
  {
    what: 'ipam: a route with Dst spelt with a capital D',
    conf: { ipam: { routes: [{ Dst: '10.96.0.0/12' }] } },
    flannel: 'ok',
    weft: 7,
    why: GO_CASE,
  },
  {
    what: 'ipam: a route to an IPv4-mapped dst',
    conf: { ipam: { routes: [{ dst: '::ffff:10.96.0.0/108' }] } },
    flannel: 'ok',
    weft: 7,
    why: MAPPED,
  },
  {
    what: 'ipam: a route via an IPv4-mapped gw',
    conf: { ipam: { routes: [{ dst: '10.96.0.0/12', gw: '::ffff:10.1.17.20' }] } },
    flannel: 'ok',
    weft: 7,
    why: MAPPED,
  },
  {
    what: 'ipam: route numbers spelt as floats (1e2, 100.0): flannel re-encodes the map first, so 100',
    conf: '{"name": "cbr0", "subnetFile": "@SUBNET@", "dataDir": "@DATA@", "ipam": {"routes": [{"dst": "10.96.0.0/12", "mtu": 1e2, "table": 100.0}]}}',
    flannel: 'ok',
  },
  {
    what: 'ipam: a route with mtu 2^63 (beyond an int64)',
    conf: { ipam: { routes: [{ dst: '10.96.0.0/12', mtu: 2 ** 63 }] } },
    flannel: 999,
    weft: 7,
  },
  {
    what: 'ipam: a route with priority -2^63: Go writes the double as -9223372036854776000, no int64',
    conf: { ipam: { routes: [{ dst: '10.96.0.0/12', priority: -(2 ** 63) }] } },
    flannel: 999,
    weft: 7,
  },
  {
    what: 'ipam: a route with priority -(2^63 - 1024), the double next to it: an int64',
    conf: { ipam: { routes: [{ dst: '10.96.0.0/12', priority: -(2 ** 63 - 1024) }] } },
    flannel: 'ok',
  },
];

/** A stand-in delegate: appends "<its path> <command> <stdin>" to $WEFT_TEST_CALLS, answers {}. */
const FAKE = `#!/bin/sh
in=$(cat)
printf '%s %s %s\\n' "$0" "$CNI_COMMAND" "$in" >> "$WEFT_TEST_CALLS"
if [ "$CNI_COMMAND" = ADD ] && [ -n "$WEFT_TEST_REFUSE_110" ]; then
  case "$in" in *'"cniVersion":"1.1.0"'*)
    echo '{"code":1,"msg":"incompatible CNI versions","details":"config is \\"1.1.0\\", plugin supports [\\"0.1.0\\" \\"0.2.0\\" \\"0.3.0\\" \\"0.3.1\\" \\"0.4.0\\" \\"1.0.0\\"]"}'
    exit 1;;
  esac
fi
if [ "$CNI_COMMAND" = ADD ]; then echo '{}'; fi
exit 0
`;

const hasGo = haveTools("flannel's CNI plugin logic in Go", 'go');

describe.skipIf(!hasGo)("weft-cni's ADD against flannel's own (Go)", () => {
  let dir: { path: string; remove: () => void };
  let bin: string;
  let flannel: FlannelCniAnswer[];
  let twins: Map<number, FlannelCniAnswer>;

  const paths = (i: number, twin = false) => ({
    subnet: join(dir.path, `subnet-${i}${twin ? '-twin' : ''}.env`),
    data: join(dir.path, `data-${i}`),
    calls: join(dir.path, `calls-${i}`),
  });

  /** The stdin of a case (or of its twin), with its subnet.env written. */
  function stdinOf(i: number, input: { env?: string | null; conf?: Json | string }, twin = false) {
    const p = paths(i, twin);
    const env = input.env === undefined ? V4 : input.env;
    if (env !== null) writeFileSync(p.subnet, env);
    const conf = input.conf ?? {};
    if (typeof conf === 'string') {
      return conf.replaceAll('@SUBNET@', p.subnet).replaceAll('@DATA@', p.data);
    }
    const fill = (v: unknown) =>
      typeof v === 'string' ? v.replaceAll('@DATA@', p.data).replaceAll('@DIR@', dir.path) : v;
    const merged: Json = { ...BASE, subnetFile: p.subnet, dataDir: p.data };
    for (const [k, v] of Object.entries(conf)) {
      if (v === undefined) delete merged[k];
      else merged[k] = fill(v);
    }
    return JSON.stringify(merged);
  }

  beforeAll(async () => {
    dir = tempDir('weft-cni-flannel-');
    bin = join(dir.path, 'bin');
    mkdirSync(bin);
    for (const name of ['bridge', 'host-local', 'ipvlan', 'my-ipam']) {
      writeFileSync(join(bin, name), FAKE);
      chmodSync(join(bin, name), 0o755);
    }
    const requests = CASES.map((c, i) => ({
      stdin: stdinOf(i, c),
      cniPath: bin,
      containerId: 'flannel',
    }));
    const twinIndex = CASES.flatMap((c, i) => (c.weftAs ? [i] : []));
    const twinRequests = twinIndex.map((i) => ({
      stdin: stdinOf(i, CASES[i].weftAs as Json, true),
      cniPath: bin,
      containerId: 'flannel-twin',
    }));
    const answers = await flannelCniAdd([...requests, ...twinRequests]);
    flannel = answers.slice(0, CASES.length);
    twins = new Map(twinIndex.map((i, k) => [i, answers[CASES.length + k]]));
  }, 180_000);

  afterAll(() => dir?.remove());

  function runWeft(i: number, c: Case) {
    const p = paths(i);
    const env = {
      PATH: process.env.PATH,
      CNI_COMMAND: 'ADD',
      CNI_CONTAINERID: 'weft',
      CNI_NETNS: '/run/netns/pod',
      CNI_IFNAME: 'eth0',
      CNI_PATH: bin,
      WEFT_TEST_CALLS: p.calls,
      WEFT_TEST_REFUSE_110: c.delegateRefuses110 ? '1' : undefined,
    };
    const r = runPlugin({ env, stdin: stdinOf(i, c) });
    let calls: { plugin: string; command: string; stdin: Json }[] = [];
    if (existsSync(p.calls)) {
      calls = readFileSync(p.calls, 'utf8')
        .split('\n')
        .filter(Boolean)
        .map((line) => {
          const [plugin, command] = line.split(' ', 2);
          return {
            plugin,
            command,
            stdin: JSON.parse(line.slice(plugin.length + command.length + 2)),
          };
        });
    }
    const recordPath = join(p.data, 'weft');
    const record = existsSync(recordPath)
      ? JSON.parse(readFileSync(recordPath, 'utf8'))
      : undefined;
    return { ...r, json: r.stdout ? JSON.parse(r.stdout) : undefined, calls, record };
  }

  const outcomeOf = (a: FlannelCniAnswer): Outcome =>
    a.ok ? 'ok' : a.panic !== undefined ? 'panic' : (a.code as number);

  it.each(CASES.map((c, i) => [c.what, i] as const))('%s', (_what, i) => {
    const c = CASES[i];
    const f = flannel[i];
    // The table says what flannel does; the fixture must agree, or the table is wrong.
    expect(outcomeOf(f), `flannel: ${JSON.stringify(f)}`).toBe(c.flannel);
    const w = runWeft(i, c);
    const expected: 'ok' | number | undefined =
      c.weft ?? (c.flannel === 'panic' || c.flannel === 999 ? undefined : c.flannel);
    expect(
      expected,
      "the table must give weft's outcome where flannel crashes or answers 999",
    ).not.toBe(undefined);
    // A difference of kind (not just weft's own code for flannel's 999) must say why.
    const differs =
      c.weftAs !== undefined ||
      c.delegateRefuses110 === true ||
      c.flannelLeavesRecord === true ||
      c.flannel === 'panic' ||
      (c.flannel === 'ok') !== (expected === 'ok') ||
      (typeof c.flannel === 'number' && c.flannel !== 999 && c.flannel !== expected);
    if (differs) expect(c.why, 'a difference from flannel needs its reason').toBeTruthy();
    if (!f.ok) {
      expect(Boolean(f.record), 'flannel left its record').toBe(c.flannelLeavesRecord === true);
      if (f.record) expect(existsSync(f.record)).toBe(true);
    }

    if (expected !== 'ok') {
      expect(w.exitCode, w.stdout).toBe(1);
      expect(w.json.code, w.stdout).toBe(expected);
      if (c.weftMsg) expect(w.json.msg).toMatch(c.weftMsg);
      // skel's own errors: weft says what libcni says.
      if (!f.ok && f.code !== undefined && f.code !== 999 && f.code === expected) {
        const head = (f.msg as string).split(':')[0];
        expect(w.json.msg.slice(0, head.length)).toBe(head);
      }
      // weft checks everything before it writes its record or runs the delegate.
      expect(w.calls).toEqual([]);
      expect(w.record).toBeUndefined();
      return;
    }

    expect(w.exitCode, w.stdout).toBe(0);
    const reference = c.weftAs ? twins.get(i) : f;
    if (!reference?.ok)
      throw new Error(
        `flannel fails the input weft is compared with: ${JSON.stringify(reference)}`,
      );
    const delegate = reference.delegate;
    if (f.ok) {
      // flannel's record holds what its delegate is given.
      expect(JSON.parse(readFileSync(f.record, 'utf8'))).toEqual(f.delegate);
      const conf = parseNetConf(stdinOf(i, c));
      expect([conf.subnetFile, conf.dataDir]).toEqual([f.subnetFile, f.dataDir]);
    }
    if (c.delegateRefuses110) {
      // The first ADD is flannel's; refused, it is undone and asked at 1.0.0, which is recorded.
      const at100 = { ...delegate, cniVersion: '1.0.0' };
      expect(w.calls.map((k) => [k.command, k.stdin])).toEqual([
        ['ADD', delegate],
        ['DEL', delegate],
        ['ADD', at100],
      ]);
      expect(w.record).toEqual({ ...at100, [IFNAME_KEY]: 'eth0' });
      expect(w.json.cniVersion).toBe('1.1.0');
      return;
    }
    expect(w.calls.map((k) => k.command)).toEqual(['ADD']);
    expect(w.calls[0].stdin).toEqual(delegate);
    expect(w.calls[0].plugin).toBe(reference.plugin);
    // The record is flannel's (its DEL reads it) plus the interface name GC needs.
    expect(w.record).toEqual({ ...delegate, [IFNAME_KEY]: 'eth0' });
  });
});
