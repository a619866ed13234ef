import { getSystemErrorName } from 'node:util';
import { WeftError } from '@weft/core';
import { LoadErrorCode } from './loader.js';
import { isSystemError } from './native.js';

/** Stable codes of @weft/tun. */
export const TunErrorCode = {
  permission: 'ERR_TUN_PERMISSION',
  deviceMissing: 'ERR_TUN_DEVICE_MISSING',
  nameInUse: 'ERR_TUN_NAME_IN_USE',
  nameTooLong: 'ERR_TUN_NAME_TOO_LONG',
  badName: 'ERR_TUN_BAD_NAME',
  badMtu: 'ERR_TUN_BAD_MTU',
  netnsMissing: 'ERR_TUN_NETNS_MISSING',
  addressInUse: 'ERR_TUN_ADDRESS_IN_USE',
  closed: 'ERR_TUN_CLOSED',
  badOption: 'ERR_TUN_BAD_OPTION',
  syscall: 'ERR_TUN_SYSCALL',
  ioFailed: 'ERR_TUN_IO_FAILED',
  ...LoadErrorCode,
} as const;

const PERMISSION_HINT =
  'needs CAP_NET_ADMIN: run as root or grant the capability (e.g. `setcap cap_net_admin+ep $(command -v node)`, or in Kubernetes securityContext.capabilities.add: ["NET_ADMIN"])';

/**
 * Turns a system error from the addon into a WeftError a person can act on. `what` says what
 * weft was doing, e.g. "opening TUN device weft0".
 */
export function toWeftError(err: unknown, what: string, devicePath = '/dev/net/tun'): WeftError {
  if (err instanceof WeftError) return err;
  // The addon's argument checks: a value of the wrong type or out of range.
  if (err instanceof TypeError || err instanceof RangeError)
    return new WeftError(TunErrorCode.badOption, `${what}: ${err.message}`, { cause: err });
  if ((err as { code?: unknown } | undefined)?.code === TunErrorCode.closed)
    return new WeftError(TunErrorCode.closed, `${what}: it is closed`, { cause: err });
  if (!isSystemError(err))
    return new WeftError(TunErrorCode.syscall, `${what}: ${String(err)}`, { cause: err });
  const { code, syscall } = err;
  if (syscall.startsWith('setns')) {
    if (code === 'ENOENT')
      return new WeftError(
        TunErrorCode.netnsMissing,
        `${what}: network namespace not found (${syscall}): create it first (ip netns add NAME)`,
        { cause: err },
      );
    if (code === 'EPERM')
      return new WeftError(
        TunErrorCode.permission,
        `${what}: entering a network namespace needs CAP_SYS_ADMIN: run as root`,
        { cause: err },
      );
  }
  if (syscall === 'open' && (code === 'ENOENT' || code === 'ENODEV' || code === 'ENXIO')) {
    return new WeftError(
      TunErrorCode.deviceMissing,
      `${what}: ${devicePath} is missing: load the tun module (modprobe tun), or in a container mount the host's ${devicePath} into it (the error kube-flannel pods show when the device is not mounted)`,
      { cause: err },
    );
  }
  if (code === 'EPERM' || code === 'EACCES') {
    return new WeftError(
      TunErrorCode.permission,
      `${what}: not permitted (${syscall}): ${PERMISSION_HINT}`,
      { cause: err },
    );
  }
  if (syscall === 'ioctl(TUNSETIFF)' && (code === 'EBUSY' || code === 'EINVAL')) {
    return new WeftError(
      TunErrorCode.nameInUse,
      `${what}: the name is in use by another device (or by a TUN/TAP device of another kind or with other flags): pick another name, or remove it (ip link del NAME)`,
      { cause: err },
    );
  }
  if (syscall === 'bind' && code === 'EADDRINUSE') {
    return new WeftError(
      TunErrorCode.addressInUse,
      `${what}: the address and port are in use by another socket (is another weft or flanneld running?)`,
      { cause: err },
    );
  }
  return new WeftError(TunErrorCode.syscall, `${what}: ${err.message}`, { cause: err });
}

/** libuv names the errnos it knows; a TUN queue whose device is gone says EBADFD, which it does not. */
export function errnoName(errno: number): string {
  if (errno === 77) return 'EBADFD';
  const name = getSystemErrorName(-errno);
  return name.startsWith('Unknown') ? `errno ${errno}` : name;
}

/** Any value as text for an error message; never throws (a Symbol or a null-prototype object would). */
export function show(value: unknown): string {
  if (typeof value === 'string') return value;
  if (typeof value === 'symbol') return value.toString();
  if (typeof value === 'object' && value !== null) return Object.prototype.toString.call(value);
  if (typeof value === 'function') return 'a function';
  return String(value);
}

/** Network namespace names become /run/netns paths; absolute paths pass through. */
export function netnsPath(netns: string | undefined): string | undefined {
  if (netns === undefined || netns === '') return undefined;
  return netns.startsWith('/') ? netns : `/run/netns/${netns}`;
}
