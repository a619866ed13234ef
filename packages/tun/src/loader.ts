import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { WeftError } from '@weft/core';

// The package's root: the same relative path works from src/ (tests) and dist/ (builds).
const PACKAGE_DIR = fileURLToPath(new URL('..', import.meta.url));
const BUILD_SCRIPT = join(PACKAGE_DIR, 'scripts', 'build-native.mjs');
/** Where scripts/build-native.mjs puts a source build (binding.gyp is in native/). */
const SOURCE_BUILD = join(PACKAGE_DIR, 'native', 'build', 'Release', 'weft_tun.node');
/** What prebuilds/ holds in the published package (scripts/prebuild.mjs builds them). */
const PREBUILT = ['linux-x64', 'linux-arm64'];
/** Keep in step with GLIBC_MIN in scripts/elf.mjs. */
const PREBUILT_GLIBC_MIN = [2, 28];

const require = createRequire(import.meta.url);

/** Codes of the addon's loading failures (part of TunErrorCode). */
export const LoadErrorCode = {
  nativeMissing: 'ERR_TUN_NATIVE_MISSING',
  nativeLoad: 'ERR_TUN_NATIVE_LOAD',
  unsupportedPlatform: 'ERR_TUN_UNSUPPORTED_PLATFORM',
} as const;

/** glibc's version, or undefined on another C library (musl). */
function glibcVersion(): string | undefined {
  const header = (process.report?.getReport() as { header?: { glibcVersionRuntime?: string } })
    ?.header;
  return header?.glibcVersionRuntime;
}

function olderThan(version: string, min: number[]): boolean {
  const [major, minor] = version.split('.').map(Number);
  return major < min[0] || (major === min[0] && minor < min[1]);
}

function fromSource(): string {
  return `build it from source: \`node ${BUILD_SCRIPT}\` (needs a C++17 compiler, make and python3: apt-get install g++ make python3, dnf install gcc-c++ make python3, apk add build-base python3 linux-headers); to do that on every install, add it to your package.json's postinstall`;
}

/**
 * Finds and loads the addon: a source build (native/build/Release, as in the workspace) first,
 * then the prebuilt one for this platform (node-gyp-build's choice among prebuilds/). Each
 * failure says what to do about it.
 */
export function loadAddon<T>(): T {
  const where = `${process.platform}-${process.arch}`;
  if (process.platform !== 'linux')
    throw new WeftError(
      LoadErrorCode.unsupportedPlatform,
      `@weft/tun runs on Linux only (TUN/TAP, rtnetlink and recvmmsg/sendmmsg are Linux's); this is ${where}`,
    );
  const glibc = glibcVersion();
  const libc = glibc ? `glibc ${glibc}` : 'a C library other than glibc (musl?)';
  let path = SOURCE_BUILD;
  if (!existsSync(path)) {
    try {
      path = (require('node-gyp-build') as { resolve(dir: string): string }).resolve(PACKAGE_DIR);
    } catch {
      throw missing(where, glibc, libc);
    }
  }
  const prebuilt = path.includes(`${join(PACKAGE_DIR, 'prebuilds')}`);
  if (prebuilt && glibc && olderThan(glibc, PREBUILT_GLIBC_MIN))
    throw new WeftError(
      LoadErrorCode.nativeLoad,
      `the prebuilt addon for ${where} needs glibc >= ${PREBUILT_GLIBC_MIN.join('.')}, this system has ${glibc}: ${fromSource()}`,
    );
  try {
    return require(path) as T;
  } catch (err) {
    const hint = prebuilt
      ? `the prebuilt addon is for glibc >= ${PREBUILT_GLIBC_MIN.join('.')} and this system has ${libc}: ${fromSource()}`
      : `rebuild it: \`node ${BUILD_SCRIPT}\``;
    throw new WeftError(
      LoadErrorCode.nativeLoad,
      `the native addon ${path} failed to load (${(err as Error).message}): ${hint}`,
      { cause: err },
    );
  }
}

function missing(where: string, glibc: string | undefined, libc: string): WeftError {
  if (existsSync(join(PACKAGE_DIR, 'tsconfig.json')))
    // A checkout of the repository (tsconfig.json is not in the package).
    return new WeftError(
      LoadErrorCode.nativeMissing,
      `the native addon is not built (no ${SOURCE_BUILD}): run \`pnpm install\` at the workspace root, which builds it with node-gyp (needs g++, make and python3)`,
    );
  if (PREBUILT.includes(where) && glibc)
    return new WeftError(
      LoadErrorCode.nativeMissing,
      `the prebuilt addon for ${where} is missing from ${join(PACKAGE_DIR, 'prebuilds')}: the package is incomplete; reinstall @weft/tun, or ${fromSource()}`,
    );
  return new WeftError(
    LoadErrorCode.nativeMissing,
    `no prebuilt addon for ${where} with ${libc} (prebuilt: ${PREBUILT.join(', ')} with glibc >= ${PREBUILT_GLIBC_MIN.join('.')}): ${fromSource()}`,
  );
}
