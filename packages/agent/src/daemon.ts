import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import type { Server } from 'node:http';
import {
  type Cidr4,
  cidrNetwork,
  formatCidr,
  formatMac,
  parseCidr,
  randomMac,
  WeftError,
} from '@weft/core';
import { type Backend, UdpBackend, VxlanBackend } from '@weft/dataplane';
import { type Link, Rtnl } from '@weft/netlink';
import {
  EmbeddedStore,
  EtcdStore,
  type Lease,
  type LeaseWatch,
  type NetworkConfig,
  previousSubnets,
  type RenewalHandle,
  readSubnetEnv,
  SubnetManager,
  type SubnetStore,
  subnetEnvText,
  vxlanLeaseData,
  writeSubnetEnv,
} from '@weft/subnet';
import type { Logger as PinoLogger } from 'pino';
import type { Options } from './flags.js';
import { type DaemonStatus, startHealthServer, startMetricsServer } from './http.js';
import {
  chooseVxlanMode,
  DirectRoutes,
  describeNode,
  KernelVxlan,
  onSameLink,
  type RemoteNode,
  vtepAddress,
} from './kernel.js';
import { setupMasquerade } from './masq.js';

export const DaemonErrorCode = {
  iface: 'ERR_WEFTD_IFACE',
  backend: 'ERR_WEFTD_BACKEND',
  leaseLost: 'ERR_WEFTD_LEASE_LOST',
} as const;

type Mode = 'kernel-vxlan' | 'userspace-vxlan' | 'userspace-udp' | 'host-gw';

function readOrNull(path: string): string | null {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return null;
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * weftd's work: lease a subnet, write subnet.env, bring the backend up, and keep the node's
 * forwarding state in step with every other node's lease for as long as it runs.
 */
export class Daemon {
  private store: SubnetStore | undefined;
  private manager: SubnetManager | undefined;
  private nl: Rtnl | undefined;
  private lease: Lease | undefined;
  private leaseCreatedThisRun = false;
  private renewal: RenewalHandle | undefined;
  private watch: LeaseWatch | undefined;
  private backend: Backend | undefined;
  private kernel: KernelVxlan | undefined;
  private direct: DirectRoutes | undefined;
  private iface: Link | undefined;
  private connected: Cidr4[] = [];
  private mode: Mode | undefined;
  private backendType: 'udp' | 'vxlan' | 'host-gw' = 'vxlan';
  private vni = 1;
  private servers: Server[] = [];
  private subnetFileWritten = false;
  /** subnet.env as it was before this run wrote it (null: there was none), to put back on a failed start. */
  private subnetFileBefore: string | null | undefined;
  private forwarding = false;
  private synced = false;
  private leaseLost = false;
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
      if (this.leaseLost) return { ready: false, reason: 'the lease was lost; acquiring again' };
      if (!this.lease) return { ready: false, reason: 'no lease yet' };
      if (!this.subnetFileWritten) return { ready: false, reason: 'subnet.env not written yet' };
      if (!this.forwarding) return { ready: false, reason: 'the backend is not forwarding yet' };
      if (!this.synced)
        return { ready: false, reason: "the other nodes' leases are not programmed yet" };
      return { ready: true, reason: '' };
    },
    leaseExpiresAt: () => this.renewal?.current().expiresAt ?? this.lease?.expiresAt,
    remoteNodes: () => this.remoteCount,
    counters: () => this.backend?.counters(),
  };

  private openStore(): SubnetStore {
    const o = this.options;
    if (o.store === 'etcd') {
      return new EtcdStore({
        endpoints: o.etcdEndpoints,
        prefix: o.etcdPrefix,
        caFile: o.etcdCafile,
        certFile: o.etcdCertfile,
        keyFile: o.etcdKeyfile,
        username: o.etcdUsername,
        password: o.etcdPassword,
      });
    }
    return new EmbeddedStore(o.storePath);
  }

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

  /** The underlay: --iface, or the default route's interface; its address and connected networks. */
  private async underlay(): Promise<{ iface: Link; publicIp: string }> {
    const nl = this.nl!;
    let iface: Link | undefined;
    if (this.options.iface) {
      iface = await nl.link(this.options.iface);
      if (!iface)
        throw new WeftError(
          DaemonErrorCode.iface,
          `--iface ${this.options.iface}: no such interface`,
        );
    } else {
      const def = (await nl.routes({ family: 4 })).find(
        (r) => r.dst === '0.0.0.0/0' && r.oif !== undefined,
      );
      if (!def)
        throw new WeftError(
          DaemonErrorCode.iface,
          'no default route to find the underlay interface by: pass --iface (and --public-ip)',
        );
      iface = (await nl.links()).find((l) => l.index === def.oif);
      if (!iface)
        throw new WeftError(
          DaemonErrorCode.iface,
          `the default route's interface (index ${def.oif}) is gone`,
        );
    }
    const addresses = (await nl.addresses(iface.index)).filter((a) => a.address.includes('.'));
    this.connected = addresses.map(
      (a) =>
        cidrNetwork(parseCidr(`${a.address}/${a.prefixLength}`, { allowHostBits: true })) as Cidr4,
    );
    const publicIp = this.options.publicIp ?? addresses[0]?.address;
    if (!publicIp)
      throw new WeftError(
        DaemonErrorCode.iface,
        `${iface.name} has no IPv4 address: pass --public-ip`,
      );
    return { iface, publicIp };
  }

  async start(): Promise<void> {
    const o = this.options;
    this.store = this.openStore();
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
    const { iface, publicIp } = await this.underlay();
    this.iface = iface;
    const type = o.backendType ?? config.backend.type;
    if (type === 'alloc')
      throw new WeftError(DaemonErrorCode.backend, 'the alloc backend needs the next commit');
    this.backendType = type;
    const vx = config.backend.type === 'vxlan' ? config.backend : undefined;
    this.vni = vx?.vni ?? 1;
    this.log.info(
      {
        store: this.store.description,
        network: formatCidr(config.network),
        backend: this.backendType,
        iface: iface.name,
        publicIp,
      },
      'starting',
    );

    // The VTEP MAC survives restarts: it is read back from this node's lease when there is one.
    const existing = await this.manager.leaseFor(publicIp);
    const vtepMac = (existing && vxlanLeaseData(existing.attrs)?.vtepMac) ?? formatMac(randomMac());
    const attrs =
      this.backendType === 'vxlan'
        ? { publicIp, backendType: 'vxlan', backendData: { VNI: this.vni, VtepMAC: vtepMac } }
        : { publicIp, backendType: this.backendType };
    const previous = previousSubnets(readSubnetEnv(o.subnetFile));
    this.lease = await this.manager.acquireLease({ attrs, previousSubnet: previous.subnet });
    this.leaseCreatedThisRun = existing === undefined;
    const ourVtep = vtepAddress(this.lease.subnet);
    this.log.info(
      {
        subnet: this.lease.subnet,
        expiresAt: this.lease.expiresAt,
        vtepMac: this.backendType === 'vxlan' ? vtepMac : undefined,
      },
      'lease acquired',
    );

    let mtu: number;
    if (this.backendType === 'vxlan') {
      mtu = vx?.mtu || (iface.mtu ?? 1500) - 50;
      const port = vx?.port || 8472;
      if (o.vxlanMode !== 'userspace')
        this.kernel = new KernelVxlan(this.nl, {
          name: `flannel.${this.vni}`,
          vni: this.vni,
          port: vx?.port ?? 0,
          publicIp,
          iface,
          mtu,
          vtepMac,
          vtepAddress: ourVtep,
          network: config.network,
          gbp: vx?.gbp ?? false,
          learning: vx?.learning ?? false,
        });
      const kernel = this.kernel;
      const choice = await chooseVxlanMode(o.vxlanMode, async () => kernel?.setup());
      if (choice.kernel) {
        this.mode = 'kernel-vxlan';
        this.log.info(
          { device: `flannel.${this.vni}`, reason: choice.reason },
          "vxlan: programming the kernel's VXLAN",
        );
      } else {
        this.kernel = undefined;
        this.log.info({ reason: choice.reason }, "vxlan: running weft's userspace VTEP");
        if (vx?.gbp)
          throw new WeftError(
            DaemonErrorCode.backend,
            'Backend.GBP is not supported by the userspace VTEP: use --vxlan-mode kernel',
          );
        // A kernel-mode run before this one leaves its device behind (as flannel does): it has our name.
        const leftover = await this.nl.link(`flannel.${this.vni}`);
        if (leftover?.kind === 'vxlan') {
          this.log.info(
            { device: leftover.name },
            'removing the kernel VXLAN device a kernel-mode run left',
          );
          await this.nl.deleteLink(leftover.index);
        }
        this.backend = VxlanBackend.open({
          deviceName: `flannel.${this.vni}`,
          vni: this.vni,
          port,
          vtepMac,
          vtepAddress: ourVtep,
          network: formatCidr(config.network),
          publicIp,
          underlayMtu: iface.mtu ?? 1500,
        });
        mtu = this.backend.mtu;
        this.mode = 'userspace-vxlan';
      }
      if (vx?.directRouting)
        this.direct = new DirectRoutes(this.nl, { network: config.network, iface });
    } else if (this.backendType === 'udp') {
      this.backend = UdpBackend.open({
        deviceName: 'flannel0',
        nodeAddress: ourVtep,
        network: formatCidr(config.network),
        publicIp,
        port: config.backend.type === 'udp' ? config.backend.port : 8285,
        underlayMtu: iface.mtu ?? 1500,
      });
      mtu = this.backend.mtu;
      this.mode = 'userspace-udp';
    } else {
      mtu = iface.mtu ?? 1500;
      this.direct = new DirectRoutes(this.nl, { network: config.network, iface });
      this.mode = 'host-gw';
    }
    this.forwarding = true;
    if (this.backend)
      this.log.info(
        { offload: this.backend.offload, device: this.backend.deviceName, mtu: this.backend.mtu },
        this.backend.offload
          ? 'userspace dataplane up, with segmentation and coalescing offloads'
          : 'userspace dataplane up, without offloads',
      );

    this.subnetFileBefore = readOrNull(o.subnetFile);
    writeSubnetEnv(o.subnetFile, subnetEnvText(config, this.lease, mtu, o.ipMasq));
    this.subnetFileWritten = true;
    this.log.info({ path: o.subnetFile, mtu }, 'subnet.env written');
    if (o.ipMasq) {
      await setupMasquerade(formatCidr(config.network), this.lease.subnet);
      this.log.info({ network: formatCidr(config.network) }, 'masquerade rules in place');
    }

    this.renewal = this.manager.keepRenewed(this.lease, { onRenewed: (l) => (this.lease = l) });
    this.watchLeases();
  }

  private watchLeases(): void {
    this.watch = this.manager!.watchLeases(
      {
        onEvents: (events, initial) => {
          for (const e of events)
            this.log.info(
              {
                event: e.type,
                subnet: e.lease.subnet,
                publicIp: e.lease.attrs.publicIp,
                backend: e.lease.attrs.backendType,
              },
              initial ? 'lease known' : 'lease changed',
            );
          this.scheduleSync();
        },
        onOwnLeaseLost: () => void this.reacquire(),
        onError: (err) =>
          this.log.warn({ err: err.message }, 'lease watch: the store is not answering; retrying'),
      },
      { ownKey: this.lease!.key },
    );
  }

  /** The remote nodes this node forwards to: leases of its own backend type (and VNI). */
  private remoteNodes(): RemoteNode[] {
    const nodes: RemoteNode[] = [];
    for (const l of this.watch?.leases() ?? []) {
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
    const direct =
      this.direct && this.mode !== 'host-gw'
        ? nodes.filter((n) => onSameLink(n.publicIp, this.connected))
        : [];
    if (this.mode === 'kernel-vxlan') {
      const directKeys = new Set(direct.map((n) => n.key));
      const r = await this.kernel!.sync(nodes.filter((n) => !directKeys.has(n.key)));
      if (r.added || r.removed)
        this.log.info({ ...r, nodes: nodes.map(describeNode) }, 'kernel VXLAN entries reconciled');
    } else if (this.backend) {
      this.backend.setNodes(
        nodes.map((n) => ({
          subnet: n.subnet,
          publicIp: n.publicIp,
          vtepMac: n.vtepMac,
          name: n.key,
        })),
      );
    }
    if (this.direct) {
      const r = await this.direct.sync(this.mode === 'host-gw' ? nodes : direct);
      if (r.added || r.removed) this.log.info(r, 'direct routes reconciled');
    }
    if (!this.synced) {
      this.synced = true;
      this.log.info(
        { subnet: this.lease?.subnet, mode: this.mode, remoteNodes: nodes.length },
        'ready',
      );
    }
  }

  /** Our lease vanished from the store: say so loudly, and take the same subnet back if it is free. */
  private async reacquire(): Promise<void> {
    if (this.stopped || !this.lease || this.leaseLost) return;
    this.leaseLost = true;
    const lost = this.lease;
    this.log.error(
      { subnet: lost.subnet },
      "this node's lease disappeared from the store; acquiring it again",
    );
    this.renewal?.stop();
    let wait = 1000;
    while (!this.stopped) {
      try {
        const again = await this.manager!.acquireLease({
          attrs: lost.attrs,
          previousSubnet: parseCidr(lost.subnet),
        });
        if (again.subnet !== lost.subnet) {
          this.log.error(
            { was: lost.subnet, now: again.subnet },
            'the subnet went to another node: exiting so that a restart reconfigures this node',
          );
          await this.manager!.releaseLease(again).catch(() => undefined);
          process.exitCode = 1;
          await this.stop();
          return;
        }
        this.lease = again;
        this.renewal = this.manager!.keepRenewed(again, { onRenewed: (l) => (this.lease = l) });
        this.leaseLost = false;
        this.log.info({ subnet: again.subnet }, 'lease acquired again');
        return;
      } catch (err) {
        this.log.error(
          { err: (err as Error).message, retryInMs: wait },
          'acquiring the lease again failed',
        );
        await sleep(wait);
        wait = Math.min(wait * 2, 30_000);
      }
    }
  }

  /** After a failed start: undo what this run created, so nothing is left half-configured. */
  async abort(): Promise<void> {
    this.stopped = true;
    this.watch?.close();
    this.renewal?.stop();
    this.backend?.close();
    if (this.kernel?.created) await this.kernel.remove().catch(() => undefined);
    if (this.lease && this.leaseCreatedThisRun) {
      await this.manager?.releaseLease(this.lease).catch(() => undefined);
      // A subnet.env naming a lease given back would mislead the CNI plugin.
      if (this.subnetFileBefore !== undefined) {
        if (this.subnetFileBefore === null) rmSync(this.options.subnetFile, { force: true });
        else writeFileSync(this.options.subnetFile, this.subnetFileBefore);
      }
    }
    await this.close();
  }

  /** SIGTERM: stop forwarding; leave the lease to expire (flannel's way) unless --release-on-exit. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.watch?.close();
    this.renewal?.stop();
    this.backend?.close();
    if (this.options.releaseOnExit && this.lease) {
      await this.manager
        ?.releaseLease(this.lease)
        .catch((err: Error) => this.log.error({ err: err.message }, 'releasing the lease failed'));
    }
    await this.close();
    this.log.info({}, 'stopped');
  }

  private async close(): Promise<void> {
    for (const s of this.servers) s.close();
    this.nl?.close();
    await this.store?.close();
  }
}
