/** The `code` of each WeftError weftd fails or stops with (besides its packages' own). */
export const DaemonErrorCode = {
  /** No usable underlay interface (--iface, --iface-regex, --iface-can-reach, --public-ip). */
  iface: 'ERR_WEFTD_IFACE',
  /** The backend cannot run with this network config or on this node. */
  backend: 'ERR_WEFTD_BACKEND',
  /** This node's lease vanished and its subnet went to another node: {@link Daemon.fatal}. */
  leaseLost: 'ERR_WEFTD_LEASE_LOST',
} as const;
