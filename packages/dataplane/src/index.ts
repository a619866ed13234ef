export { Backend, type BackendType, type CommonBackendOptions } from './backend.js';
export { Counter, type CounterName, type CounterSnapshot, totalDrops } from './counters.js';
export { type BackendOptions, createBackend } from './create.js';
export { DataplaneErrorCode, type RemoteNode } from './nodes.js';
export { UdpBackend, type UdpBackendOptions } from './udp-backend.js';
export { VxlanBackend, type VxlanBackendOptions } from './vxlan-backend.js';
