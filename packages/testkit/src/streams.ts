import type { ChildProcess } from 'node:child_process';
import type { Netns } from './netns.js';

/** Lines from a child's stdout, as they come. */
function lines(child: ChildProcess, onLine: (line: string) => void): void {
  let partial = '';
  child.stdout?.on('data', (d: Buffer) => {
    partial += d.toString();
    const all = partial.split('\n');
    partial = all.pop() ?? '';
    for (const l of all) onLine(l);
  });
}

/** A ping stream's outcome: which probes got an answer, and when each was sent. */
export interface PingStream {
  /** Sequence numbers answered. */
  readonly answered: Set<number>;
  /** Highest sequence number sent so far (seen answered or reported unanswered). */
  sent(): number;
  /** When probe `seq` was sent (ms since the epoch), from the answers' timestamps around it. */
  sentAt(seq: number): number;
  /** Probes a second, as measured. */
  rate(): number;
  /**
   * Stops (SIGINT) after waiting `tailMs` for late answers; returns the lost sequence numbers
   * among those sent at least `tailMs` before the stop.
   */
  stop(tailMs?: number): Promise<{ sent: number; lost: number[] }>;
}

/**
 * At least 100 probes a second (`ping -i 0.008`, as root: ping's timer makes -i 0.01 nearer 60)
 * from `ns` to `ip`, for as long as a scenario runs; answers are read per sequence number with
 * their timestamps (-D), so a gap says when traffic stopped and for how long.
 */
export function pingStream(ns: Netns, ip: string, intervalMs = 8): PingStream {
  const child = ns.spawn([
    'ping',
    '-n',
    '-D',
    '-O',
    '-W',
    '1',
    '-i',
    String(intervalMs / 1000),
    ip,
  ]);
  const started = Date.now();
  const answered = new Set<number>();
  const times = new Map<number, number>();
  let highest = 0;
  lines(child, (l) => {
    const m = /^\[(\d+\.\d+)\].*icmp_seq=(\d+)/.exec(l);
    if (!m) return;
    const seq = Number(m[2]);
    highest = Math.max(highest, seq);
    times.set(seq, Number(m[1]) * 1000);
    if (/bytes from/.test(l)) answered.add(seq);
  });
  const sentAt = (seq: number) => {
    const exact = answered.has(seq) ? times.get(seq) : undefined;
    if (exact !== undefined) return exact;
    let lo = seq - 1;
    while (lo > 0 && !answered.has(lo)) lo--;
    let hi = seq + 1;
    while (hi <= highest && !answered.has(hi)) hi++;
    const tl = times.get(lo);
    const th = times.get(hi);
    if (tl !== undefined && th !== undefined) return tl + ((th - tl) * (seq - lo)) / (hi - lo);
    return started + (seq - 1) * intervalMs;
  };
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  return {
    answered,
    sent: () => highest,
    sentAt,
    rate: () => {
      const lo = Math.min(...answered);
      const hi = Math.max(...answered);
      const span = (times.get(hi) ?? 0) - (times.get(lo) ?? 0);
      return span > 0 ? ((hi - lo) * 1000) / span : 0;
    },
    async stop(tailMs = 1000) {
      const last = highest;
      await new Promise((r) => setTimeout(r, tailMs));
      child.kill('SIGINT');
      await exited;
      const lost: number[] = [];
      for (let s = 1; s <= last; s++) if (!answered.has(s)) lost.push(s);
      return { sent: last, lost };
    },
  };
}

/** One /readyz answer. */
export interface ReadyzSample {
  /** ms since the epoch, when the answer came. */
  at: number;
  /** HTTP status, or 0 when nothing answered (the daemon not running). */
  status: number;
  body: string;
}

/** /readyz polled from inside `ns` every `intervalMs` by one long-running process. */
export interface ReadyzPoller {
  readonly samples: ReadyzSample[];
  stop(): Promise<void>;
}

export function pollReadyz(ns: Netns, url: string, intervalMs = 50): ReadyzPoller {
  const script = `
    const url = ${JSON.stringify(url)};
    const tick = async () => {
      let status = 0, body = '';
      try { const r = await fetch(url, { signal: AbortSignal.timeout(1000) }); status = r.status; body = await r.text(); }
      catch (e) { body = String(e.cause?.code ?? e.message); }
      process.stdout.write(JSON.stringify({ at: Date.now(), status, body: body.trim() }) + '\\n');
      setTimeout(tick, ${intervalMs});
    };
    tick();`;
  const child = ns.spawn([process.execPath, '-e', script]);
  const samples: ReadyzSample[] = [];
  lines(child, (l) => {
    try {
      samples.push(JSON.parse(l) as ReadyzSample);
    } catch {}
  });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  return {
    samples,
    async stop() {
      child.kill('SIGTERM');
      await exited;
    },
  };
}
