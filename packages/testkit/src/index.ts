export {
  createNetns,
  createSwitchedNodes,
  createTwoNodes,
  type ExecResult,
  linkVeth,
  Netns,
  type PrivilegeStatus,
  privileged,
  privilegeStatus,
  type SwitchedNodes,
  sweepNetns,
  type TwoNodes,
  type VethOptions,
  waitFor,
} from './netns.js';
export {
  LINKTYPE_ETHERNET,
  LINKTYPE_RAW,
  type PcapFile,
  type PcapRecord,
  readPcap,
  writePcap,
} from './pcap.js';
export {
  hasCommand,
  hasScapy,
  haveTools,
  onCi,
  SYSTEM_PYTHON,
  scapyRun,
  tempDir,
  tsharkDissect,
} from './tools.js';
export { type TransferResult, tcpTransfer } from './transfer.js';

import { fileURLToPath } from 'node:url';
/** The captured golden frames (a copy of the team's `shared/vectors`, so a clean clone has them). */
export const VECTORS_DIR = fileURLToPath(new URL('../vectors/', import.meta.url));
export { youngGenerationBytes } from './alloc.js';
export { Cluster, type ClusterNode, type Pod, type UnderlayFamilies } from './cluster.js';
export {
  type CniAttachment,
  CniCallError,
  CniRuntime,
  installWeftCni,
  KUBE_FLANNEL_CNI_CONF,
  REFERENCE_CNI_DIR,
  resultIp,
  resultIps,
  WEFT_CNI_CLI,
} from './cni.js';
export {
  type CounterSnapshot,
  DATAPLANE_CLI,
  type RunningNode,
  startDataplane,
} from './dataplane-process.js';
export { type EtcdOptions, type EtcdServer, startEtcd } from './etcd.js';
export {
  FLANNEL_CNI_FIXTURE,
  FLANNEL_LEASE_FIXTURE,
  type FlannelCniAnswer,
  type FlannelCniRequest,
  type FlannelDecoded,
  type FlannelEncodeRequest,
  flannelCniAdd,
  flannelDecodeLeases,
  flannelEncodeLeases,
} from './flannel.js';
export {
  addContainer,
  bridgeLearned,
  type Container,
  configureKernelL2,
  type KernelL2,
} from './kernel-l2.js';
export { configureKernelVtep, type KernelVtep } from './kernel-vtep.js';
export { BUSYBOX, busyboxRootfs, Podman, type PodmanOptions } from './podman.js';
export {
  type PingStream,
  pingStream,
  pollReadyz,
  type ReadyzPoller,
  type ReadyzSample,
} from './streams.js';
export { type RunningWeftd, startWeftd, WEFTD_CLI } from './weftd-process.js';
export {
  startWireguardGo,
  type WireguardGo,
  type WireguardGoOptions,
  wgKeyPair,
} from './wireguard-go.js';
