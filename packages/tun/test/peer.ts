import type { ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { Netns } from '@weft/testkit';

const script = fileURLToPath(new URL('./fixtures/dgram-peer.mjs', import.meta.url));

/** One line the dgram peer printed: its port, a datagram it received, or how many it sent. */
export interface PeerLine {
  port?: number;
  hex?: string;
  address?: string;
  sent?: number;
}

export interface DgramPeer {
  readonly lines: PeerLine[];
  /** The datagrams received so far. */
  datagrams(): PeerLine[];
  /** Resolves with the bound port (listen mode). */
  port(): Promise<number>;
  /** Resolves with the exit code (send mode exits when done). */
  readonly exited: Promise<number | null>;
  stderr(): string;
  kill(): void;
}

/** Runs test/fixtures/dgram-peer.mjs, a plain node:dgram program, inside `ns`. */
export function startDgramPeer(ns: Netns, args: string[]): DgramPeer {
  const child: ChildProcess = ns.spawn([process.execPath, script, ...args]);
  const lines: PeerLine[] = [];
  let buffered = '';
  let stderr = '';
  child.stdout?.on('data', (d: Buffer) => {
    buffered += d.toString();
    const parts = buffered.split('\n');
    buffered = parts.pop() ?? '';
    for (const l of parts) if (l) lines.push(JSON.parse(l) as PeerLine);
  });
  child.stderr?.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
  return {
    lines,
    datagrams: () => lines.filter((l) => l.hex !== undefined),
    async port() {
      const deadline = Date.now() + 10_000;
      for (;;) {
        const bound = lines.find((l) => l.port !== undefined && l.hex === undefined);
        if (bound?.port !== undefined) return bound.port;
        if (child.exitCode !== null || Date.now() > deadline)
          throw new Error(`the dgram peer did not bind: ${stderr}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    },
    exited,
    stderr: () => stderr,
    kill: () => {
      child.kill('SIGKILL');
    },
  };
}
