import { createNetns, privileged, sweepNetns, waitFor } from '@weft/testkit';
import { afterAll, describe, expect, it } from 'vitest';
import { NetlinkSocket } from '../src/index.js';
import { openFdCount } from './fds.js';

const RTM_NEWLINK = 16;
const RTM_GETLINK = 18;
const NLMSG_DONE = 3;

/** A hand-made RTM_GETLINK dump request: nlmsghdr + ifinfomsg (the real codec is @weft/netlink). */
function getLinkDump(seq: number): Buffer {
  const msg = Buffer.alloc(32);
  msg.writeUInt32LE(32, 0);
  msg.writeUInt16LE(RTM_GETLINK, 4);
  msg.writeUInt16LE(0x301, 6); // NLM_F_REQUEST | NLM_F_DUMP
  msg.writeUInt32LE(seq, 8);
  return msg;
}

function messageTypes(datagram: Buffer): number[] {
  const types: number[] = [];
  for (let off = 0; off + 16 <= datagram.length; ) {
    const len = datagram.readUInt32LE(off);
    types.push(datagram.readUInt16LE(off + 4));
    off += (len + 3) & ~3;
    if (len < 16) break;
  }
  return types;
}

describe.skipIf(!privileged('netlink socket tests'))('netlink socket', () => {
  afterAll(() => sweepNetns('tunnl'));

  it("dumps the links of the namespace it was opened in, and nobody else's", async () => {
    const ns = createNetns('tunnl');
    const sock = NetlinkSocket.open({ netns: ns.name });
    try {
      expect(sock.portId).toBeGreaterThan(0);
      const types: number[] = [];
      sock.onMessage((d) => types.push(...messageTypes(d)));
      sock.send(getLinkDump(1));
      await waitFor(() => types.includes(NLMSG_DONE), 'the end of the dump');
      // A fresh namespace holds exactly one link: lo.
      expect(types.filter((t) => t === RTM_NEWLINK).length).toBe(1);
    } finally {
      sock.close();
      ns.delete();
    }
  });
});

// Opening a netlink socket in our own namespace needs no privileges.
describe('netlink socket housekeeping', () => {
  it('a send after close is a clear error', () => {
    const s = NetlinkSocket.open();
    s.close();
    expect(() => s.send(getLinkDump(2))).toThrow(
      expect.objectContaining({ code: 'ERR_TUN_CLOSED', message: 'the netlink socket is closed' }),
    );
  });

  it('close twice is safe and leaks no fd', () => {
    const before = openFdCount();
    for (let i = 0; i < 20; i++) {
      const s = NetlinkSocket.open();
      s.close();
      s.close();
    }
    expect(openFdCount()).toBe(before);
  });
});
