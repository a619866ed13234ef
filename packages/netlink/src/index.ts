export * as constants from './constants.js';
export {
  AddressFamily,
  IfaFlag,
  Iff,
  NlmFlag,
  Ntf,
  Nud,
  RtmType,
  RtnType,
  RtProtocol,
  RtScope,
  RtTable,
} from './constants.js';
export {
  type Attr,
  Attrs,
  attr,
  buildMessage,
  type Message,
  parseError,
  parseMessages,
} from './message.js';
export {
  type RtnlEvent,
  RtnlGroup,
  RtnlMonitor,
  type RtnlMonitorOptions,
} from './monitor.js';
export {
  type Address,
  type FdbEntry,
  type Link,
  type Neighbor,
  type NetlinkTransport,
  netlinkError,
  parseLink,
  type Route,
  Rtnl,
  type VxlanInfo,
  type VxlanSpec,
} from './rtnl.js';
export {
  KernelWireguard,
  type KernelWireguardConfig,
  type KernelWireguardDevice,
  type KernelWireguardPeer,
  parseDevice,
  probeKernelWireguard,
  setDeviceAttrs,
  sockaddr,
  WG_GENL_NAME,
  WgAllowedIp,
  WgDevice,
  WgPeer,
  WgPeerFlag,
} from './wireguard.js';
