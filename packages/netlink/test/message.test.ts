import { describe, expect, it } from 'vitest';
import {
  Attrs,
  attr,
  buildMessage,
  type NetlinkTransport,
  NlmFlag,
  netlinkError,
  parseMessages,
  RtmType,
  Rtnl,
} from '../src/index.js';

/** A kernel stand-in: `reply(request)` gives the datagrams to answer each request with. */
function fakeKernel(reply: (request: Buffer) => Buffer[]): Rtnl {
  let deliver: ((d: Buffer) => void) | undefined;
  const transport: NetlinkTransport = {
    send(message) {
      for (const d of reply(Buffer.from(message))) queueMicrotask(() => deliver?.(d));
    },
    onMessage(cb) {
      deliver = cb;
    },
    close() {},
  };
  return Rtnl.over(transport);
}

/** struct nlmsgerr for `request`: errno, its header echoed, then optional extended-ack TLVs. */
function errorReply(request: Buffer, errno: number, extAckText?: string): Buffer {
  const tlv = extAckText
    ? buildMessage(0, 0, 0, new Uint8Array(0), [attr.string(1, extAckText)]).subarray(16)
    : Buffer.alloc(0);
  const payload = Buffer.concat([Buffer.alloc(4), request.subarray(0, 16), tlv]);
  payload.writeInt32LE(-errno, 0);
  payload.writeUInt32LE(16, 4); // the echoed request is capped to its header
  const flags = extAckText ? NlmFlag.capped | NlmFlag.ackTlvs : 0;
  return buildMessage(2, flags, request.readUInt32LE(8), payload, []);
}

describe('netlink messages', () => {
  it('builds a request the way the kernel lays it out, and parses it back', () => {
    const msg = buildMessage(RtmType.newLink, NlmFlag.request | NlmFlag.ack, 7, Buffer.alloc(16), [
      attr.string(3, 'flannel.1'),
      attr.nested(18, [
        attr.bareString(1, 'vxlan'),
        attr.nested(2, [attr.u32(1, 1), attr.be16(15, 8472)]),
      ]),
    ]);
    // nlmsghdr (16) + ifinfomsg (16) + IFLA_IFNAME "flannel.1\0" (4+10, padded to 16) + linkinfo.
    expect(msg.readUInt32LE(0)).toBe(msg.length);
    expect(msg.length % 4).toBe(0);
    expect(msg.readUInt16LE(32)).toBe(14);
    expect(msg.readUInt16LE(34)).toBe(3);
    expect(msg.subarray(36, 46).toString()).toBe('flannel.1\0');
    const [m] = parseMessages(msg);
    expect(m).toMatchObject({ type: RtmType.newLink, seq: 7 });
    const a = new Attrs(m.payload, 16);
    expect(a.string(3)).toBe('flannel.1');
    const info = a.nested(18)!;
    expect(info.string(1)).toBe('vxlan');
    expect(info.list[1].nested).toBe(true);
    expect(info.nested(2)!.u32(1)).toBe(1);
    expect(info.nested(2)!.be16(15)).toBe(8472);
  });

  it('refuses a datagram whose length lies, and stops at an attribute that overruns', () => {
    const msg = buildMessage(RtmType.newLink, 0, 1, Buffer.alloc(16), [attr.u32(4, 1500)]);
    msg.writeUInt32LE(msg.length + 8, 0);
    expect(() => parseMessages(msg)).toThrow(
      expect.objectContaining({
        code: 'ERR_NETLINK_MALFORMED',
        message: expect.stringMatching(/claims 48 bytes; 40 remain/),
      }),
    );
    const attrs = Buffer.from([8, 0, 4, 0, 0xdc, 5, 0, 0, 200, 0, 3, 0, 1, 2]);
    expect(new Attrs(attrs).list.map((x) => x.type)).toEqual([4]);
  });

  it('names errnos as Linux does (95 is EOPNOTSUPP: what an unknown link kind gets) and says EPERM needs CAP_NET_ADMIN', () => {
    expect(netlinkError('RTM_NEWLINK flannel.1', 95)).toMatchObject({
      code: 'ERR_NETLINK_EOPNOTSUPP',
      message: 'RTM_NEWLINK flannel.1: Operation not supported (EOPNOTSUPP)',
    });
    expect(netlinkError('RTM_NEWLINK flannel.1', 1).message).toBe(
      'RTM_NEWLINK flannel.1: Operation not permitted (EPERM): needs CAP_NET_ADMIN (run as root)',
    );
    expect(netlinkError('RTM_NEWLINK x', 4242).code).toBe('ERR_NETLINK_E4242');
  });
});

describe('Rtnl over a misbehaving kernel', () => {
  it("carries the kernel's extended-ack text into the error", async () => {
    const nl = fakeKernel((req) => [errorReply(req, 22, 'VXLAN: invalid port')]);
    await expect(nl.deleteLink(3)).rejects.toThrow(
      expect.objectContaining({
        code: 'ERR_NETLINK_EINVAL',
        message: 'RTM_DELLINK index 3: Invalid argument (EINVAL): VXLAN: invalid port',
      }),
    );
  });

  it('a truncated NLMSG_ERROR, a lying datagram or a short dump entry rejects with ERR_NETLINK_MALFORMED, never hangs or throws', async () => {
    const short = fakeKernel((req) => {
      const d = Buffer.alloc(18); // an NLMSG_ERROR with 2 of its 4 errno bytes
      d.writeUInt32LE(18, 0);
      d.writeUInt16LE(2, 4);
      d.writeUInt32LE(req.readUInt32LE(8), 8);
      return [d];
    });
    await expect(short.deleteLink(3)).rejects.toThrow(
      expect.objectContaining({ code: 'ERR_NETLINK_MALFORMED' }),
    );

    const lying = fakeKernel(() => {
      const d = Buffer.alloc(20);
      d.writeUInt32LE(400, 0);
      return [d];
    });
    await expect(lying.links()).rejects.toThrow(
      expect.objectContaining({ code: 'ERR_NETLINK_MALFORMED' }),
    );

    const shortLink = fakeKernel((req) => {
      const seq = req.readUInt32LE(8);
      return [
        Buffer.concat([
          buildMessage(RtmType.newLink, NlmFlag.multi, seq, Buffer.alloc(6), []),
          buildMessage(3, NlmFlag.multi, seq, Buffer.alloc(4), []), // NLMSG_DONE
        ]),
      ];
    });
    await expect(shortLink.links()).rejects.toThrow(
      expect.objectContaining({
        code: 'ERR_NETLINK_MALFORMED',
        message: expect.stringMatching(/^link reply of 8 bytes/),
      }),
    );
  });
});
