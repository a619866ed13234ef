export { SumOp, sumRanges } from './checksum.js';
export { OpenOp, openTransport, SealOp, sealTransport } from './crypto.js';
export {
  type DeviceMode,
  TunDevice,
  TunOffload,
  type TunOpenOptions,
  TunQueue,
} from './device.js';
export { TunErrorCode } from './errors.js';
export { BatchIo, type IoStats } from './io.js';
export { type NetlinkOpenOptions, NetlinkSocket } from './netlink.js';
export { PacketRing, type RingOptions, SendFlag, SendTable } from './ring.js';
export { allocSlab, MAX_SLAB_BYTES } from './slab.js';
export { type UdpOpenOptions, UdpSocket } from './udp.js';
