import { isWeftError, parseIpv4, type WeftError } from '@weft/core';
import { IpProtocol, ipv4 } from '@weft/encap';
import { createNetns, privileged, sweepNetns, waitFor } from '@weft/testkit';
import { afterAll, describe, expect, it } from 'vitest';
import { type Backend, createBackend, DataplaneErrorCode, UdpBackend } from '../src/index.js';
import { standInBackendIo } from '../src/testing.js';

const TAG = 'dpfault';

describe('a backend reports losing its device or socket', () => {
  it('a failed device read (one negative count) sets fault, tells each listener once, and stops both ways', () => {
    const { queue, socket, io } = standInBackendIo({ port: 8285 });
    const backend = UdpBackend.overIo(io, { network: '10.244.0.0/16', nodeAddress: '10.244.1.0' });
    const seen: WeftError[] = [];
    const other: WeftError[] = [];
    backend.onFault((err) => seen.push(err));
    const off = backend.onFault((err) => other.push(err));
    off();
    expect(backend.fault).toBeUndefined();
    queue.onBatch(-9); // EBADF, as libuv reports a TUN whose device was deleted
    expect(backend.fault?.code).toBe(DataplaneErrorCode.deviceLost);
    expect(backend.fault?.message).toMatch(
      /device stand-in0 is gone \(EBADF.*close this backend and open a new one/,
    );
    expect(seen).toEqual([backend.fault]);
    expect(other).toEqual([]);
    expect(queue.paused && socket.paused).toBe(true);
    queue.onBatch(-9);
    expect(seen).toHaveLength(1);
    backend.close();
  });

  it('a failed socket read is a fault too, with its own code', () => {
    const { socket, io } = standInBackendIo({ port: 8285 });
    const backend = UdpBackend.overIo(io, { network: '10.244.0.0/16', nodeAddress: '10.244.1.0' });
    socket.onBatch(-103);
    expect(backend.fault?.code).toBe(DataplaneErrorCode.socketLost);
    expect(backend.fault?.message).toMatch(/ECONNABORTED/);
    backend.close();
  });

  it('a listener that throws does not keep the others from hearing', async () => {
    const { queue, io } = standInBackendIo({ port: 8285 });
    const backend = UdpBackend.overIo(io, { network: '10.244.0.0/16', nodeAddress: '10.244.1.0' });
    const heard: string[] = [];
    backend.onFault(() => {
      throw new Error('listener bug');
    });
    backend.onFault((e) => heard.push(e.code));
    const uncaught = new Promise<unknown>((resolve) => process.once('uncaughtException', resolve));
    queue.onBatch(-19);
    expect(heard).toEqual([DataplaneErrorCode.deviceLost]);
    expect(((await uncaught) as Error).message).toBe('listener bug');
    expect(() => backend.onFault(undefined as never)).toThrow(TypeError);
    backend.close();
  });
});

describe.skipIf(!privileged('dataplane device-loss tests'))(
  'ip link del under a running backend',
  () => {
    afterAll(() => sweepNetns(TAG));

    for (const [type, offload] of [
      ['udp', true],
      ['udp', false],
      ['vxlan', true],
      ['vxlan', false],
    ] as const) {
      it(`${type}, offloads ${offload ? 'on' : 'off'}: fault is ERR_DATAPLANE_DEVICE_LOST, and later datagrams are neither received nor send errors`, async () => {
        const ns = createNetns(TAG);
        let backend: Backend | undefined;
        try {
          const port = type === 'udp' ? 8285 : 8472;
          backend = createBackend({
            type,
            netns: ns.name,
            deviceName: 'weftgone0',
            network: '10.244.0.0/16',
            nodeAddress: '10.244.1.0',
            vtepAddress: '10.244.1.0',
            port,
            offload,
            dropUnknownSources: false,
          } as Parameters<typeof createBackend>[0]);
          const faults: WeftError[] = [];
          backend.onFault((e) => faults.push(e));
          expect(backend.fault).toBeUndefined();
          await ns.exec(['ip', 'link', 'del', 'weftgone0']);
          await waitFor(() => faults.length > 0, 'the fault');
          expect(isWeftError(backend.fault, DataplaneErrorCode.deviceLost)).toBe(true);
          expect(backend.fault?.message).toMatch(/weftgone0 is gone/);
          const before = backend.counters();
          // What a peer keeps sending after the loss: flannel-udp datagrams to our port.
          const packet = Buffer.alloc(28);
          ipv4.emit(
            {
              src: parseIpv4('10.244.2.5'),
              dst: parseIpv4('10.244.1.7'),
              protocol: IpProtocol.udp,
              ttl: 64,
              payloadLength: 8,
            },
            packet,
          );
          await ns.exec([process.execPath, '-e', SEND, String(port), packet.toString('hex')]);
          await new Promise((r) => setTimeout(r, 200));
          const after = backend.counters();
          expect(after.rxPackets).toBe(before.rxPackets);
          expect(after.drops.sendError).toBe(0);
          expect(faults).toHaveLength(1);
        } finally {
          backend?.close();
          ns.delete();
        }
      });
    }
  },
);

const SEND = `
const dgram = require('node:dgram');
const [port, hex] = process.argv.slice(1);
const s = dgram.createSocket('udp4');
let left = 20;
const next = () => left-- > 0 ? s.send(Buffer.from(hex, 'hex'), Number(port), '127.0.0.1', next) : s.close();
next();
`;
