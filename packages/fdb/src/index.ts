export { FdbErrorCode } from './errors.js';
export type { ChangeEvent, ChangeKind, Listener } from './events.js';
export {
  Fdb,
  type FdbDiff,
  type FdbDump,
  type FdbEntry,
  type FdbEntryInput,
  type FdbOptions,
  type FdbRemove,
} from './fdb.js';
export { hashIpv6, Ipv6Map, ipv6PrefixEquals } from './ipv6-key.js';
export {
  type NeighborDiff,
  type NeighborDump,
  type NeighborEntry,
  type NeighborInput,
  type NeighborState,
  NeighborTable,
  type NeighborTableOptions,
} from './neighbors.js';
export { macHigh, NumberMap } from './number-map.js';
export {
  type NextHop,
  type RouteDiff,
  type RouteDump,
  type RouteInput,
  RouteTable,
} from './routes.js';
