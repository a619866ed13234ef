// What an ELF shared object is built for and which glibc it needs: the two things that decide
// whether a prebuilt addon loads on a machine.

/**
 * The oldest glibc and libstdc++ every prebuilt addon must load with: RHEL 8's (glibc 2.28, GCC
 * 8's libstdc++), which Node 20's own official build needs too. prebuild.mjs refuses a build that
 * names a newer symbol version (native/glibc_compat.cc keeps the two that would).
 */
export const GLIBC_MIN = '2.28';
export const GLIBCXX_MIN = '3.4.25';

// EM_X86_64, EM_AARCH64, EM_ARM, EM_RISCV.
const MACHINES = { 62: 'x86-64', 183: 'aarch64', 40: 'arm', 243: 'riscv' };

/** The ELF header's class and machine (e_machine at byte 18, little-endian here). */
export function elfInfo(bytes) {
  if (bytes.length < 20 || bytes.readUInt32BE(0) !== 0x7f454c46) return { machine: 'not ELF' };
  const code = bytes.readUInt16LE(18);
  return { machine: MACHINES[code] ?? `e_machine ${code}`, bits: bytes[4] === 2 ? 64 : 32 };
}

/** The newest `GLIBC_x.y` symbol version named in the object (its version needs). */
export function glibcNeeded(bytes) {
  let newest = '0';
  for (const m of bytes.toString('latin1').matchAll(/GLIBC_(\d+\.\d+(?:\.\d+)?)\0/g)) {
    if (compare(m[1], newest) > 0) newest = m[1];
  }
  return newest;
}

/** The newest `GLIBCXX_x.y.z` (libstdc++) version named, or undefined when none is. */
export function glibcxxNeeded(bytes) {
  let newest;
  for (const m of bytes.toString('latin1').matchAll(/GLIBCXX_(\d+\.\d+(?:\.\d+)?)\0/g)) {
    if (newest === undefined || compare(m[1], newest) > 0) newest = m[1];
  }
  return newest;
}

export function compare(a, b) {
  const pa = a.split('.').map(Number);
  const pb = b.split('.').map(Number);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}
