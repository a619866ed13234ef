/**
 * `@weft/dataplane/testing`: what tests and benchmarks need that a node agent does not: stand-in
 * I/O without system calls, and the offload internals (segmentation, coalescing, checksum
 * completion) to drive and measure on their own. Not part of the stable API.
 */

export { COUNTER_COUNT } from './counters.js';
export { type HotPath, hotPaths, type NamedHotPath } from './hot-paths.js';
export {
  CoalesceResult,
  finishPartialChecksum,
  frameIpFamily,
  frameIpOffset,
  GatherCoalescer,
  type Segmented,
  segmentTcp4,
  TcpCoalescer,
  TcpSegmenter,
} from './offload.js';
export { StandInIo, standInBackendIo } from './stand-in-io.js';
export {
  putDatagram,
  putDatagram6,
  putGroDatagrams,
  putPacket,
  putSuperFrame,
  putSuperPacket,
  resetTtl,
  setSource,
  setSource6,
  type TcpOptions,
  type Wrap,
  wrapBytes,
  writeTcp4,
  writeUdp6,
} from './traffic.js';
