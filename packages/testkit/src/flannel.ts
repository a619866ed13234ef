import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { tempDir } from './tools.js';

const execFileAsync = promisify(execFile);

/** The Go fixture restating flannel's lease types and key functions (see its header). */
export const FLANNEL_LEASE_FIXTURE = fileURLToPath(
  new URL('../fixtures/flannel-lease/main.go', import.meta.url),
);

/** How flanneld reads a lease (kvToIPLease, then the vxlan backend's data decoding). */
export interface FlannelDecoded {
  ok: boolean;
  error?: string;
  /** ip.IP4Net's text: "10.244.1.0/24", or "0.0.0.0/0" for an IPv6-only key. */
  subnet?: string;
  subnet6?: string;
  enableIPv6?: boolean;
  publicIP?: string;
  publicIPv6?: string | null;
  backendType?: string;
  vxlan?: { vni: number; vtepMac: string };
  vxlanError?: string;
  vxlan6?: { vni: number; vtepMac: string };
  vxlan6Error?: string;
  /** wireguard: BackendData and BackendV6Data as its wireguardLeaseAttrs. */
  wireguard?: { PublicKey: string; Port: number };
  wireguardError?: string;
  wireguard6?: { PublicKey: string; Port: number };
  wireguard6Error?: string;
  /** What flanneld writes back for it: json.Marshal(attrs) and MakeSubnetKey. */
  value?: string;
  key?: string;
}

/** What a flanneld would write: key and value (vxlan.go newSubnetAttrs, registry.go createSubnet). */
export interface FlannelEncodeRequest {
  subnet?: string;
  subnet6?: string;
  publicIP?: string;
  publicIPv6?: string;
  backendType: string;
  vni?: number;
  mac?: string;
  mac6?: string;
  /** wireguard: the node's key, and ListenPort / ListenPortV6. */
  publicKey?: string;
  port?: number;
  port6?: number;
}

/** The Go fixture restating flannel's CNI plugin on ADD, with libcni's parts of it (see its header). */
export const FLANNEL_CNI_FIXTURE = fileURLToPath(
  new URL('../fixtures/flannel-cni/main.go', import.meta.url),
);

const built = new Map<string, Promise<string>>();

/** Builds a fixture once per process (Go's standard library only; no network). */
function fixture(source: string): Promise<string> {
  let bin = built.get(source);
  if (!bin) {
    bin = (async () => {
      const dir = tempDir('weft-flannel-go-');
      process.once('exit', () => dir.remove());
      const path = join(dir.path, 'fixture');
      await execFileAsync('go', ['build', '-o', path, source], {
        env: { ...process.env, GOPROXY: 'off', GOFLAGS: '', GO111MODULE: 'off' },
        timeout: 120_000,
      });
      return path;
    })();
    built.set(source, bin);
  }
  return bin;
}

async function run(source: string, requests: object[]): Promise<unknown[]> {
  const bin = await fixture(source);
  return new Promise((resolve, reject) => {
    const child = execFile(bin, [], { maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${source} failed: ${stderr || err.message}`));
      else resolve(JSON.parse(stdout) as unknown[]);
    });
    child.stdin?.end(JSON.stringify(requests));
  });
}

/** Decodes leases (key, value) with flannel's own types and rules. */
export async function flannelDecodeLeases(
  leases: readonly { key: string; value: string }[],
): Promise<FlannelDecoded[]> {
  return (await run(
    FLANNEL_LEASE_FIXTURE,
    leases.map((l) => ({ op: 'decode', ...l })),
  )) as FlannelDecoded[];
}

/** The key and value flanneld would write for each request. */
export async function flannelEncodeLeases(
  requests: readonly FlannelEncodeRequest[],
): Promise<{ ok: boolean; error?: string; key: string; value: string }[]> {
  return (await run(
    FLANNEL_LEASE_FIXTURE,
    requests.map((r) => ({ op: 'encode', ...r })),
  )) as {
    ok: boolean;
    error?: string;
    key: string;
    value: string;
  }[];
}

/** One ADD as a runtime makes it: the configuration on stdin, CNI_PATH, CNI_CONTAINERID. */
export interface FlannelCniRequest {
  stdin: string;
  cniPath: string;
  containerId: string;
}

/** What flannel's plugin does with it, up to starting the delegate. */
export type FlannelCniAnswer =
  | {
      ok: true;
      /** The configuration flannel pipes to its delegate (and writes to `record`). */
      delegate: Record<string, unknown>;
      /** `<dataDir>/<containerId>`, written as flannel writes it. */
      record: string;
      /** Where flannel found the delegate in CNI_PATH. */
      plugin: string;
      subnetFile: string;
      dataDir: string;
    }
  | {
      ok: false;
      /** skel's error JSON: 999 (libcni's ErrInternal) for an error of the plugin's own. */
      code?: number;
      msg?: string;
      /** Set when flannel had written its record before it failed. */
      record?: string;
      /** The plugin crashes instead (exit status 2, no error JSON). */
      panic?: string;
    };

/** Runs each ADD through flannel's CNI plugin logic and libcni's (the Go fixture). */
export async function flannelCniAdd(
  requests: readonly FlannelCniRequest[],
): Promise<FlannelCniAnswer[]> {
  return (await run(FLANNEL_CNI_FIXTURE, [...requests])) as FlannelCniAnswer[];
}
