import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { Counter, collectDefaultMetrics, Gauge, Registry } from 'prom-client';

/** What the HTTP endpoints read from the daemon. */
export interface DaemonStatus {
  /** Whether traffic can flow; when not, why (/readyz answers 503 with the reason). */
  ready(): { ready: boolean; reason: string };
  /** When the lease expires, in ms since the epoch; undefined without one. */
  leaseExpiresAt(): number | undefined;
  /** How many remote nodes are programmed. */
  remoteNodes(): number;
  /** The userspace dataplane's counters snapshot: numbers, and records of numbers (drops). */
  counters(): object | undefined;
  /** Device recreations and entries put back since the start. */
  repairs?(): { device: number; entries: number } | undefined;
  /** The dataplane's mode, once up. */
  mode?(): string | undefined;
}

function listen(server: Server, ip: string, port: number): Promise<Server> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, ip, () => resolve(server));
  });
}

/** GET /healthz: the process is alive. GET /readyz: 503, with the reason, whenever traffic cannot flow. */
export function startHealthServer(ip: string, port: number, status: DaemonStatus): Promise<Server> {
  const server = createServer((req, res) => {
    if (req.url === '/healthz') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
    } else if (req.url === '/readyz') {
      const r = status.ready();
      res
        .writeHead(r.ready ? 200 : 503, { 'content-type': 'text/plain' })
        .end(`${r.ready ? 'ready' : `not ready: ${r.reason}`}\n`);
    } else {
      res.writeHead(404).end();
    }
  });
  return listen(server, ip, port);
}

/** camelCase (the dataplane's names) to snake_case (Prometheus's convention). */
export function snakeCase(name: string): string {
  return name
    .replace(/([a-z0-9])([A-Z])/g, '$1_$2')
    .replace(/([A-Z]+)([A-Z][a-z])/g, '$1_$2')
    .replace(/[^a-zA-Z0-9_]/g, '_')
    .toLowerCase();
}

/** @weft/agent's version, from its package.json ('unknown' if unreadable): `weftd --version`. */
export const VERSION: string = (() => {
  try {
    return JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')).version;
  } catch {
    return 'unknown';
  }
})();

/**
 * GET /metrics, for Prometheus: Node's default process metrics, weft_build_info, readiness, the
 * lease's expiry, remote nodes, repairs, and every counter in the dataplane's snapshot, whatever
 * it holds: txPackets/rxPackets and txBytes/rxBytes as packets and bytes by direction, each record
 * (drops) as one counter labelled by key, and every other number as weft_dataplane_<name>_total;
 * names and label values in snake_case.
 */
export function startMetricsServer(
  ip: string,
  port: number,
  status: DaemonStatus,
): Promise<Server> {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  new Gauge({
    name: 'weft_build_info',
    help: 'weftd build information (always 1)',
    labelNames: ['version', 'nodejs_version'],
    registers: [registry],
  }).set({ version: VERSION, nodejs_version: process.version }, 1);
  new Gauge({
    name: 'weft_ready',
    help: '1 when traffic can flow (what /readyz says), else 0',
    registers: [registry],
    collect() {
      this.set(status.ready().ready ? 1 : 0);
    },
  });
  new Gauge({
    name: 'weft_lease_expiry_timestamp_seconds',
    help: "When this node's subnet lease expires (0: a reservation, or no lease yet)",
    registers: [registry],
    collect() {
      this.set((status.leaseExpiresAt() ?? 0) / 1000);
    },
  });
  new Gauge({
    name: 'weft_remote_nodes',
    help: 'Remote nodes this node forwards to',
    registers: [registry],
    collect() {
      this.set(status.remoteNodes());
    },
  });
  new Counter({
    name: 'weft_dataplane_repairs_total',
    help: 'Self-healing: devices recreated and forwarding entries put back after being removed',
    labelNames: ['what'],
    registers: [registry],
    collect() {
      const r = status.repairs?.();
      this.reset();
      if (!r) return;
      this.inc({ what: 'device' }, r.device);
      this.inc({ what: 'entries' }, r.entries);
    },
  });

  const directions: Record<string, [string, string]> = {
    txPackets: ['packets', 'tx'],
    rxPackets: ['packets', 'rx'],
    txBytes: ['bytes', 'tx'],
    rxBytes: ['bytes', 'rx'],
  };
  const metrics = new Map<string, Counter>();
  const counter = (name: string, help: string, labels: string[]) => {
    let c = metrics.get(name);
    if (!c) {
      c = new Counter({ name, help, labelNames: labels, registers: [registry] });
      metrics.set(name, c);
    }
    return c;
  };
  /** The snapshot as counters; metrics first seen here are registered on the spot. */
  const refresh = () => {
    for (const c of metrics.values()) c.reset();
    const snapshot = status.counters() as Record<string, unknown> | undefined;
    if (!snapshot) return;
    for (const [key, value] of Object.entries(snapshot)) {
      if (typeof value === 'number') {
        const dir = directions[key];
        if (dir)
          counter(
            `weft_dataplane_${dir[0]}_total`,
            `${dir[0] === 'packets' ? 'Packets' : 'Bytes'} forwarded by the userspace dataplane, by direction`,
            ['direction'],
          ).inc({ direction: dir[1] }, value);
        else
          counter(
            `weft_dataplane_${snakeCase(key)}_total`,
            `The userspace dataplane's ${key} counter`,
            [],
          ).inc(value);
      } else if (value && typeof value === 'object') {
        const label = key === 'drops' ? 'reason' : 'kind';
        const c = counter(
          `weft_dataplane_${snakeCase(key)}_total`,
          key === 'drops'
            ? 'Packets the userspace dataplane dropped, by reason'
            : `The userspace dataplane's ${key} counters`,
          [label],
        );
        for (const [k, v] of Object.entries(value))
          if (typeof v === 'number') c.inc({ [label]: snakeCase(k) }, v);
      }
    }
  };
  const server = createServer((req, res) => {
    if (req.url !== '/metrics') {
      res.writeHead(404).end();
      return;
    }
    refresh();
    registry.metrics().then(
      (text) => res.writeHead(200, { 'content-type': registry.contentType }).end(text),
      (err: Error) => res.writeHead(500).end(err.message),
    );
  });
  return listen(server, ip, port);
}
