import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import type { Server } from 'node:http';
import { formatCidr, formatMac, randomMac, WeftError } from '@weft/core';
import { loadOrCreateKeyFile } from '@weft/dataplane';
import { Rtnl, RtnType } from '@weft/netlink';
import {
  EmbeddedStore,
  EtcdStore,
  type Lease,
  type LeaseAttrs,
  type NetworkConfig,
  previousSubnets,
  readSubnetEnv,
  SubnetManager,
  type SubnetStore,
  subnetEnvText,
  vxlanLeaseData,
  vxlanLeaseDataV6,
  writeSubnetEnv,
} from '@weft/subnet';
import type { Logger as PinoLogger } from 'pino';
import { BRING_UP, type Dataplane, type FamilySetup, udpIpv4Only } from './dataplane.js';
import { DaemonErrorCode } from './errors.js';
import type { Options } from './flags.js';
import { type DaemonStatus, startHealthServer, startMetricsServer } from './http.js';
import { type RemoteNode, vtepAddress } from './kernel.js';
import { LeaseKeeper } from './lease-keeper.js';
import { type TrafficRules, trafficRules } from './traffic.js';
import { findUnderlay, waitForIpv6 } from './underlay.js';
import { type WireguardContext, wireguardLeaseData, wireguardOneDevice } from './wireguard.js';

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
  private wireguardPort6 = 51821;
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
  /** The families the network config enables (what the dataplane forwards). */
  private dataplaneFamilies = { ipv4: true, ipv6: false };

  private reportFatal!: (err: WeftError) => void;
  /**
   * Settles when the daemon stops itself because it cannot go on (today: its subnet went to
   * another node while its lease was gone, `ERR_WEFTD_LEASE_LOST`), after it has stopped. weftd
   * exits 1 with it; a program embedding the daemon decides for itself.
   */
  readonly fatal: Promise<WeftError> = new Promise((resolve) => {
    this.reportFatal = resolve;
  });

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
    this.backendType = o.backendType ?? config.backend.type;
    // Before anything is leased or created: a udp node cannot carry IPv6 (flannel's neither).
    if (this.backendType === 'udp' && config.enableIpv6) throw udpIpv4Only();
    // flannel's Mode auto/ipv4/ipv6 carry both families in one device; weftd builds separate ones.
    const wgMode = config.backend.type === 'wireguard' ? config.backend.mode : 'separate';
    if (this.backendType === 'wireguard' && config.enableIpv6 && wgMode !== 'separate')
      throw wireguardOneDevice(wgMode);
    const families = { ipv4: config.enableIpv4, ipv6: config.enableIpv6 };
    this.dataplaneFamilies = families;
    const underlay = await findUnderlay(this.nl, o, this.log, families);
    if (families.ipv6) await waitForIpv6(this.nl, underlay, this.log);
    const vx = config.backend.type === 'vxlan' ? config.backend : undefined;
    this.vni = vx?.vni ?? 1;
    this.log.info(
      {
        store: this.store.description,
        network: config.network ? formatCidr(config.network) : undefined,
        ipv6Network: config.ipv6Network ? formatCidr(config.ipv6Network) : undefined,
        backend: this.backendType,
        iface: underlay.iface.name,
        publicIp: underlay.publicIp,
        publicIpv6: underlay.publicIpv6,
        rules: config.enableNftables ? 'nftables' : 'iptables',
      },
      'starting',
    );
    if (o.publicIpv6 && !config.enableIpv6)
      this.log.info(
        { publicIpv6: o.publicIpv6 },
        '--public-ipv6 is not used: the network config does not enable IPv6',
      );
    if (o.publicIp && !config.enableIpv4)
      this.log.info(
        { publicIp: o.publicIp },
        '--public-ip is not used: the network config is IPv6-only (EnableIPv4 false)',
      );

    // The VTEP MACs survive restarts: they are read back from this node's lease when there is one.
    const existing = await this.manager.leaseFor(underlay.publicIp, underlay.publicIpv6);
    const vtepMac = (existing && vxlanLeaseData(existing.attrs)?.vtepMac) ?? formatMac(randomMac());
    const vtepMac6 =
      (existing && vxlanLeaseDataV6(existing.attrs)?.vtepMac) ?? formatMac(randomMac());
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
      this.wireguardPort6 =
        config.backend.type === 'wireguard' ? config.backend.listenPortV6 : 51821;
    }
    const vxlan = this.backendType === 'vxlan';
    // flannel's newSubnetAttrs: per family its public address and, for vxlan, its device's VNI and MAC.
    const attrs: LeaseAttrs = { backendType: this.backendType };
    if (families.ipv4) {
      attrs.publicIp = underlay.publicIp;
      if (vxlan) attrs.backendData = { VNI: this.vni, VtepMAC: vtepMac };
      // flannel's wireguardLeaseAttrs: the key peers need, and the port to reach us on.
      if (this.wireguard)
        attrs.backendData = { PublicKey: this.wireguard.publicKey, Port: this.wireguardPort };
    }
    if (families.ipv6) {
      attrs.publicIpv6 = underlay.publicIpv6;
      if (vxlan) attrs.backendV6Data = { VNI: this.vni, VtepMAC: vtepMac6 };
      // flannel-wg-v6 has the same key; peers reach it on ListenPortV6.
      if (this.wireguard)
        attrs.backendV6Data = { PublicKey: this.wireguard.publicKey, Port: this.wireguardPort6 };
    }
    const previous = previousSubnets(readSubnetEnv(o.subnetFile));
    this.keeper = new LeaseKeeper(this.manager, this.log);
    const lease = await this.keeper.acquire(attrs, previous, existing !== undefined);
    this.log.info(
      {
        subnet: lease.subnet,
        subnet6: lease.subnet6,
        expiresAt: lease.expiresAt,
        vtepMac: vxlan && families.ipv4 ? vtepMac : undefined,
        vtepMac6: vxlan && families.ipv6 ? vtepMac6 : undefined,
      },
      'lease acquired',
    );

    const setups: FamilySetup[] = [];
    if (families.ipv4)
      setups.push({
        family: 4,
        network: config.network!,
        publicIp: underlay.publicIp!,
        connected: underlay.connected,
        nodeAddress: vtepAddress(leaseSubnet(lease, 4)),
        vtepMac,
      });
    if (families.ipv6)
      setups.push({
        family: 6,
        network: config.ipv6Network!,
        publicIp: underlay.publicIpv6!,
        connected: underlay.connected6,
        nodeAddress: vtepAddress(leaseSubnet(lease, 6)),
        vtepMac: vtepMac6,
      });
    this.dataplane = await BRING_UP[this.backendType]({
      nl: this.nl,
      log: this.log,
      config,
      underlay,
      families: setups,
      vni: this.vni,
      vxlanMode: o.vxlanMode,
      wireguard: this.wireguard,
    });
    await this.setUpTrafficRules(config, lease);

    this.subnetFileBefore = readOrNull(o.subnetFile);
    const mtu = this.dataplane.mtu;
    writeSubnetEnv(o.subnetFile, subnetEnvText(config, lease, mtu, o.ipMasq));
    this.subnetFileWritten = true;
    this.log.info({ path: o.subnetFile, mtu }, 'subnet.env written');

    this.keeper.start({
      onLeases: () => this.scheduleSync(),
      onSubnetTaken: (was, now, why) => {
        this.log.error(
          { was, now, why },
          'the subnet went to another node: stopping so that a restart reconfigures this node',
        );
        const err = new WeftError(
          DaemonErrorCode.leaseLost,
          `${why}, and its subnet ${was} went to another node (the store offered ${now}): restart weftd to take a new subnet, then restart this node's pods, whose addresses are in the old one`,
        );
        void this.stop().then(() => this.reportFatal(err));
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

  /** --ip-masq, the FORWARD accepts and --ip-blackhole-route, per family, kept in place every --iptables-resync. */
  private async setUpTrafficRules(config: NetworkConfig, lease: Lease): Promise<void> {
    const o = this.options;
    const kind = config.enableNftables ? 'nftables' : 'iptables';
    const masqFor = (network: string | undefined, subnet: string | undefined) =>
      o.ipMasq && network && subnet
        ? { network, subnet, fullyRandom: !o.ipMasqFullyRandomDisable }
        : undefined;
    const network4 = config.network ? formatCidr(config.network) : undefined;
    const network6 = config.ipv6Network ? formatCidr(config.ipv6Network) : undefined;
    const masq = masqFor(network4, lease.subnet);
    const masq6 = masqFor(network6, lease.subnet6);
    const forward = o.iptablesForwardRules ? network4 : undefined;
    const forward6 = o.iptablesForwardRules ? network6 : undefined;
    const subnets = [lease.subnet, lease.subnet6].filter((x): x is string => x !== undefined);
    if (masq || masq6 || forward || forward6) {
      this.traffic = trafficRules(kind, masq, forward, { masq: masq6, forward: forward6 });
      await this.traffic.cleanUpOther().catch(() => undefined);
      const what = [(masq || masq6) && 'masquerade', (forward || forward6) && 'forward'].filter(
        Boolean,
      );
      try {
        await this.traffic.ensure();
        this.log.info(
          {
            rules: kind,
            masquerade: masq !== undefined || masq6 !== undefined,
            forward: forward !== undefined || forward6 !== undefined,
            families: [network4 && 'IPv4', network6 && 'IPv6'].filter(Boolean),
          },
          `${kind}: ${what.join(' and ')} rules in place`,
        );
      } catch (err) {
        // flannel: masquerading that cannot be set up is fatal, forward rules are logged.
        if (masq || masq6) throw err;
        const message = (err as Error).message;
        this.log.error({ err: message }, 'the forward rules could not be set up');
        // Without the tool there is nothing to check every few seconds: said once is enough.
        if (/needs (ip6?tables|nft): install it/.test(message)) return this.blackhole(subnets);
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
    await this.blackhole(subnets);
  }

  /** --ip-blackhole-route for each of our subnets, checked every --iptables-resync seconds as flannel does. */
  private async blackhole(subnets: string[]): Promise<void> {
    const o = this.options;
    if (!o.ipBlackholeRoute) return;
    const nl = this.nl!;
    // flannel's AddBlackholeV4Route / AddBlackholeV6Route: added when missing, never replacing a
    // route for the subnet another owner has (a bridge's): that one fails, and is said so.
    const ensure = async (subnet: string) => {
      const family = subnet.includes(':') ? 6 : 4;
      const have = (await nl.routes({ family })).some(
        (r) => r.type === RtnType.blackhole && r.dst === subnet,
      );
      if (!have) await nl.addRoute({ dst: subnet, type: RtnType.blackhole });
      return !have;
    };
    for (const subnet of subnets) {
      await ensure(subnet).then(
        () => this.log.info({ subnet }, 'blackhole route for this subnet in place'),
        (err: Error) =>
          this.log.error({ subnet, err: err.message }, 'the blackhole route could not be added'),
      );
    }
    this.every(o.iptablesResyncSeconds, () => {
      for (const subnet of subnets)
        void ensure(subnet).then(
          (added) =>
            added && this.log.warn({ subnet }, 'the blackhole route was missing; put back'),
          (err: Error) =>
            this.log.error({ subnet, err: err.message }, 'checking the blackhole route failed'),
        );
    });
  }

  /** Says once per lease why it is skipped (in whole or in one family). */
  private skip(key: string, level: 'info' | 'warn', obj: object, msg: string): void {
    const id = `${key} ${msg}`;
    if (this.skippedKeys.has(id)) return;
    this.skippedKeys.add(id);
    this.log[level](obj, msg);
  }

  /**
   * The remote nodes this node forwards to: leases of its own backend type (and VNI), each with
   * the families both it and this node have (vxlan: with that family's VtepMAC).
   */
  private remoteNodes(): RemoteNode[] {
    const nodes: RemoteNode[] = [];
    const config = this.dataplaneFamilies;
    for (const l of this.keeper?.leases() ?? []) {
      const where = { subnet: l.subnet, subnet6: l.subnet6 };
      if (l.attrs.backendType !== this.backendType) {
        this.skip(
          l.key,
          'info',
          { ...where, backend: l.attrs.backendType },
          `not forwarding to a ${l.attrs.backendType} node: a ${this.backendType} node reaches only ${this.backendType} nodes`,
        );
        continue;
      }
      if (this.backendType === 'wireguard') {
        // flannel's handleSubnetEvents, Mode separate: each family with its own BackendData.
        const node: RemoteNode = { key: l.key };
        const wg = wireguardLeaseData(l.attrs.backendData);
        const wg6 = wireguardLeaseData(l.attrs.backendV6Data);
        // flannel: a lease without a Port (an older flannel) is reached on our own port.
        if (config.ipv4 && l.subnet && l.attrs.publicIp && wg)
          Object.assign(node, {
            subnet: l.subnet,
            publicIp: l.attrs.publicIp,
            publicKey: wg.publicKey,
            port: wg.port || this.wireguardPort,
          });
        if (config.ipv6 && l.subnet6 && l.attrs.publicIpv6 && wg6)
          Object.assign(node, {
            subnet6: l.subnet6,
            publicIpv6: l.attrs.publicIpv6,
            publicKey6: wg6.publicKey,
            port6: wg6.port || this.wireguardPort6,
          });
        if (node.subnet || node.subnet6) nodes.push(node);
        else
          this.skip(
            l.key,
            'warn',
            where,
            'skipping a wireguard lease without a PublicKey in its BackendData (BackendV6Data for IPv6) for a family this node has',
          );
        continue;
      }
      const node: RemoteNode = { key: l.key };
      const vxlan = this.backendType === 'vxlan';
      if (config.ipv4 && l.subnet && l.attrs.publicIp) {
        const data = vxlanLeaseData(l.attrs);
        if (vxlan && (!data || data.vni !== this.vni))
          this.skip(
            l.key,
            'warn',
            where,
            `not forwarding IPv4 to a vxlan lease without BackendData.VtepMAC or with another VNI than ${this.vni}`,
          );
        else
          Object.assign(node, {
            subnet: l.subnet,
            publicIp: l.attrs.publicIp,
            vtepMac: data?.vtepMac,
          });
      }
      if (config.ipv6 && l.subnet6 && l.attrs.publicIpv6) {
        const data = vxlanLeaseDataV6(l.attrs);
        if (vxlan && (!data || data.vni !== this.vni))
          this.skip(
            l.key,
            'warn',
            where,
            `not forwarding IPv6 to a vxlan lease without BackendV6Data.VtepMAC or with another VNI than ${this.vni}`,
          );
        else
          Object.assign(node, {
            subnet6: l.subnet6,
            publicIpv6: l.attrs.publicIpv6,
            vtepMac6: data?.vtepMac,
          });
      } else if (config.ipv6 && config.ipv4 && node.subnet)
        this.skip(
          l.key,
          'info',
          where,
          'reaching this node over IPv4 only: its lease has no IPv6 subnet or PublicIPv6',
        );
      if (config.ipv4 && config.ipv6 && node.subnet6 && !node.subnet)
        this.skip(
          l.key,
          'info',
          where,
          'reaching this node over IPv6 only: its lease has no IPv4 subnet or PublicIP',
        );
      if (node.subnet || node.subnet6) nodes.push(node);
      else if (!l.subnet && config.ipv4 && !config.ipv6)
        this.skip(
          l.key,
          'info',
          where,
          'not forwarding to an IPv6-only node: this node is IPv4-only',
        );
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
          subnet6: this.keeper?.lease?.subnet6,
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

/** The lease's subnet of one family (the manager leases one of each family the config enables). */
function leaseSubnet(lease: Lease, family: 4 | 6): string {
  const subnet = family === 4 ? lease.subnet : lease.subnet6;
  if (!subnet)
    throw new WeftError(
      DaemonErrorCode.backend,
      `the lease ${lease.key} has no IPv${family} subnet though the network config enables IPv${family}`,
    );
  return subnet;
}
