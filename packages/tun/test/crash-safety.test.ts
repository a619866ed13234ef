import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

/**
 * Each abuse case runs in its own process (test/fixtures/abuse.mjs, against the built package and
 * the addon's own binding), so a crash fails one test instead of the run: the case must print
 * what happened and the process must exit by itself with status 0. A signal (SIGSEGV, SIGABRT)
 * or a hang (the process still alive after 10 s, e.g. a poll left armed) fails it. Every case
 * here crashed, hung or wrote into memory it did not own before the addon checked its input.
 */
const script = fileURLToPath(new URL('./fixtures/abuse.mjs', import.meta.url));

interface Outcome {
  status: number | null;
  signal: NodeJS.Signals | null;
  hung: boolean;
  stdout: string;
  stderr: string;
}

function run(name: string): Promise<Outcome> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [script, name], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let hung = false;
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
    });
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    const timer = setTimeout(() => {
      hung = true;
      child.kill('SIGKILL');
    }, 10_000);
    child.once('exit', (status, signal) => {
      clearTimeout(timer);
      resolve({ status, signal: hung ? null : signal, hung, stdout, stderr });
    });
  });
}

const weft = (code: string) => ({ name: 'WeftError', code });
const type = { name: 'TypeError' };
const range = { name: 'RangeError' };
const EFAULT = 14;

/** What each case must print. */
const expected: Record<string, unknown> = {
  'attachSlab of a small buffer over the read ring': {
    refused: weft('ERR_TUN_BAD_OPTION'),
    got: 64,
  },
  'attachSlab of memory allocSlab did not make': {
    pooled: weft('ERR_TUN_BAD_OPTION'),
    view: weft('ERR_TUN_BAD_OPTION'),
    string: weft('ERR_TUN_BAD_OPTION'),
  },
  'a ring slab transferred away': { slabBytes: 4 * 2048, inRing: true, inCopy: false },
  'UdpSocket.open with ports out of range': {
    big: weft('ERR_TUN_BAD_OPTION'),
    negative: weft('ERR_TUN_BAD_OPTION'),
    fraction: weft('ERR_TUN_BAD_OPTION'),
    text: weft('ERR_TUN_BAD_OPTION'),
  },
  'NetlinkSocket.send of an array': weft('ERR_TUN_BAD_OPTION'),
  'startReading with a callback that is not a function': weft('ERR_TUN_BAD_OPTION'),
  'TunDevice.open with options of the wrong type': {
    name: weft('ERR_TUN_BAD_OPTION'),
    mode: weft('ERR_TUN_BAD_OPTION'),
    queues: weft('ERR_TUN_BAD_OPTION'),
    options: weft('ERR_TUN_BAD_OPTION'),
  },
  'binding: setReadRing with lengths undefined': type,
  'binding: attachSlab of a small buffer over the read ring': { refused: range, got: 64 },
  'binding: a ring slab transferred away under the reader': {
    heard: [-EFAULT],
    inCopy: false,
    failedErrno: EFAULT,
  },
  'binding: a ring slab shrunk under the reader': { heard: [-EFAULT] },
  'binding: ring arrays sharing one buffer, shrunk under the last of them': { heard: [-EFAULT] },
  'binding: a send slab transferred away': { sent: 1, badDescriptors: 1, packetsSent: 0 },
  'binding: a send table transferred away': type,
  'binding: ifconfig setMac with a string': type,
  'binding: ifconfig addIpv4 without a value': type,
  'binding: ifconfig addRoute4 with a prefix of 33': range,
  'binding: ifconfig with a name that climbs out of /proc/sys': range,
  'binding: ifconfig with a value whose getter throws': { name: 'Error' },
  'binding: new Handle with a string fd': { threw: type, stdinOpen: true },
  'binding: new Handle over stdin': { threw: type, stdinOpen: true },
  'binding: two handles over one fd': type,
  'binding: Handle methods on other objects': {
    plain: type,
    prototype: type,
    primitive: type,
    fd: type,
  },
  'binding: startReading with a callback that is not a function': type,
  'binding: setSendTable and send with wrong types': {
    table: type,
    short: range,
    noTable: { name: 'Error' },
    strings: type,
  },
  'binding: setSendTable with flags of the wrong type or length': {
    array: type,
    wide: type,
    short: range,
  },
  'binding: sumRanges with wrong types and ranges': {
    buf: type,
    ops: type,
    count: range,
    negative: range,
    past: range,
    huge: range,
    detached: type,
    shared: type,
  },
  'binding: open functions with wrong types': {
    tun: type,
    tunFlags: range,
    udpArray: type,
    udpLength: range,
    udpFamily: range,
    udpPort: range,
    netlink: type,
    netlinkGroups: range,
  },
  'binding: options and offloads of the wrong kind or type': {
    unknown: range,
    value: type,
    name: type,
    netlinkOnUdp: range,
    offloadOnUdp: type,
    sendBufferOnUdp: type,
  },
  'binding: sendBuffer of an array': type,
  'binding: a network namespace path that is a FIFO': { name: 'Error', code: 'EINVAL' },
};

describe('crash safety: every abuse case is a clean error in a process that exits normally', () => {
  it('runs every case the fixture has, and only those', async () => {
    const listed = await run('--list');
    expect(JSON.parse(listed.stdout)).toEqual(Object.keys(expected));
  });

  for (const [name, want] of Object.entries(expected)) {
    it(name, async () => {
      const out = await run(name);
      expect({ hung: out.hung, signal: out.signal, stderr: out.stderr }).toEqual({
        hung: false,
        signal: null,
        stderr: '',
      });
      expect(out.status).toBe(0);
      expect(JSON.parse(out.stdout)).toEqual(want);
    });
  }
});
