export { Daemon, DaemonErrorCode } from './daemon.js';
export { FLAGS, helpText, type Options, parseFlags } from './flags.js';
export { type DaemonStatus, startHealthServer, startMetricsServer } from './http.js';
export { DirectRoutes, KernelVxlan, type RemoteNode, vtepAddress } from './kernel.js';
export { setupMasquerade } from './masq.js';
