import { execFileSync } from 'node:child_process';
import { createBackend } from '@weft/dataplane';

/**
 * Two nodes, one process: a runnable weft overlay between two network namespaces, built with the
 * public API only. Each node gets a userspace VXLAN VTEP configured the way flannel configures
 * flannel.1 (VNI 1, port 8472, a /32 VTEP address, one route/neighbor/FDB set per remote node);
 * then node a pings node b across the overlay. Run as root:
 *
 *   node examples/dist/two-node-overlay.js [udp|vxlan]
 */
const type = (process.argv[2] ?? 'vxlan') as 'udp' | 'vxlan';
const A = `weft-example-a-${process.pid}`;
const B = `weft-example-b-${process.pid}`;
const ip = (...args: string[]) => execFileSync('ip', args, { stdio: 'inherit' });

function cleanup(): void {
  for (const ns of [A, B]) {
    try {
      execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
    } catch {}
  }
}
process.on('exit', cleanup);
process.on('SIGINT', () => process.exit(130));

// The underlay: two namespaces joined by a veth, 198.18.0.1 and 198.18.0.2.
ip('netns', 'add', A);
ip('netns', 'add', B);
ip('link', 'add', 'veth0', 'netns', A, 'type', 'veth', 'peer', 'name', 'veth0', 'netns', B);
for (const [ns, addr] of [
  [A, '198.18.0.1/24'],
  [B, '198.18.0.2/24'],
]) {
  ip('-n', ns, 'addr', 'add', addr, 'dev', 'veth0');
  ip('-n', ns, 'link', 'set', 'veth0', 'up');
  ip('-n', ns, 'link', 'set', 'lo', 'up');
}

const node = (ns: string, me: number) =>
  type === 'udp'
    ? createBackend({
        type,
        netns: ns,
        deviceName: 'flannel0',
        nodeAddress: `10.244.${me}.0`,
        network: '10.244.0.0/16',
        publicIp: `198.18.0.${me}`,
      })
    : createBackend({
        type,
        netns: ns,
        deviceName: 'flannel.1',
        vtepAddress: `10.244.${me}.0`,
        vtepMac: `02:00:00:00:0${me}:01`,
        network: '10.244.0.0/16',
        publicIp: `198.18.0.${me}`,
      });
const a = node(A, 1);
const b = node(B, 2);
a.setNodes([
  { subnet: '10.244.2.0/24', publicIp: '198.18.0.2', vtepMac: '02:00:00:00:02:01', name: 'b' },
]);
b.setNodes([
  { subnet: '10.244.1.0/24', publicIp: '198.18.0.1', vtepMac: '02:00:00:00:01:01', name: 'a' },
]);
console.log(`two ${type} nodes up: a on ${a.deviceName} (MTU ${a.mtu}), b on ${b.deviceName}`);

// ping runs in a child process while this process's event loop forwards the packets.
const { spawn } = await import('node:child_process');
const ping = spawn('ip', ['netns', 'exec', A, 'ping', '-c', '3', '-i', '0.2', '10.244.2.0'], {
  stdio: 'inherit',
});
const code: number = await new Promise((resolve) => ping.once('exit', (c) => resolve(c ?? 1)));
console.log('node a counters:', JSON.stringify(a.counters()));
a.close();
b.close();
process.exitCode = code;
