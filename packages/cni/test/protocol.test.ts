import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PLUGIN_MAIN, runPlugin, STALE_ATTACHMENT, SUPPORTED_VERSIONS } from '@weft/cni';
import { tempDir } from '@weft/testkit';
import fc from 'fast-check';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  addResultProblems,
  answer,
  delegateCalls,
  errorResultProblems,
  fakeDelegate,
  SUBNET_ENV,
  versionResultProblems,
} from './spec.js';

/**
 * The plugin against stand-in delegates (shell scripts that record each call): every command and
 * error path, every answer checked against the spec's result schema. The reference plugins
 * themselves are met in bridge.test.ts.
 */
let dir: { path: string; remove: () => void };
let bin: string;
let subnetFile: string;
let dataDir: string;

beforeEach(() => {
  dir = tempDir('weft-cni-proto-');
  bin = join(dir.path, 'bin');
  subnetFile = join(dir.path, 'subnet.env');
  dataDir = join(dir.path, 'data');
  fakeDelegate(bin, 'bridge');
  fakeDelegate(bin, 'host-local');
  writeFileSync(subnetFile, SUBNET_ENV);
});
afterEach(() => dir.remove());

const conf = (extra: Record<string, unknown> = {}) =>
  JSON.stringify({
    cniVersion: '1.0.0',
    name: 'cbr0',
    type: 'flannel',
    subnetFile,
    dataDir,
    delegate: { hairpinMode: true, isDefaultGateway: true },
    ...extra,
  });

const envFor = (command: string, extra: Record<string, string | undefined> = {}) => ({
  CNI_COMMAND: command,
  CNI_CONTAINERID: 'c1',
  CNI_NETNS: '/run/netns/pod1',
  CNI_IFNAME: 'eth0',
  CNI_PATH: `/nonexistent:${bin}`,
  CNI_ARGS: 'K8S_POD_NAME=p1;IgnoreUnknown=1',
  ...extra,
});

/** Runs the plugin and parses its stdout; failures must be the spec's error JSON. */
function run(command: string, stdin: string, extra: Record<string, string | undefined> = {}) {
  const r = runPlugin({ env: envFor(command, extra), stdin });
  const json = r.stdout.trim() === '' ? undefined : JSON.parse(r.stdout);
  if (r.exitCode !== 0) expect(errorResultProblems(json)).toEqual([]);
  return { ...r, json };
}

function expectError(r: ReturnType<typeof run>, code: number, msg: RegExp) {
  expect(r.exitCode).toBe(1);
  expect(r.json.code).toBe(code);
  expect(r.json.msg).toMatch(msg);
}

const record = (id = 'c1') => JSON.parse(readFileSync(join(dataDir, id), 'utf8'));

describe('the environment (SPEC.md section 2, "Parameters")', () => {
  it('with no CNI_COMMAND it says what it is on stderr and exits 0, as libcni plugins do', () => {
    const r = runPlugin({ env: {}, stdin: () => 'not read' });
    expect(r).toMatchObject({ exitCode: 0, stdout: '' });
    expect(r.stderr).toMatch(/flannel's CNI plugin for weft.*\n.*1\.1\.0/);
  });

  it('stdin that cannot be read is code 5', () => {
    const r = runPlugin({
      env: envFor('ADD'),
      stdin: () => {
        throw new Error('EIO: i/o error, read');
      },
    });
    expect(r.exitCode).toBe(1);
    expect(JSON.parse(r.stdout)).toMatchObject({
      code: 5,
      msg: 'error reading from stdin: EIO: i/o error, read',
    });
  });

  it('an unknown command is code 4, naming it', () => {
    expectError(run('FROB', conf()), 4, /^unknown CNI_COMMAND: FROB$/);
  });

  it.each([
    ['ADD', 'CNI_CONTAINERID,CNI_NETNS,CNI_IFNAME,CNI_PATH'],
    ['CHECK', 'CNI_CONTAINERID,CNI_NETNS,CNI_IFNAME,CNI_PATH'],
    ['DEL', 'CNI_CONTAINERID,CNI_IFNAME,CNI_PATH'],
    ['GC', 'CNI_PATH'],
    ['STATUS', 'CNI_PATH'],
  ])('%s without its required variables is code 4, naming every one', (command, names) => {
    const r = run(command, conf({ cniVersion: '1.1.0' }), {
      CNI_CONTAINERID: undefined,
      CNI_NETNS: undefined,
      CNI_IFNAME: undefined,
      CNI_PATH: '',
    });
    expectError(r, 4, new RegExp(`^required env variables \\[${names}\\] missing$`));
  });

  it('DEL needs no CNI_NETNS (the namespace may be gone)', () => {
    expect(run('DEL', conf(), { CNI_NETNS: undefined }).exitCode).toBe(0);
  });

  it.each(['../x', '.hidden', 'a/b', 'a b', '-x'])(
    'a container ID that is not a plain name (%j) is code 4: it names a file under dataDir',
    (id) => {
      expectError(
        run('ADD', conf(), { CNI_CONTAINERID: id }),
        4,
        /invalid characters in containerID/,
      );
      expect(existsSync(dataDir)).toBe(false);
    },
  );

  it.each([
    ['eth0123456789abc', /too long/],
    ['.', /is \. or \.\./],
    ['eth/0', /contains \/ or :/],
    ['eth 0', /whitespace/],
  ])('an interface name the kernel refuses (%j) is code 4', (ifName, msg) => {
    expectError(run('ADD', conf(), { CNI_IFNAME: ifName }), 4, msg);
  });
});

describe('VERSION', () => {
  it('lists every version and echoes the one asked in, without needing a configuration', () => {
    for (const v of ['0.3.1', '1.0.0', '1.1.0']) {
      const r = run('VERSION', JSON.stringify({ cniVersion: v }));
      expect(r.exitCode).toBe(0);
      expect(versionResultProblems(r.json)).toEqual([]);
      expect(r.json).toEqual({ cniVersion: v, supportedVersions: SUPPORTED_VERSIONS });
    }
    expect(run('VERSION', '').json.cniVersion).toBe('1.1.0');
    expect(SUPPORTED_VERSIONS).toEqual([
      '0.1.0',
      '0.2.0',
      '0.3.0',
      '0.3.1',
      '0.4.0',
      '1.0.0',
      '1.1.0',
    ]);
  });
});

describe('the configuration', () => {
  it('not JSON is code 6; not an object is code 6', () => {
    expectError(run('ADD', '{"name": '), 6, /^error unmarshall network config/);
    expectError(run('ADD', '[1]'), 6, /not an object/);
  });

  it('a missing or bad network name is code 7', () => {
    expectError(run('ADD', conf({ name: undefined })), 7, /^missing network name$/);
    expectError(run('ADD', conf({ name: 'a/b' })), 7, /invalid characters found in network name/);
  });

  it('an unsupported cniVersion is code 1 and lists what is supported', () => {
    const r = run('ADD', conf({ cniVersion: '2.0.0' }));
    expectError(r, 1, /^incompatible CNI versions$/);
    expect(r.json.details).toBe(
      'config is "2.0.0", plugin supports ["0.1.0" "0.2.0" "0.3.0" "0.3.1" "0.4.0" "1.0.0" "1.1.0"]',
    );
  });

  it('CHECK before 0.4.0, and STATUS and GC before 1.1.0, are code 1', () => {
    expectError(run('CHECK', conf({ cniVersion: '0.3.1' })), 1, /does not allow CHECK/);
    expectError(run('STATUS', conf()), 1, /does not allow STATUS/);
    expectError(run('GC', conf()), 1, /does not allow GC/);
  });

  it.each([
    [{ delegate: 'bridge' }, /"delegate" must be an object/],
    [{ delegate: { type: 7 } }, /must have \(string\) 'type' field/],
    [{ delegate: { type: '../bin/sh' } }, /must name a plugin/],
    [{ delegate: { name: 'x' } }, /must not have 'name' field/],
    [{ delegate: { ipam: {} } }, /must not have 'ipam' field/],
    [{ ipam: [] }, /"ipam" must be an object/],
    [{ ipam: { routes: [{ dst: '10.0.0.0/33' }] } }, /failed to parse ipam\.routes/],
    [{ ipam: { routes: [{ dst: '10.0.0.0/8', gw: 'x' }] } }, /failed to parse ipam\.routes/],
    [{ subnetFile: '' }, /"subnetFile" must be a non-empty string/],
    [{ dataDir: 3 }, /"dataDir" must be a non-empty string/],
  ])('a bad flannel configuration (%j) is code 7 and runs nothing', (extra, msg) => {
    expectError(run('ADD', conf(extra)), 7, msg);
    expect(delegateCalls(bin)).toEqual([]);
  });
});

describe('ADD', () => {
  it("hands the delegate flannel's configuration with the caller's environment, records it, and prints its result", () => {
    const r = run('ADD', conf({ runtimeConfig: { portMappings: [] } }));
    expect(r.exitCode).toBe(0);
    expect(addResultProblems(r.json, '1.0.0')).toEqual([]);
    expect(r.json.ips).toEqual([{ address: '10.244.3.2/24', gateway: '10.244.3.1', interface: 1 }]);
    const [call] = delegateCalls(bin);
    expect(call).toMatchObject({
      plugin: 'bridge',
      command: 'ADD',
      containerId: 'c1',
      ifName: 'eth0',
      netns: '/run/netns/pod1',
      args: 'K8S_POD_NAME=p1;IgnoreUnknown=1',
    });
    const expected = {
      cniVersion: '1.0.0',
      name: 'cbr0',
      type: 'bridge',
      hairpinMode: true,
      isDefaultGateway: true,
      isGateway: true,
      ipMasq: false,
      mtu: 1450,
      runtimeConfig: { portMappings: [] },
      ipam: {
        type: 'host-local',
        ranges: [[{ subnet: '10.244.3.0/24' }]],
        routes: [{ dst: '10.244.0.0/16' }],
      },
    };
    expect(call.stdin).toEqual(expected);
    // flannel's file, plus the interface name (which GC needs) under weft's own key.
    expect(record()).toEqual({ ...expected, 'weft.dev/ifName': 'eth0' });
    expect(readdirSync(dataDir)).toEqual(['c1']);
  });

  it('subnet.env missing is code 11 (try again later), and nothing is run or recorded', () => {
    rmSync(subnetFile);
    const r = run('ADD', conf());
    expectError(r, 11, /^failed to load flannel 'subnet.env' file: .*subnet\.env does not exist$/);
    expect(r.json.details).toMatch(/weftd or flanneld/);
    expect(delegateCalls(bin)).toEqual([]);
    expect(existsSync(dataDir)).toBe(false);
  });

  it('a malformed subnet.env is code 7 naming the file and the key', () => {
    writeFileSync(subnetFile, 'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\n');
    expectError(run('ADD', conf()), 7, /subnet\.env is missing FLANNEL_MTU, FLANNEL_IPMASQ$/);
    writeFileSync(subnetFile, SUBNET_ENV.replace('1450', '1450x'));
    expectError(run('ADD', conf()), 7, /FLANNEL_MTU must be a whole number/);
  });

  it('"failed to find plugin": names the plugin and every directory looked in', () => {
    rmSync(join(bin, 'bridge'));
    const r = run('ADD', conf());
    expectError(r, 7, /^failed to find plugin "bridge" in path \[\/nonexistent .*\/bin\]$/);
    expect(r.json.details).toMatch(/containernetworking-plugins.*\/usr\/lib\/cni/);
    fakeDelegate(bin, 'bridge');
    rmSync(join(bin, 'host-local'));
    expectError(run('ADD', conf()), 7, /^failed to find plugin "host-local" in path/);
    expectError(run('ADD', conf({ delegate: { type: 'ipvlan' } })), 7, /plugin "ipvlan"/);
    expect(delegateCalls(bin)).toEqual([]);
  });

  it('a dataDir that cannot be written is code 5 (I/O), before the delegate runs', () => {
    writeFileSync(join(dir.path, 'file'), '');
    const r = run('ADD', conf({ dataDir: join(dir.path, 'file', 'sub') }));
    expectError(r, 5, /^cannot save the delegate configuration/);
    expect(delegateCalls(bin)).toEqual([]);
  });

  it("a delegate's failure comes back unchanged (code, msg, details); its DEL undoes what it did and the record goes", () => {
    answer(bin, 'bridge', 'ADD', '{"code":999,"msg":"failed to set bridge addr","details":"x"}', 1);
    const r = run('ADD', conf());
    expect(r.json).toEqual({
      cniVersion: '1.0.0',
      code: 999,
      msg: 'failed to set bridge addr',
      details: 'x',
    });
    expect(delegateCalls(bin).map((c) => c.command)).toEqual(['ADD', 'DEL']);
    expect(existsSync(join(dataDir, 'c1'))).toBe(false);
  });

  it('a delegate that exits non-zero without JSON, or is killed, is an error saying so', () => {
    answer(bin, 'bridge', 'ADD', 'panic: oops', 2);
    expectError(
      run('ADD', conf()),
      999,
      /failed but error parsing its diagnostic message "panic: oops"/,
    );
    answer(bin, 'bridge', 'ADD', '', 3);
    expectError(run('ADD', conf()), 999, /failed with no error message: exit status 3/);
    answer(bin, 'bridge', 'ADD', 'not json', 0);
    expectError(run('ADD', conf()), 6, /succeeded but its result is not JSON/);
  });

  it('1.1.0 with a delegate that stops at 1.0.0 (Debian 12): retried at 1.0.0, answered as 1.1.0', () => {
    // The stand-in refuses 1.1.0 as libcni's skel does, and succeeds at 1.0.0.
    writeFileSync(join(bin, 'bridge.real'), readFileSync(join(bin, 'bridge'), 'utf8'));
    writeFileSync(
      join(bin, 'bridge'),
      `#!/bin/sh\nin=$(cat)\ncase "$in" in *'"cniVersion":"1.1.0"'*) echo '{"code":1,"msg":"incompatible CNI versions"}'; exit 1;; esac\nprintf '%s' "$in" | exec sh ${join(bin, 'bridge.real')}\n`,
    );
    const r = run('ADD', conf({ cniVersion: '1.1.0' }));
    expect(r.exitCode).toBe(0);
    expect(addResultProblems(r.json, '1.1.0')).toEqual([]);
    expect(record().cniVersion).toBe('1.0.0');
    // DEL then speaks 1.0.0 to it, from the record.
    expect(run('DEL', conf({ cniVersion: '1.1.0' })).exitCode).toBe(0);
    expect(delegateCalls(bin).at(-1)).toMatchObject({ command: 'DEL' });
    expect(delegateCalls(bin).at(-1)?.stdin.cniVersion).toBe('1.0.0');
  });

  it('a delegate answering in another version than asked is code 6', () => {
    answer(bin, 'bridge', 'ADD', '{"cniVersion":"0.4.0","ips":[]}');
    expectError(run('ADD', conf()), 6, /answered in CNI version 0\.4\.0, asked for 1\.0\.0/);
  });

  it('results are passed through in 0.3.1 and 0.4.0 too', () => {
    for (const v of ['0.3.1', '0.4.0']) {
      answer(
        bin,
        'bridge',
        'ADD',
        `{"cniVersion":"${v}","interfaces":[{"name":"eth0","sandbox":"/x"}],"ips":[{"version":"4","address":"10.244.3.2/24","gateway":"10.244.3.1","interface":0}],"dns":{}}`,
      );
      const r = run('ADD', conf({ cniVersion: v }));
      expect(addResultProblems(r.json, v)).toEqual([]);
    }
  });
});

describe('DEL', () => {
  it('runs the delegate with what ADD recorded, even once subnet.env is gone, then removes the record', () => {
    run('ADD', conf());
    rmSync(subnetFile);
    const r = run('DEL', conf(), { CNI_NETNS: undefined });
    expect(r).toMatchObject({ exitCode: 0, stdout: '' });
    const [add, del] = delegateCalls(bin);
    expect(del).toMatchObject({ command: 'DEL', containerId: 'c1', ifName: 'eth0', netnsSet: '' });
    expect(del.stdin).toEqual(add.stdin);
    expect(readdirSync(dataDir)).toEqual([]);
  });

  it('is idempotent: an unknown container, or a second DEL, succeeds without running anything', () => {
    expect(run('DEL', conf())).toMatchObject({ exitCode: 0, stdout: '' });
    run('ADD', conf());
    run('DEL', conf());
    expect(run('DEL', conf())).toMatchObject({ exitCode: 0, stdout: '' });
    expect(delegateCalls(bin).map((c) => c.command)).toEqual(['ADD', 'DEL']);
  });

  it("a record flannel's own plugin wrote (no interface key) is deleted the same way", () => {
    mkdirSync(dataDir);
    const flannelRecord = { name: 'cbr0', type: 'bridge', ipam: { type: 'host-local' } };
    writeFileSync(join(dataDir, 'c1'), JSON.stringify(flannelRecord));
    expect(run('DEL', conf()).exitCode).toBe(0);
    expect(delegateCalls(bin)[0].stdin).toEqual(flannelRecord);
    expect(existsSync(join(dataDir, 'c1'))).toBe(false);
  });

  it("a delegate's failure is returned and the record kept, so the runtime's retry can finish it", () => {
    run('ADD', conf());
    answer(bin, 'bridge', 'DEL', '{"code":11,"msg":"busy"}', 1);
    expect(run('DEL', conf()).json).toEqual({ cniVersion: '1.0.0', code: 11, msg: 'busy' });
    expect(existsSync(join(dataDir, 'c1'))).toBe(true);
    rmSync(join(bin, 'bridge'));
    expectError(run('DEL', conf()), 7, /failed to find plugin "bridge"/);
    expect(existsSync(join(dataDir, 'c1'))).toBe(true);
  });

  it("options ADD would refuse do not block DEL (flannel's DEL checks no more than decoding): the record is released, none is success", () => {
    run('ADD', conf());
    // The configuration changed since ADD: what it says of the delegate and IPAM does not matter.
    const changed = conf({
      delegate: { name: 'x', ipam: {} },
      ipam: { type: '', routes: [{ gw: 'nonsense' }] },
    });
    expectError(run('ADD', changed), 7, /must not have 'name'/);
    expect(run('DEL', changed)).toMatchObject({ exitCode: 0, stdout: '' });
    expect(delegateCalls(bin).map((c) => c.command)).toEqual(['ADD', 'DEL']);
    expect(existsSync(join(dataDir, 'c1'))).toBe(false);
    expect(run('DEL', changed)).toMatchObject({ exitCode: 0, stdout: '' });
    // What does not decode still fails, as flannel's: it cannot say where the record is.
    expectError(run('DEL', conf({ dataDir: 5 })), 7, /"dataDir" must be a non-empty string/);
    // An unparsable record and options that will not do: nothing to release, said, and the record goes.
    mkdirSync(dataDir, { recursive: true });
    writeFileSync(join(dataDir, 'c1'), '{"half": ');
    const r = run('DEL', changed);
    expect(r).toMatchObject({ exitCode: 0, stdout: '' });
    expect(r.stderr).toMatch(
      /cannot rebuild it from subnet.env .*must not have 'name'.*nothing to release/,
    );
    expect(existsSync(join(dataDir, 'c1'))).toBe(false);
  });

  it('an unparsable record is replaced by the configuration subnet.env gives, so the address is still released', () => {
    mkdirSync(dataDir);
    writeFileSync(join(dataDir, 'c1'), '{"half": ');
    const r = run('DEL', conf());
    expect(r.exitCode).toBe(0);
    expect(r.stderr).toMatch(/ignoring .*c1: not a delegate configuration/);
    expect(delegateCalls(bin)[0]).toMatchObject({ command: 'DEL' });
    expect(delegateCalls(bin)[0].stdin.ipam).toMatchObject({
      ranges: [[{ subnet: '10.244.3.0/24' }]],
    });
    expect(existsSync(join(dataDir, 'c1'))).toBe(false);
  });
});

describe('CHECK', () => {
  const prevResult = {
    cniVersion: '1.0.0',
    interfaces: [{ name: 'eth0', sandbox: '/run/netns/pod1' }],
    ips: [{ address: '10.244.3.2/24', gateway: '10.244.3.1', interface: 0 }],
    routes: [{ dst: '10.244.0.0/16' }, { dst: '0.0.0.0/0', gw: '10.244.3.1' }],
  };

  it("runs the delegate's CHECK with the record and prevResult, each route's gateway made explicit", () => {
    run('ADD', conf());
    const r = run('CHECK', conf({ prevResult }));
    expect(r).toMatchObject({ exitCode: 0, stdout: '' });
    const check = delegateCalls(bin)[1];
    expect(check.command).toBe('CHECK');
    expect(check.stdin.prevResult).toEqual({
      ...prevResult,
      routes: [
        { dst: '10.244.0.0/16', gw: '10.244.3.1' },
        { dst: '0.0.0.0/0', gw: '10.244.3.1' },
      ],
    });
    expect(check.stdin.mtu).toBe(1450);
  });

  it("passes the delegate's failure back", () => {
    run('ADD', conf());
    answer(
      bin,
      'bridge',
      'CHECK',
      '{"code":999,"msg":"Failed to match addr 10.244.3.2/24 on interface eth0"}',
      1,
    );
    expectError(run('CHECK', conf({ prevResult })), 999, /Failed to match addr/);
  });

  it('without prevResult is code 7; without a record code 3; without subnet.env code 11', () => {
    expectError(run('CHECK', conf()), 7, /required prevResult missing/);
    expectError(run('CHECK', conf({ prevResult })), 3, /no record of container c1/);
    run('ADD', conf());
    rmSync(subnetFile);
    expectError(run('CHECK', conf({ prevResult })), 11, /subnet\.env/);
  });

  it("a pod outside the node's current subnet, or with an MTU the overlay no longer has, is stale (code 100)", () => {
    run('ADD', conf());
    writeFileSync(subnetFile, SUBNET_ENV.replace('10.244.3.1/24', '10.244.9.1/24'));
    const r = run('CHECK', conf({ prevResult }));
    expectError(
      r,
      STALE_ATTACHMENT,
      /pod address 10\.244\.3\.2\/24 is outside this node's subnet 10\.244\.9\.0\/24/,
    );
    writeFileSync(subnetFile, SUBNET_ENV.replace('1450', '1400'));
    expectError(
      run('CHECK', conf({ prevResult })),
      STALE_ATTACHMENT,
      /pod MTU 1450 is not the overlay's 1400/,
    );
    // An MTU the configuration fixes is the configuration's business.
    writeFileSync(subnetFile, SUBNET_ENV);
    run('ADD', conf({ delegate: { mtu: 1400 } }));
    writeFileSync(subnetFile, SUBNET_ENV.replace('1450', '1300'));
    expect(run('CHECK', conf({ delegate: { mtu: 1400 }, prevResult })).exitCode).toBe(0);
  });
});

describe('STATUS (1.1.0)', () => {
  const v11 = (extra: Record<string, unknown> = {}) => conf({ cniVersion: '1.1.0', ...extra });

  it('ready when subnet.env and both delegates are there; a delegate that predates STATUS is not asked', () => {
    expect(run('STATUS', v11())).toMatchObject({ exitCode: 0, stdout: '' });
    expect(delegateCalls(bin).map((c) => c.command)).toEqual(['VERSION']);
  });

  it('not ready (code 50) without subnet.env or with a delegate missing, saying which', () => {
    rmSync(subnetFile);
    expectError(run('STATUS', v11()), 50, /subnet\.env.*does not exist/);
    writeFileSync(subnetFile, SUBNET_ENV);
    rmSync(join(bin, 'host-local'));
    expectError(run('STATUS', v11()), 50, /failed to find plugin "host-local"/);
  });

  it('asks a delegate that speaks 1.1.0, and passes its answer on', () => {
    answer(
      bin,
      'bridge',
      'VERSION',
      '{"cniVersion":"1.1.0","supportedVersions":["1.0.0","1.1.0"]}',
    );
    expect(run('STATUS', v11()).exitCode).toBe(0);
    expect(delegateCalls(bin).map((c) => c.command)).toEqual(['VERSION', 'STATUS']);
    answer(bin, 'bridge', 'STATUS', '{"code":51,"msg":"bridge unhappy"}', 1);
    expectError(run('STATUS', v11()), 51, /bridge unhappy/);
  });
});

describe('GC (1.1.0)', () => {
  const gc = (valid: unknown, extra: Record<string, unknown> = {}) =>
    run('GC', conf({ cniVersion: '1.1.0', 'cni.dev/valid-attachments': valid, ...extra }), {
      CNI_CONTAINERID: undefined,
      CNI_IFNAME: undefined,
      CNI_NETNS: undefined,
    });

  it('releases every attachment of this network not in the valid list (DEL, no netns) and removes its record', () => {
    for (const [id, ifName] of [
      ['keep', 'eth0'],
      ['stale1', 'eth0'],
      ['stale2', 'net1'],
    ])
      run('ADD', conf(), { CNI_CONTAINERID: id, CNI_IFNAME: ifName });
    // Another network's record in the same dataDir is not ours to collect.
    writeFileSync(join(dataDir, 'other'), JSON.stringify({ name: 'othernet', type: 'bridge' }));
    writeFileSync(join(dataDir, '.stale3.tmp-1'), '{}');
    const r = gc([{ containerID: 'keep', ifname: 'eth0' }]);
    expect(r).toMatchObject({ exitCode: 0, stdout: '' });
    const dels = delegateCalls(bin).filter((c) => c.command === 'DEL');
    expect(dels.map((c) => [c.containerId, c.ifName, c.netnsSet]).sort()).toEqual([
      ['stale1', 'eth0', ''],
      ['stale2', 'net1', ''],
    ]);
    expect(readdirSync(dataDir).sort()).toEqual(['.stale3.tmp-1', 'keep', 'other']);
    expect(r.stderr).toMatch(/released stale attachment stale1\/eth0/);
  });

  it('forwards GC to a delegate that speaks 1.1.0, with the valid list', () => {
    answer(
      bin,
      'bridge',
      'VERSION',
      '{"cniVersion":"1.1.0","supportedVersions":["1.0.0","1.1.0"]}',
    );
    const valid = [{ containerID: 'a', ifname: 'eth0' }];
    expect(gc(valid).exitCode).toBe(0);
    const call = delegateCalls(bin).find((c) => c.command === 'GC');
    expect(call?.stdin).toMatchObject({
      type: 'bridge',
      cniVersion: '1.1.0',
      'cni.dev/valid-attachments': valid,
    });
  });

  it('keeps going past a failure and reports every one; the failed record stays for the next GC', () => {
    run('ADD', conf(), { CNI_CONTAINERID: 's1' });
    run('ADD', conf(), { CNI_CONTAINERID: 's2' });
    answer(bin, 'bridge', 'DEL', '{"code":999,"msg":"ipam busy"}', 1);
    const r = gc([]);
    expectError(r, 999, /^GC: 2 stale resource\(s\) could not be cleaned up$/);
    expect(r.json.details).toMatch(/ipam busy.*ipam busy/);
    expect(readdirSync(dataDir).sort()).toEqual(['s1', 's2']);
  });

  it('without "cni.dev/valid-attachments" is code 7 and removes nothing', () => {
    run('ADD', conf());
    expectError(gc(undefined), 7, /GC needs "cni.dev\/valid-attachments"/);
    expectError(gc([{ ifname: 'eth0' }]), 7, /valid-attachments/);
    expect(readdirSync(dataDir)).toEqual(['c1']);
  });
});

describe('bad input never crashes it', () => {
  it('any environment and stdin give exit 0, or exit 1 with the spec error JSON', () => {
    const commands = fc.constantFrom('ADD', 'DEL', 'CHECK', 'STATUS', 'GC', 'VERSION', 'X', '');
    const value = fc.oneof(
      fc.string(),
      fc.constant(undefined),
      fc.constant('c1'),
      fc.constant('eth0'),
    );
    const stdin = fc.oneof(
      fc.string(),
      fc.json(),
      fc
        .record({
          cniVersion: fc.oneof(fc.constantFrom(...SUPPORTED_VERSIONS), fc.string(), fc.integer()),
          name: fc.oneof(fc.constant('cbr0'), fc.string()),
          delegate: fc.oneof(fc.object(), fc.string(), fc.constant(null)),
          ipam: fc.oneof(fc.object(), fc.array(fc.string())),
          'cni.dev/valid-attachments': fc.anything(),
          prevResult: fc.oneof(fc.object(), fc.constant(null)),
        })
        .map((c) => JSON.stringify({ ...c, subnetFile, dataDir })),
    );
    fc.assert(
      fc.property(commands, value, value, stdin, (command, id, ifName, input) => {
        const r = runPlugin({
          env: {
            CNI_COMMAND: command,
            CNI_CONTAINERID: id,
            CNI_IFNAME: ifName,
            CNI_NETNS: '/x',
            CNI_PATH: bin,
          },
          stdin: input,
        });
        expect([0, 1]).toContain(r.exitCode);
        if (r.exitCode === 1) expect(errorResultProblems(JSON.parse(r.stdout))).toEqual([]);
      }),
      { numRuns: 300 },
    );
  });
});

describe('the weft-cni executable', () => {
  const exe = (env: Record<string, string>, input?: string) =>
    spawnSync(process.execPath, [PLUGIN_MAIN], {
      env: { PATH: process.env.PATH ?? '', ...env },
      input,
      encoding: 'utf8',
    });

  it('answers on stdout with exit status 0 or 1, as a runtime reads it', () => {
    const add = exe(envFor('ADD') as Record<string, string>, conf());
    expect(add.status).toBe(0);
    expect(addResultProblems(JSON.parse(add.stdout), '1.0.0')).toEqual([]);
    const bad = exe(envFor('ADD') as Record<string, string>, '{');
    expect(bad.status).toBe(1);
    expect(JSON.parse(bad.stdout)).toMatchObject({ code: 6 });
    const version = exe({ CNI_COMMAND: 'VERSION' });
    expect(JSON.parse(version.stdout).supportedVersions).toContain('1.1.0');
    const about = exe({});
    expect([about.status, about.stdout]).toEqual([0, '']);
    expect(about.stderr).toMatch(/^weft-cni: /);
  });

  it('`weft-cni install <dir>` installs it as flannel; the installed file runs it', () => {
    const r = spawnSync(process.execPath, [PLUGIN_MAIN, 'install', join(dir.path, 'cni-bin')], {
      encoding: 'utf8',
    });
    expect(r.stdout.trim()).toBe(join(dir.path, 'cni-bin', 'flannel'));
    const v = spawnSync(join(dir.path, 'cni-bin', 'flannel'), [], {
      env: { CNI_COMMAND: 'VERSION' },
      input: '{"cniVersion":"0.4.0"}',
      encoding: 'utf8',
    });
    expect(JSON.parse(v.stdout)).toEqual({
      cniVersion: '0.4.0',
      supportedVersions: SUPPORTED_VERSIONS,
    });
  });
});
