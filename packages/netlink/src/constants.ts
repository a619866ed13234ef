/** rtnetlink numbers, from linux/netlink.h, linux/rtnetlink.h, linux/if_link.h, linux/neighbour.h. */

// struct nlmsghdr { u32 len; u16 type; u16 flags; u32 seq; u32 pid; }
export const NLMSG_HDRLEN = 16;
/** Control message types of every netlink family (linux/netlink.h NLMSG_*). */
export const NlmsgType = { noop: 1, error: 2, done: 3, overrun: 4 } as const;

/** nlmsghdr flags (NLM_F_*); the same bits mean different things in GET, NEW and ERROR messages. */
export const NlmFlag = {
  request: 0x1,
  multi: 0x2,
  ack: 0x4,
  echo: 0x8,
  dumpInterrupted: 0x10,
  // GET requests
  root: 0x100,
  match: 0x200,
  dump: 0x300,
  // NEW requests
  replace: 0x100,
  excl: 0x200,
  create: 0x400,
  append: 0x800,
  // in NLMSG_ERROR: the original request was cut, and TLVs (extended ack) follow
  capped: 0x100,
  ackTlvs: 0x200,
} as const;

/** rtnetlink message types (RTM_*, linux/rtnetlink.h). */
export const RtmType = {
  newLink: 16,
  delLink: 17,
  getLink: 18,
  setLink: 19,
  newAddr: 20,
  delAddr: 21,
  getAddr: 22,
  newRoute: 24,
  delRoute: 25,
  getRoute: 26,
  newNeigh: 28,
  delNeigh: 29,
  getNeigh: 30,
} as const;

/** Address families of rtnetlink headers (AF_*): bridge is the FDB's. */
export const AddressFamily = { unspec: 0, inet: 2, bridge: 7, inet6: 10 } as const;

/** Link attributes (IFLA_*, linux/if_link.h). */
export const IflaAttr = {
  address: 1,
  broadcast: 2,
  ifname: 3,
  mtu: 4,
  link: 5,
  master: 10,
  operstate: 16,
  linkinfo: 18,
} as const;

/** Attributes nested in IFLA_LINKINFO (IFLA_INFO_*). */
export const IflaInfo = { kind: 1, data: 2 } as const;

/** VXLAN link attributes nested in IFLA_INFO_DATA (IFLA_VXLAN_*). */
export const IflaVxlan = {
  id: 1,
  group: 2,
  link: 3,
  local: 4,
  ttl: 5,
  tos: 6,
  learning: 7,
  ageing: 8,
  limit: 9,
  portRange: 10,
  proxy: 11,
  rsc: 12,
  l2miss: 13,
  l3miss: 14,
  /** Network byte order, unlike every other integer here. */
  port: 15,
  group6: 16,
  local6: 17,
  udpCsum: 18,
  udpZeroCsum6Tx: 19,
  udpZeroCsum6Rx: 20,
  gbp: 23,
} as const;

/** IFF_* interface flags (ifinfomsg.flags). */
export const Iff = {
  up: 0x1,
  broadcast: 0x2,
  loopback: 0x8,
  pointToPoint: 0x10,
  running: 0x40,
  noarp: 0x80,
  lowerUp: 0x10000,
} as const;

/** Address attributes (IFA_*, linux/if_addr.h). */
export const IfaAttr = { address: 1, local: 2, label: 3, broadcast: 4, flags: 8 } as const;
/** IFA_F_* (linux/if_addr.h): an address's state, in ifa_flags (low byte) and IFA_FLAGS. */
export const IfaFlag = {
  secondary: 0x01,
  nodad: 0x02,
  optimistic: 0x04,
  dadfailed: 0x08,
  homeaddress: 0x10,
  deprecated: 0x20,
  tentative: 0x40,
  permanent: 0x80,
} as const;

/** Route attributes (RTA_*, linux/rtnetlink.h). */
export const RtaAttr = {
  dst: 1,
  src: 2,
  iif: 3,
  oif: 4,
  gateway: 5,
  priority: 6,
  prefsrc: 7,
  table: 15,
} as const;
/** Routing table ids (RT_TABLE_*). */
export const RtTable = { main: 254, local: 255 } as const;
/** Who installed a route (RTPROT_*). */
export const RtProtocol = { unspec: 0, kernel: 2, boot: 3, static: 4 } as const;
/** Route scopes (RT_SCOPE_*): link for an on-link route, host for a local address. */
export const RtScope = { universe: 0, link: 253, host: 254, nowhere: 255 } as const;
/** Route types (RTN_*): unicast, or one that drops (blackhole, unreachable). */
export const RtnType = {
  unicast: 1,
  local: 2,
  broadcast: 3,
  multicast: 5,
  blackhole: 6,
  unreachable: 7,
} as const;
/** rtmsg.flags: the gateway is on-link even though no route says so. */
export const RTNH_F_ONLINK = 0x4;

/** Neighbor and FDB attributes (NDA_*, linux/neighbour.h). */
export const NdaAttr = {
  dst: 1,
  lladdr: 2,
  cacheinfo: 3,
  probes: 4,
  vlan: 5,
  port: 6,
  vni: 7,
  ifindex: 8,
  master: 9,
} as const;
/** Neighbor states (NUD_*): permanent for entries flannel programs. */
export const Nud = {
  incomplete: 0x1,
  reachable: 0x2,
  stale: 0x4,
  delay: 0x8,
  probe: 0x10,
  failed: 0x20,
  noarp: 0x40,
  permanent: 0x80,
} as const;
/** Neighbor flags (NTF_*): self for a VXLAN device's own FDB entries. */
export const Ntf = {
  use: 0x1,
  self: 0x2,
  master: 0x4,
  proxy: 0x8,
  extLearned: 0x10,
  router: 0x80,
} as const;

/** The extended-ack attribute carrying the kernel's error text (NLMSGERR_ATTR_MSG). */
export const NLMSGERR_ATTR_MSG = 1;
