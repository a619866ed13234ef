#!/usr/bin/env node
// Builds the prebuilt addons shipped in the npm tarball (prebuilds/<platform>-<arch>/), from this
// package's C++ source, with prebuildify: N-API, so one build serves every Node >= 20.
//
//   node scripts/prebuild.mjs [--arch x64,arm64] [--out DIR]
//
// linux-x64 with the system's g++, linux-arm64 with Debian's cross compiler
// (g++-aarch64-linux-gnu). Each arch builds in a fresh staging copy (the workspace's own
// build/ is left alone) with paths relative to it, stripped, so the same toolchain and Node
// headers give the same bytes wherever the checkout is. Runs as @weft/tun's prepack.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { compare, elfInfo, GLIBC_MIN, GLIBCXX_MIN, glibcNeeded, glibcxxNeeded } from './elf.mjs';

const pkgDir = dirname(dirname(fileURLToPath(import.meta.url)));
const require = createRequire(join(pkgDir, 'package.json'));

/** The cross toolchains each target needs; `machine` is the ELF e_machine it must produce. */
const TARGETS = {
  x64: { prefix: '', machine: 'x86-64', debian: 'g++ (build-essential)' },
  arm64: { prefix: 'aarch64-linux-gnu-', machine: 'aarch64', debian: 'g++-aarch64-linux-gnu' },
};

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : fallback;
}

function fail(message) {
  console.error(`prebuild: ${message}`);
  process.exit(1);
}

function onPath(command) {
  return (process.env.PATH ?? '').split(':').some((dir) => dir && existsSync(join(dir, command)));
}

const archs = arg('arch', 'x64,arm64').split(',');
const out = arg('out', pkgDir);
// node-gyp would download headers for the running Node; the local ones make no network call.
const nodeDir = dirname(dirname(process.execPath));
if (!existsSync(join(nodeDir, 'include', 'node', 'node_api.h')))
  fail(`no Node headers under ${nodeDir}/include/node (install Node from a tarball or nodejs-dev)`);

const addonApi = dirname(require.resolve('node-addon-api/package.json'));
const prebuildifyBin = require.resolve('prebuildify/bin.js');
const nodeGypBin = require.resolve('node-gyp/bin/node-gyp.js');

for (const arch of archs) {
  const target = TARGETS[arch];
  if (!target) fail(`no toolchain known for ${arch} (known: ${Object.keys(TARGETS).join(', ')})`);
  const cxx = `${target.prefix}g++`;
  if (!onPath(cxx)) fail(`${cxx} is missing: install Debian's ${target.debian} (scripts/setup.sh)`);

  const staging = join(mkdtempSync(join(tmpdir(), 'weft-prebuild-')), 'tun');
  try {
    cpSync(join(pkgDir, 'native'), staging, {
      recursive: true,
      filter: (src) => !src.startsWith(join(pkgDir, 'native', 'build')),
    });
    // node-addon-api's include_dir is relative to the build's cwd: a copy inside staging keeps it
    // (and every path compiled into the binary) the same whichever directory the build runs in.
    cpSync(addonApi, join(staging, 'node_modules', 'node-addon-api'), { recursive: true });
    writeFileSync(join(staging, 'package.json'), JSON.stringify({ name: '@weft/tun' }));
    // node-gyp's shim: prebuildify calls `node-gyp` from PATH.
    const bin = join(staging, 'node_modules', '.bin');
    mkdirSync(bin);
    writeFileSync(
      join(bin, 'node-gyp'),
      `#!/bin/sh\nexec "${process.execPath}" "${nodeGypBin}" "$@"\n`,
      { mode: 0o755 },
    );
    const env = {
      ...process.env,
      PATH: `${bin}:${process.env.PATH}`,
      npm_config_nodedir: nodeDir,
      SOURCE_DATE_EPOCH: '0',
      CC: `${target.prefix}gcc`,
      CXX: cxx,
      LINK: cxx,
      AR: `${target.prefix}ar`,
      PREBUILD_STRIP_BIN: `${target.prefix}strip`,
    };
    const args = [prebuildifyBin, '--napi', '--strip', '--tag-libc', `--arch=${arch}`, '--quiet'];
    const built = spawnSync(process.execPath, args, { cwd: staging, env, stdio: 'inherit' });
    if (built.status !== 0) fail(`building for linux-${arch} failed (exit ${built.status})`);

    const dir = join(staging, 'prebuilds', `linux-${arch}`);
    const files = readdirSync(dir);
    if (files.length !== 1) fail(`expected one addon in ${dir}, found ${files.join(', ')}`);
    const file = join(dir, files[0]);
    const bytes = readFileSync(file);
    const elf = elfInfo(bytes);
    if (elf.machine !== target.machine)
      fail(`${files[0]} is for ${elf.machine}, not ${target.machine}`);
    const glibc = glibcNeeded(bytes);
    if (process.env.WEFT_PREBUILD_KEEP) writeFileSync(process.env.WEFT_PREBUILD_KEEP, bytes);
    if (compare(glibc, GLIBC_MIN) > 0)
      fail(`${files[0]} needs glibc ${glibc}, newer than the ${GLIBC_MIN} the loader promises`);
    const glibcxx = glibcxxNeeded(bytes) ?? '0';
    if (compare(glibcxx, GLIBCXX_MIN) > 0)
      fail(`${files[0]} needs libstdc++ GLIBCXX_${glibcxx}, newer than ${GLIBCXX_MIN}`);
    const dest = join(out, 'prebuilds', `linux-${arch}`);
    rmSync(dest, { recursive: true, force: true });
    mkdirSync(dest, { recursive: true });
    writeFileSync(join(dest, files[0]), bytes);
    const sha = createHash('sha256').update(bytes).digest('hex');
    console.log(
      `prebuild: linux-${arch}/${files[0]} ${bytes.length} bytes, glibc >= ${glibc}, sha256 ${sha}`,
    );
  } finally {
    rmSync(dirname(staging), { recursive: true, force: true });
  }
}
