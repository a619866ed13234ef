export { Daemon, openStore } from './daemon.js';
export {
  BRING_UP,
  type Dataplane,
  type DataplaneContext,
  type Health,
  type Mode,
} from './dataplane.js';
export {
  type CheckResult,
  type DoctorOptions,
  type DoctorReport,
  type PathCell,
  type PeerRow,
  parseDoctorFlags,
  peerTable,
  renderText,
  runDoctor,
  type Status,
} from './doctor/index.js';
export { DaemonErrorCode } from './errors.js';
export { FLAGS, helpText, type Options, parseFlags } from './flags.js';
export {
  type DaemonStatus,
  snakeCase,
  startHealthServer,
  startMetricsServer,
  VERSION,
} from './http.js';
export { DirectRoutes, KernelVxlan, type RemoteNode, vtepAddress } from './kernel.js';
export { LeaseKeeper, type LeaseKeeperHandlers } from './lease-keeper.js';
export {
  iptablesForwardRules,
  iptablesMasqRules,
  type MasqueradeRules,
  nftForwardRules,
  nftMasqRules,
  type TrafficRules,
  trafficRules,
} from './traffic.js';
export { findUnderlay, type Underlay, type UnderlayOptions } from './underlay.js';
