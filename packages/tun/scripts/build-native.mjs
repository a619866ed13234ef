#!/usr/bin/env node
// Builds the addon from source into native/build/Release with node-gyp (binding.gyp is in native/,
// so no package manager runs node-gyp by itself on install): the workspace's build (the root
// package's postinstall runs it) and the fallback where no prebuilt addon fits (the loader's
// error names this script). Against the running Node's own headers when it has them, so nothing
// is downloaded.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { delimiter, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const pkgDir = dirname(dirname(fileURLToPath(import.meta.url)));
const require = createRequire(join(pkgDir, 'package.json'));

function fail(message) {
  console.error(`@weft/tun: ${message}`);
  process.exit(1);
}

if (process.platform !== 'linux')
  fail(`runs on Linux only (TUN/TAP, rtnetlink); this is ${process.platform}: nothing to build`);

function onPath(command) {
  if (command.includes('/')) return existsSync(command);
  return (process.env.PATH ?? '')
    .split(delimiter)
    .some((dir) => dir && existsSync(join(dir, command)));
}

// node-gyp's own failure for a missing compiler is a page of make output: say it first.
const cxx = (process.env.CXX ?? '').split(' ')[0] || (onPath('c++') ? 'c++' : 'g++');
const missing = [cxx, 'make', 'python3'].filter((tool) => !onPath(tool));
if (missing.length > 0)
  fail(
    `building the native addon from source needs a C++17 compiler, make and python3; missing: ${missing.join(', ')}. Install them (Debian/Ubuntu: apt-get install g++ make python3; Fedora/RHEL: dnf install gcc-c++ make python3; Alpine: apk add build-base python3 linux-headers) and run \`node ${fileURLToPath(import.meta.url)}\` again`,
  );

// node-gyp: the workspace's, else the one npm or pnpm runs scripts with, else npm's own copy.
function nodeGyp() {
  try {
    return require.resolve('node-gyp/bin/node-gyp.js');
  } catch {}
  if (process.env.npm_config_node_gyp && existsSync(process.env.npm_config_node_gyp))
    return process.env.npm_config_node_gyp;
  const bundled = join(
    dirname(dirname(process.execPath)),
    'lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js',
  );
  if (existsSync(bundled)) return bundled;
  fail('node-gyp was not found: install it (npm install -g node-gyp) and run this again');
}

const prefix = dirname(dirname(process.execPath));
const args = [nodeGyp(), 'rebuild'];
if (existsSync(join(prefix, 'include', 'node', 'node_api.h'))) args.push(`--nodedir=${prefix}`);
else console.warn(`@weft/tun: no Node headers under ${prefix}/include/node; node-gyp fetches them`);
const result = spawnSync(process.execPath, args, { stdio: 'inherit', cwd: join(pkgDir, 'native') });
if (result.status !== 0) fail(`node-gyp failed (exit ${result.status}); its output is above`);
