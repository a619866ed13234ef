import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
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

  it('after the kernel drops messages (ENOBUFS) it says so once and keeps delivering', async () => {
    const ns = createNetns('tunnl');
    // RTMGRP_IPV4_IFADDR: a message per address added.
    const sock = NetlinkSocket.open({ netns: ns.name, groups: 0x10 });
    const dir = mkdtempSync(join(tmpdir(), 'weft-nl-'));
    try {
      sock.setOption('rcvbufforce', 4096);
      const errors: string[] = [];
      let messages = 0;
      let sawLast = false;
      sock.onMessage(
        (d) => {
          messages++;
          // IFA_LABEL of the address added after the overflow is "lo"; its address 10.9.255.1.
          if (d.includes(Buffer.from([10, 9, 255, 1]))) sawLast = true;
        },
        (err) => errors.push((err.cause as { code?: string } | undefined)?.code ?? err.code),
      );
      // While this blocks the loop, 400 notifications overflow the 4 KiB receive buffer.
      const batch = join(dir, 'batch');
      writeFileSync(
        batch,
        Array.from(
          { length: 400 },
          (_, i) => `addr add 10.9.${i >> 7}.${(i & 0x7f) + 1}/32 dev lo`,
        ).join('\n'),
      );
      execFileSync('ip', ['-n', ns.name, '-batch', batch]);
      await waitFor(() => errors.length > 0, 'the overflow to be reported');
      expect(errors).toEqual(['ENOBUFS']);
      execFileSync('ip', ['-n', ns.name, 'addr', 'add', '10.9.255.1/32', 'dev', 'lo']);
      await waitFor(() => sawLast, 'the notification after the overflow');
      expect(messages).toBeGreaterThan(0);
      expect(errors).toEqual(['ENOBUFS']);
    } finally {
      sock.close();
      rmSync(dir, { recursive: true, force: true });
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
