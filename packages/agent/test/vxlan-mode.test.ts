import { parseCidr } from '@weft/core';
import { type NetlinkTransport, RtmType, Rtnl } from '@weft/netlink';
import { describe, expect, it } from 'vitest';
import { chooseVxlanMode, KernelVxlan } from '../src/kernel.js';

/**
 * A kernel stand-in that refuses RTM_NEWLINK with `errno` the way a real one does (an NLMSG_ERROR
 * echoing the request's header) and knows no links: what a kernel without the vxlan module, or a
 * process without CAP_NET_ADMIN, answers.
 */
function refusingKernel(newLinkErrno: number): { rtnl: Rtnl; asked: number[] } {
  const asked: number[] = [];
  let deliver: ((d: Buffer) => void) | undefined;
  const transport: NetlinkTransport = {
    send(message) {
      const req = Buffer.from(message);
      const type = req.readUInt16LE(4);
      asked.push(type);
      const errno = type === RtmType.newLink ? newLinkErrno : 19; // ENODEV for any GETLINK
      const reply = Buffer.alloc(36);
      reply.writeUInt32LE(36, 0);
      reply.writeUInt16LE(2, 4); // NLMSG_ERROR
      reply.writeUInt32LE(req.readUInt32LE(8), 8);
      reply.writeInt32LE(-errno, 16);
      req.copy(reply, 20, 0, 16);
      queueMicrotask(() => deliver?.(reply));
    },
    onMessage(cb) {
      deliver = cb;
    },
    close() {},
  };
  return { rtnl: Rtnl.over(transport), asked };
}

function kernelVxlan(rtnl: Rtnl): KernelVxlan {
  return new KernelVxlan(rtnl, {
    name: 'flannel.1',
    vni: 1,
    port: 0,
    publicIp: '198.18.0.11',
    iface: { index: 2, name: 'eth0', flags: 0, up: true, mtu: 1500 },
    mtu: 1450,
    vtepMac: '02:00:00:00:01:01',
    vtepAddress: '10.244.1.0',
    network: parseCidr('10.244.0.0/16') as ReturnType<typeof parseCidr> & { family: 4 },
    gbp: false,
    learning: false,
  });
}

const EOPNOTSUPP = 95;
const EPERM = 1;

describe('--vxlan-mode', () => {
  it('auto: a kernel without VXLAN (EOPNOTSUPP for the link kind) means the userspace VTEP, and says why', async () => {
    const { rtnl, asked } = refusingKernel(EOPNOTSUPP);
    const choice = await chooseVxlanMode('auto', () => kernelVxlan(rtnl).setup());
    expect(asked).toContain(RtmType.newLink);
    expect(choice).toEqual({
      kernel: false,
      reason: expect.stringMatching(
        /^auto: the kernel has no VXLAN \(RTM_NEWLINK flannel\.1: Operation not supported.*\(EOPNOTSUPP\)\)$/,
      ),
    });
  });

  it('kernel: the same refusal is an error, not a silent fallback', async () => {
    const { rtnl } = refusingKernel(EOPNOTSUPP);
    await expect(chooseVxlanMode('kernel', () => kernelVxlan(rtnl).setup())).rejects.toThrow(
      expect.objectContaining({ code: 'ERR_NETLINK_EOPNOTSUPP' }),
    );
  });

  it('auto: a missing privilege stays an error (it is not a kernel without VXLAN)', async () => {
    const { rtnl } = refusingKernel(EPERM);
    await expect(chooseVxlanMode('auto', () => kernelVxlan(rtnl).setup())).rejects.toThrow(
      expect.objectContaining({
        code: 'ERR_NETLINK_EPERM',
        message: expect.stringMatching(/needs CAP_NET_ADMIN/),
      }),
    );
  });

  it('auto with a kernel that has VXLAN, kernel, and userspace (which never touches the kernel)', async () => {
    expect(await chooseVxlanMode('auto', async () => undefined)).toEqual({
      kernel: true,
      reason: 'auto: the kernel has VXLAN',
    });
    expect(await chooseVxlanMode('kernel', async () => undefined)).toEqual({
      kernel: true,
      reason: '--vxlan-mode kernel',
    });
    let called = false;
    expect(
      await chooseVxlanMode('userspace', async () => {
        called = true;
      }),
    ).toEqual({ kernel: false, reason: '--vxlan-mode userspace' });
    expect(called).toBe(false);
  });
});
