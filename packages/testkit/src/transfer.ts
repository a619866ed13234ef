import type { Netns } from './netns.js';

/**
 * A TCP transfer between two namespaces that proves the bytes arrived intact: the client sends
 * `bytes` random bytes and the SHA-256 it computed; the server prints the SHA-256 of what it
 * received. Both sides are small Node programs, so nothing beyond Node is needed.
 */
export interface TransferResult {
  bytes: number;
  sentSha256: string;
  receivedSha256: string;
  receivedBytes: number;
  seconds: number;
}

const SERVER = `
const net = require('node:net'); const crypto = require('node:crypto');
const [host, port] = process.argv.slice(1);
const server = net.createServer((s) => {
  const h = crypto.createHash('sha256'); let n = 0;
  s.on('data', (d) => { h.update(d); n += d.length; });
  s.on('end', () => { console.log(JSON.stringify({ sha: h.digest('hex'), bytes: n })); server.close(); });
});
server.listen(Number(port), host, () => console.log('listening'));
`;

const CLIENT = `
const net = require('node:net'); const crypto = require('node:crypto');
const [host, port, total] = process.argv.slice(1);
const h = crypto.createHash('sha256'); let left = Number(total); const t0 = Date.now();
const s = net.connect(Number(port), host, () => {
  const pump = () => {
    while (left > 0) {
      const chunk = crypto.randomBytes(Math.min(left, 65536)); h.update(chunk); left -= chunk.length;
      if (!s.write(chunk)) return s.once('drain', pump);
    }
    s.end(() => console.log(JSON.stringify({ sha: h.digest('hex'), seconds: (Date.now() - t0) / 1000 })));
  };
  pump();
});
s.on('error', (e) => { console.error(e.message); process.exit(1); });
`;

export async function tcpTransfer(
  server: Netns,
  client: Netns,
  address: string,
  port: number,
  bytes: number,
  timeoutMs = 120_000,
): Promise<TransferResult> {
  const srv = server.spawn([process.execPath, '-e', SERVER, address, String(port)]);
  let out = '';
  srv.stdout?.on('data', (d: Buffer) => {
    out += d.toString();
  });
  const listening = new Promise<void>((resolve, reject) => {
    const check = () => (out.includes('listening') ? resolve() : undefined);
    srv.stdout?.on('data', check);
    srv.once('exit', (code) =>
      reject(new Error(`transfer server exited (${code}) before listening`)),
    );
    setTimeout(() => reject(new Error('transfer server did not start')), 10_000);
  });
  await listening;
  try {
    const { stdout } = await client.exec(
      [process.execPath, '-e', CLIENT, address, String(port), String(bytes)],
      { timeoutMs },
    );
    const sent = JSON.parse(stdout.trim().split('\n').pop()!) as { sha: string; seconds: number };
    const received = await new Promise<{ sha: string; bytes: number }>((resolve, reject) => {
      const done = () => {
        const line = out.split('\n').find((l) => l.startsWith('{'));
        if (line) resolve(JSON.parse(line));
      };
      srv.stdout?.on('data', done);
      done();
      setTimeout(() => reject(new Error('transfer server did not report')), 10_000);
    });
    return {
      bytes,
      sentSha256: sent.sha,
      receivedSha256: received.sha,
      receivedBytes: received.bytes,
      seconds: sent.seconds,
    };
  } finally {
    srv.kill('SIGKILL');
  }
}
