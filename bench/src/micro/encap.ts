import {
  EtherType,
  flannelTtlStep,
  IcmpCode,
  IcmpType,
  IpProtocol,
  ipv4,
  ipv4Check,
  Status,
  VXLAN_HEADER_BYTES,
  vxlanDecapCheck,
  vxlanEncapInPlace,
  writeIcmpv4Error,
} from '@weft/encap';
import { consume, type MicroSuite } from './suite.js';

const OPS = 1000;
const HEADROOM = 64;
const vtepA = 0x020000000101;
const vtepB = 0x020000000201;

/** A 1400-byte TCP-sized IPv4 packet in a slot with headroom, as the TUN reader leaves it. */
function slotWithPacket(): Buffer {
  const slot = Buffer.alloc(HEADROOM + 1400);
  ipv4.emit(
    {
      src: 0x0af40105,
      dst: 0x0af40207,
      protocol: IpProtocol.tcp,
      ttl: 64,
      payloadLength: 1380,
      identification: 1,
      dontFragment: true,
    },
    slot,
    HEADROOM,
  );
  return slot;
}

const encapSlot = slotWithPacket();
const decapSlot = slotWithPacket();
const decapStart = vxlanEncapInPlace(decapSlot, HEADROOM, 1, vtepB, vtepA, EtherType.ipv4);
const decapLength = decapSlot.length - decapStart;
const ttlSlot = slotWithPacket();
const ttlChecksum = ttlSlot.readUInt16BE(HEADROOM + 10);
const icmpOut = Buffer.alloc(128);

export const encapSuite: MicroSuite = {
  name: 'encap',
  cases: [
    {
      name: 'vxlan encap (VXLAN + inner Ethernet into headroom)',
      opsPerCall: OPS,
      fn() {
        let s = 0;
        for (let i = 0; i < OPS; i++)
          s += vxlanEncapInPlace(encapSlot, HEADROOM, 1, vtepB, vtepA, EtherType.ipv4);
        consume(s);
      },
    },
    {
      name: 'vxlan decap (flags, VNI, inner dst MAC, inner IPv4 check)',
      opsPerCall: OPS,
      fn() {
        let s = 0;
        for (let i = 0; i < OPS; i++) {
          const status = vxlanDecapCheck(decapSlot, decapStart, decapLength, 1, vtepB);
          const inner = decapStart + VXLAN_HEADER_BYTES + 14;
          s +=
            status === Status.ok ? ipv4Check(decapSlot, inner, decapSlot.length - inner) : status;
        }
        consume(s);
      },
    },
    {
      name: 'flannel TTL step (validate + RFC 1624 decrement)',
      opsPerCall: OPS,
      fn() {
        let s = 0;
        for (let i = 0; i < OPS; i++) {
          s += flannelTtlStep(ttlSlot, HEADROOM, 1400);
          ttlSlot[HEADROOM + 8] = 64;
          ttlSlot.writeUInt16BE(ttlChecksum, HEADROOM + 10);
        }
        consume(s);
      },
    },
    {
      name: 'ipv4 header validation',
      opsPerCall: OPS,
      fn() {
        let s = 0;
        for (let i = 0; i < OPS; i++) s += ipv4Check(encapSlot, HEADROOM, 1400);
        consume(s);
      },
    },
    {
      name: 'icmp net unreachable generation',
      opsPerCall: OPS,
      fn() {
        let s = 0;
        for (let i = 0; i < OPS; i++) {
          s += writeIcmpv4Error(
            icmpOut,
            0,
            encapSlot,
            HEADROOM,
            1400,
            IcmpType.destinationUnreachable,
            IcmpCode.netUnreachable,
            0x0af40100,
          );
        }
        consume(s);
      },
    },
  ],
};
