import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import type { Server } from 'node:http';
import { type Cidr4, formatCidr, formatMac, randomMac, WeftError } from '@weft/core';
import { loadOrCreateKeyFile } from '@weft/dataplane';
import { Rtnl, RtnType } from '@weft/netlink';
import {
  EmbeddedStore,
  EtcdStore,
  type NetworkConfig,
  previousSubnets,
  readSubnetEnv,
  SubnetManager,
  type SubnetStore,
  subnetEnvText,
  vxlanLeaseData,
  writeSubnetEnv,
} from '@weft/subnet';
import type { Logger as PinoLogger } from 'pino';
import { BRING_UP, type Dataplane } from './dataplane.js';
import type { Options } from './flags.js';
import { type DaemonStatus, startHealthServer, startMetricsServer } from './http.js';
import { type RemoteNode, vtepAddress } from './kernel.js';
import { LeaseKeeper } from './lease-keeper.js';
import { type TrafficRules, trafficRules } from './traffic.js';
import { findUnderlay } from './underlay.js';
import { type WireguardContext, wireguardLeaseData } from './wireguard.js';

/** The `code` of each WeftError weftd's start fails with (besides its packages' own). */
export const DaemonErrorCode = {
  /** No usable underlay interface (--iface, --iface-regex, --iface-can-reach, --public-ip). */
  iface: 'ERR_WEFTD_IFACE',
  /** The backend cannot run with this network config or on this node. */
  backend: 'ERR_WEFTD_BACKEND',
  /** Declared, but nothing throws it today: a subnet lost to another node makes weftd exit 1. */
  leaseLost: 'ERR_WEFTD_LEASE_LOST',
} as const;

function readOrNull(path: string): string | null {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return null;
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The store the flags name: etcd with every TLS and auth flag, or the embedded file. */
export function openStore(o: Options): SubnetStore {
  if (o.store === 'etcd')
    return new EtcdStore({
      endpoints: o.etcdEndpoints,
      prefix: o.etcdPrefix,
      caFile: o.etcdCafile,
      certFile: o.etcdCertfile,
      keyFile: o.etcdKeyfile,
      username: o.etcdUsername,
      password: o.etcdPassword,
    });
  return new EmbeddedStore(o.storePath);
}

/**
 * weftd's work: lease a subnet, bring the dataplane up, write subnet.env, and keep the node's
 * forwarding state in step with every other node's lease (and with what the kernel holds) for as
 * long as it runs.
 */
export class Daemon {
  private store: SubnetStore | undefined;
  private manager: SubnetManager | undefined;
  private nl: Rtnl | undefined;
  private keeper: LeaseKeeper | undefined;
  private dataplane: Dataplane | undefined;
  private traffic: TrafficRules | undefined;
  private backendType: 'udp' | 'vxlan' | 'wireguard' | 'host-gw' | 'alloc' = 'vxlan';
  /** wireguard: this node's key pair (kept in the key file) and ports. */
  private wireguard: WireguardContext | undefined;
  private wireguardPort = 51820;
  private vni = 1;
  private servers: Server[] = [];
  private timers: NodeJS.Timeout[] = [];
  private subnetFileWritten = false;
  /** subnet.env as it was before this run wrote it (null: there was none), to put back on a failed start. */
  private subnetFileBefore: string | null | undefined;
  private synced = false;
  private remoteCount = 0;
  private syncing = false;
  private dirty = false;
  private stopped = false;
  private readonly skippedKeys = new Set<string>();

  constructor(
    readonly options: Options,
    private readonly log: PinoLogger,
  ) {}

  readonly status: DaemonStatus = {
    ready: () => {
      const lost = this.keeper?.lostReason;
      if (lost) return { ready: false, reason: lost };
      if (!this.keeper?.lease) return { ready: false, reason: 'no lease yet' };
      if (!this.dataplane) return { ready: false, reason: 'the dataplane is not up yet' };
      const health = this.dataplane.health();
      if (!health.ok) return { ready: false, reason: health.reason };
      if (!this.subnetFileWritten) return { ready: false, reason: 'subnet.env not written yet' };
      if (!this.synced)
        return { ready: false, reason: "the other nodes' leases are not programmed yet" };
      return { ready: true, reason: '' };
    },
    leaseExpiresAt: () => this.keeper?.lease?.expiresAt,
    remoteNodes: () => this.remoteCount,
    counters: () => this.dataplane?.counters(),
    repairs: () => this.dataplane?.repairs,
    mode: () => this.dataplane?.mode,
  };

  /** Reads the network config, retrying with backoff while the store cannot be reached. */
  private async networkConfig(): Promise<NetworkConfig> {
    let wait = 500;
    for (;;) {
      try {
        return await this.manager!.getNetworkConfig();
      } catch (err) {
        if (!(err instanceof WeftError) || err.code !== 'ERR_STORE_UNAVAILABLE' || this.stopped)
          throw err;
        this.log.warn(
          { store: this.store!.description, err: err.message, retryInMs: wait },
          'the store cannot be reached; retrying',
        );
        await sleep(wait);
        wait = Math.min(wait * 2, 10_000);
      }
    }
  }

  /**
   * Opens the store and the health and metrics servers, picks the underlay, acquires the lease,
   * brings the dataplane up, sets the traffic rules, writes subnet.env, then keeps all of it in
   * step until stop(). On a rejection call abort(): it undoes what this run created.
   */
  async start(): Promise<void> {
    const o = this.options;
    if (o.store === 'embedded')
      this.log.info(
        { store: o.storePath },
        `using the embedded store ${o.storePath}: it serves the nodes of one host; nodes on several hosts need etcd (--etcd-endpoints)`,
      );
    this.store = openStore(o);
    this.manager = new SubnetManager(this.store, {
      logger: this.log,
      leaseTtlSeconds: o.leaseTtlSeconds,
      renewMarginSeconds: Math.min(o.renewMarginMinutes * 60, Math.floor(o.leaseTtlSeconds / 2)),
    });
    if (o.healthzPort)
      this.servers.push(await startHealthServer(o.healthzIp, o.healthzPort, this.status));
    if (o.metricsPort)
      this.servers.push(await startMetricsServer(o.healthzIp, o.metricsPort, this.status));
    this.nl = Rtnl.open();
    const config = await this.networkConfig();
    if (!config.network)
      throw new WeftError(
        DaemonErrorCode.backend,
        'the network config has no IPv4 Network; weftd needs one',
      );
    const network = config.network;
    const underlay = await findUnderlay(this.nl, o, this.log);
    this.backendType = o.backendType ?? config.backend.type;
    const vx = config.backend.type === 'vxlan' ? config.backend : undefined;
    this.vni = vx?.vni ?? 1;
    this.log.info(
      {
        store: this.store.description,
        network: formatCidr(network),
        backend: this.backendType,
        iface: underlay.iface.name,
        publicIp: underlay.publicIp,
        rules: config.enableNftables ? 'nftables' : 'iptables',
      },
      'starting',
    );
    if (o.publicIpv6 && !config.enableIpv6)
      this.log.info(
        { publicIpv6: o.publicIpv6 },
        '--public-ipv6 is not used: the network config does not enable IPv6',
      );

    // The VTEP MAC survives restarts: it is read back from this node's lease when there is one.
    const existing = await this.manager.leaseFor(underlay.publicIp);
    const vtepMac = (existing && vxlanLeaseData(existing.attrs)?.vtepMac) ?? formatMac(randomMac());
    if (this.backendType === 'wireguard') {
      // flannel keeps the key in /run/flannel/wgkey ($WIREGUARD_KEY_FILE): made once, read back after.
      const keyFile = process.env.WIREGUARD_KEY_FILE || '/run/flannel/wgkey';
      const keys = loadOrCreateKeyFile(keyFile);
      if (keys.narrowedFrom !== undefined)
        this.log.warn(
          { keyFile, mode: keys.narrowedFrom.toString(8) },
          'the WireGuard key file was readable by others; its mode is now 0600',
        );
      this.log.info(
        { keyFile, publicKey: keys.publicKey },
        keys.created ? 'WireGuard key pair made' : 'WireGuard key pair read back',
      );
      this.wireguard = {
        privateKey: keys.privateKey,
        publicKey: keys.publicKey,
        mode: o.wireguardMode,
      };
      this.wireguardPort = config.backend.type === 'wireguard' ? config.backend.listenPort : 51820;
    }
    const attrs =
      this.backendType === 'vxlan'
        ? {
            publicIp: underlay.publicIp,
            backendType: 'vxlan',
            backendData: { VNI: this.vni, VtepMAC: vtepMac },
          }
        : this.backendType === 'wireguard'
          ? {
              publicIp: underlay.publicIp,
              backendType: 'wireguard',
              // flannel's wireguardLeaseAttrs: the key peers need, and the port to reach us on.
              backendData: { PublicKey: this.wireguard!.publicKey, Port: this.wireguardPort },
            }
          : { publicIp: underlay.publicIp, backendType: this.backendType };
    const previous = previousSubnets(readSubnetEnv(o.subnetFile));
    this.keeper = new LeaseKeeper(this.manager, this.log);
    const lease = await this.keeper.acquire(attrs, previous.subnet, existing !== undefined);
    this.log.info(
      {
        subnet: lease.subnet,
        expiresAt: lease.expiresAt,
        vtepMac: this.backendType === 'vxlan' ? vtepMac : undefined,
      },
      'lease acquired',
    );

    this.dataplane = await BRING_UP[this.backendType]({
      nl: this.nl,
      log: this.log,
      config,
      network,
      underlay,
      nodeAddress: vtepAddress(lease.subnet),
      vtepMac,
      vni: this.vni,
      vxlanMode: o.vxlanMode,
      wireguard: this.wireguard,
    });
    await this.setUpTrafficRules(config, network, lease.subnet);

    this.subnetFileBefore = readOrNull(o.subnetFile);
    const mtu = this.dataplane.mtu;
    writeSubnetEnv(o.subnetFile, subnetEnvText(config, lease, mtu, o.ipMasq));
    this.subnetFileWritten = true;
    this.log.info({ path: o.subnetFile, mtu }, 'subnet.env written');

    this.keeper.start({
      onLeases: () => this.scheduleSync(),
      onSubnetTaken: (was, now) => {
        this.log.error(
          { was, now },
          'the subnet went to another node: exiting so that a restart reconfigures this node',
        );
        process.exitCode = 1;
        void this.stop();
      },
    });
    // A full check now and then: what a missed notification hid is found within --resync seconds.
    this.every(o.resyncSeconds, () => {
      this.log.debug({}, 'resync: checking the forwarding state');
      this.scheduleSync();
    });
  }

  private every(seconds: number, fn: () => void): void {
    const t = setInterval(fn, seconds * 1000);
    t.unref();
    this.timers.push(t);
  }

  /** --ip-masq, the FORWARD accepts and --ip-blackhole-route, kept in place every --iptables-resync. */
  private async setUpTrafficRules(
    config: NetworkConfig,
    network: Cidr4,
    subnet: string,
  ): Promise<void> {
    const o = this.options;
    const kind = config.enableNftables ? 'nftables' : 'iptables';
    const masq = o.ipMasq
      ? { network: formatCidr(network), subnet, fullyRandom: !o.ipMasqFullyRandomDisable }
      : undefined;
    const forward = o.iptablesForwardRules ? formatCidr(network) : undefined;
    if (masq || forward) {
      this.traffic = trafficRules(kind, masq, forward);
      await this.traffic.cleanUpOther().catch(() => undefined);
      try {
        await this.traffic.ensure();
        this.log.info(
          { rules: kind, masquerade: masq !== undefined, forward: forward !== undefined },
          `${kind}: ${[masq && 'masquerade', forward && 'forward'].filter(Boolean).join(' and ')} rules in place`,
        );
      } catch (err) {
        // flannel: masquerading that cannot be set up is fatal, forward rules are logged.
        if (masq) throw err;
        const message = (err as Error).message;
        this.log.error({ err: message }, 'the forward rules could not be set up');
        // Without the tool there is nothing to check every few seconds: said once is enough.
        if (/needs (iptables|nft): install it/.test(message)) return this.blackhole(subnet);
      }
      this.every(o.iptablesResyncSeconds, () => {
        void this.traffic?.ensure().then(
          (repaired) => {
            if (repaired)
              this.log.warn({ rules: kind }, 'some traffic rules were missing; put back');
            else this.log.debug({ rules: kind }, 'traffic rules checked');
          },
          (err: Error) => this.log.error({ err: err.message }, 'checking the traffic rules failed'),
        );
      });
    }
    await this.blackhole(subnet);
  }

  /** --ip-blackhole-route, checked every --iptables-resync seconds as flannel does. */
  private async blackhole(subnet: string): Promise<void> {
    const o = this.options;
    if (o.ipBlackholeRoute) {
      const nl = this.nl!;
      // flannel's AddBlackholeV4Route: added when missing, never replacing a route for the subnet
      // another owner has (a bridge's): that one fails, and is said so.
      const ensure = async () => {
        const have = (await nl.routes({ family: 4 })).some(
          (r) => r.type === RtnType.blackhole && r.dst === subnet,
        );
        if (!have) await nl.addRoute({ dst: subnet, type: RtnType.blackhole });
        return !have;
      };
      await ensure().then(
        () => this.log.info({ subnet }, 'blackhole route for this subnet in place'),
        (err: Error) =>
          this.log.error({ err: err.message }, 'the blackhole route could not be added'),
      );
      this.every(o.iptablesResyncSeconds, () => {
        void ensure().then(
          (added) =>
            added && this.log.warn({ subnet }, 'the blackhole route was missing; put back'),
          (err: Error) =>
            this.log.error({ err: err.message }, 'checking the blackhole route failed'),
        );
      });
    }
  }

  /** The remote nodes this node forwards to: leases of its own backend type (and VNI). */
  private remoteNodes(): RemoteNode[] {
    const nodes: RemoteNode[] = [];
    for (const l of this.keeper?.leases() ?? []) {
      if (l.attrs.backendType !== this.backendType) {
        if (!this.skippedKeys.has(l.key)) {
          this.skippedKeys.add(l.key);
          this.log.info(
            { subnet: l.subnet, backend: l.attrs.backendType },
            `not forwarding to a ${l.attrs.backendType} node: a ${this.backendType} node reaches only ${this.backendType} nodes`,
          );
        }
        continue;
      }
      if (this.backendType === 'wireguard') {
        const wg = wireguardLeaseData(l.attrs.backendData);
        if (!wg) {
          if (!this.skippedKeys.has(l.key)) {
            this.skippedKeys.add(l.key);
            this.log.warn(
              { subnet: l.subnet },
              'skipping a wireguard lease without a PublicKey in its BackendData',
            );
          }
          continue;
        }
        // flannel: a lease without a Port (an older flannel) is reached on our own port.
        nodes.push({
          key: l.key,
          subnet: l.subnet,
          publicIp: l.attrs.publicIp,
          publicKey: wg.publicKey,
          port: wg.port || this.wireguardPort,
        });
        continue;
      }
      const data = vxlanLeaseData(l.attrs);
      if (this.backendType === 'vxlan' && (!data || data.vni !== this.vni)) {
        if (!this.skippedKeys.has(l.key)) {
          this.skippedKeys.add(l.key);
          this.log.warn(
            { subnet: l.subnet },
            `skipping a vxlan lease without VtepMAC or with another VNI than ${this.vni}`,
          );
        }
        continue;
      }
      nodes.push({
        key: l.key,
        subnet: l.subnet,
        publicIp: l.attrs.publicIp,
        vtepMac: data?.vtepMac,
      });
    }
    return nodes;
  }

  /** Serialises syncs: events during one make one more run afterwards. */
  private scheduleSync(): void {
    this.dirty = true;
    if (this.syncing) return;
    this.syncing = true;
    void (async () => {
      while (this.dirty && !this.stopped) {
        this.dirty = false;
        try {
          await this.sync();
        } catch (err) {
          this.log.error(
            { err: (err as Error).message },
            'programming the forwarding state failed; retrying in 1 s',
          );
          await sleep(1000);
          this.dirty = true;
        }
      }
      this.syncing = false;
    })();
  }

  private async sync(): Promise<void> {
    const nodes = this.remoteNodes();
    this.remoteCount = nodes.length;
    const r = await this.dataplane!.sync(nodes);
    if (r.added || r.removed)
      this.log.info(
        { ...r, mode: this.dataplane!.mode, nodes: nodes.length },
        this.synced ? 'forwarding state reconciled' : 'forwarding state programmed',
      );
    else this.log.debug({ nodes: nodes.length }, 'forwarding state checked: nothing to change');
    if (!this.synced) {
      this.synced = true;
      this.log.info(
        {
          subnet: this.keeper?.lease?.subnet,
          mode: this.dataplane!.mode,
          remoteNodes: nodes.length,
        },
        'ready',
      );
    }
  }

  /** After a failed start: undo what this run created, so nothing is left half-configured. */
  async abort(): Promise<void> {
    this.stopped = true;
    for (const t of this.timers) clearInterval(t);
    await this.dataplane?.close({ undo: true });
    if (this.keeper?.createdThisRun) {
      await this.keeper.stop(true);
      // A subnet.env naming a lease given back would mislead the CNI plugin.
      if (this.subnetFileBefore !== undefined) {
        if (this.subnetFileBefore === null) rmSync(this.options.subnetFile, { force: true });
        else writeFileSync(this.options.subnetFile, this.subnetFileBefore);
      }
    } else await this.keeper?.stop(false);
    await this.close();
  }

  /** SIGTERM: stop forwarding; leave the lease to expire (flannel's way) unless --release-on-exit. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    for (const t of this.timers) clearInterval(t);
    await this.dataplane?.close();
    await this.keeper?.stop(this.options.releaseOnExit);
    await this.close();
    this.log.info({}, 'stopped');
  }

  private async close(): Promise<void> {
    for (const s of this.servers) s.close();
    this.nl?.close();
    await this.store?.close();
  }
}
