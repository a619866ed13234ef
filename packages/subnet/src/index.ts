export {
  type AllocBackendConfig,
  type BackendConfig,
  type BackendType,
  type HostGwBackendConfig,
  type NetworkConfig,
  networkConfigJson,
  parseNetworkConfig,
  type UdpBackendConfig,
  type VxlanBackendConfig,
  type WireguardBackendConfig,
} from './config.js';
export { EmbeddedStore, type EmbeddedStoreOptions } from './embedded-store.js';
export { configError, SubnetErrorCode } from './errors.js';
export { DEFAULT_ETCD_PREFIX, EtcdStore, type EtcdStoreOptions } from './etcd-store.js';
export {
  describeLease,
  type Lease,
  type LeaseAttrs,
  leaseAttrsJson,
  parseLeaseAttrs,
  parseSubnetKey,
  subnetKey,
  type VxlanLeaseData,
  vxlanLeaseData,
  vxlanLeaseDataV6,
} from './lease.js';
export { LeaseWatcher, type LeaseWatcherOptions } from './lease-watcher.js';
export { consoleLogger, type Logger, silentLogger } from './logger.js';
export {
  type AcquireRequest,
  LEASE_TTL_SECONDS,
  type LeaseEvent,
  type LeaseEventType,
  type LeaseWatch,
  type LeaseWatchHandlers,
  RENEW_MARGIN_SECONDS,
  RENEW_RETRY_SECONDS,
  type RenewalHandle,
  SubnetManager,
  type SubnetManagerOptions,
  sameNode,
} from './manager.js';
export type { StoredValue, StoreEvent, StoreWatch, SubnetStore, WatchHandlers } from './store.js';
export {
  previousSubnets,
  readSubnetEnv,
  type SubnetEnv,
  subnetEnvText,
  writeSubnetEnv,
} from './subnet-env.js';
