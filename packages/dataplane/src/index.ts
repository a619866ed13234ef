export {
  Backend,
  type BackendIo,
  type BackendType,
  type CommonBackendOptions,
  type DeviceIo,
} from './backend.js';
export { Counter, type CounterName, type CounterSnapshot, totalDrops } from './counters.js';
export { type BackendOptions, createBackend } from './create.js';
export { DataplaneErrorCode, type RemoteNode } from './nodes.js';
export type { PacketIo, UdpIo } from './pump.js';
export { UdpBackend, type UdpBackendOptions } from './udp-backend.js';
export {
  VxlanBackend,
  type VxlanBackendOptions,
  VxlanBridge,
  VxlanVtep,
} from './vxlan-backend.js';
export {
  formatKey,
  generatePrivateKey,
  loadOrCreateKeyFile,
  parseKey,
  publicKeyOf,
  WgCounter,
  WireguardBackend,
  type WireguardBackendOptions,
  WireguardEngine,
  WireguardErrorCode,
  type WireguardNode,
  type WireguardPeerConfig,
  type WireguardPeerStatus,
  type WireguardTimers,
} from './wireguard/index.js';
