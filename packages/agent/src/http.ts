import { createServer, type Server } from 'node:http';
import { Counter, Gauge, Registry } from 'prom-client';

/** What the HTTP endpoints read from the daemon. */
export interface DaemonStatus {
  ready(): { ready: boolean; reason: string };
  leaseExpiresAt(): number | undefined;
  remoteNodes(): number;
  counters():
    | {
        txPackets: number;
        txBytes: number;
        rxPackets: number;
        rxBytes: number;
        drops: Record<string, number>;
      }
    | undefined;
}

function listen(server: Server, ip: string, port: number): Promise<Server> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, ip, () => resolve(server));
  });
}

/** GET /healthz: the process is alive. GET /readyz: 503 until the lease is held, subnet.env written and the backend forwarding. */
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

/** GET /metrics: lease expiry, remote nodes, and the dataplane's counters, for Prometheus. */
export function startMetricsServer(
  ip: string,
  port: number,
  status: DaemonStatus,
): Promise<Server> {
  const registry = new Registry();
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
  const counter = (
    name: string,
    help: string,
    label: string,
    read: (c: NonNullable<ReturnType<DaemonStatus['counters']>>) => Record<string, number>,
  ) =>
    new Counter({
      name,
      help,
      labelNames: [label],
      registers: [registry],
      collect() {
        const c = status.counters();
        if (!c) return;
        this.reset();
        for (const [k, v] of Object.entries(read(c))) this.inc({ [label]: k }, v);
      },
    });
  counter(
    'weft_dataplane_packets_total',
    'Packets forwarded by the userspace dataplane',
    'direction',
    (c) => ({ tx: c.txPackets, rx: c.rxPackets }),
  );
  counter(
    'weft_dataplane_bytes_total',
    'Bytes forwarded by the userspace dataplane',
    'direction',
    (c) => ({ tx: c.txBytes, rx: c.rxBytes }),
  );
  counter(
    'weft_dataplane_drops_total',
    'Packets the userspace dataplane dropped, by reason',
    'reason',
    (c) => c.drops,
  );
  const server = createServer((req, res) => {
    if (req.url !== '/metrics') {
      res.writeHead(404).end();
      return;
    }
    registry.metrics().then(
      (text) => res.writeHead(200, { 'content-type': registry.contentType }).end(text),
      (err: Error) => res.writeHead(500).end(err.message),
    );
  });
  return listen(server, ip, port);
}
