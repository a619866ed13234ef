import { WeftError } from '@weft/core';
import type { Backend } from './backend.js';
import { DataplaneErrorCode } from './nodes.js';
import { UdpBackend, type UdpBackendOptions } from './udp-backend.js';
import { VxlanBackend, type VxlanBackendOptions } from './vxlan-backend.js';
import { WireguardBackend, type WireguardBackendOptions } from './wireguard/index.js';

/** A backend's options, tagged with its `type`, for {@link createBackend}. */
export type BackendOptions =
  | ({ type: 'udp' } & UdpBackendOptions)
  | ({ type: 'vxlan' } & VxlanBackendOptions)
  | ({ type: 'wireguard' } & WireguardBackendOptions);

/** Opens a backend by type: the one call a node agent makes. */
export function createBackend(options: BackendOptions): Backend {
  switch (options.type) {
    case 'udp':
      return UdpBackend.open(options);
    case 'vxlan':
      return VxlanBackend.open(options);
    case 'wireguard':
      return WireguardBackend.open(options);
    default:
      throw new WeftError(
        DataplaneErrorCode.badOption,
        `unknown backend type ${JSON.stringify((options as { type: unknown }).type)}: use udp, vxlan or wireguard`,
      );
  }
}
