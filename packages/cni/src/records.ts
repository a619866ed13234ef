import {
  closeSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  writeSync,
} from 'node:fs';
import { join } from 'node:path';
import { CniCode, CniError } from './errors.js';

/**
 * The per-container record under dataDir: the delegate configuration of ADD, so DEL (and CHECK)
 * run the delegate with exactly what ADD used, even once subnet.env is gone. The file is
 * flannel's (`<dataDir>/<container id>`, the delegate's JSON), so records flannel's plugin wrote
 * are deleted by weft-cni and the other way round. One extra key keeps the interface name, which
 * GC needs to release an attachment; it is removed before the delegate sees the configuration.
 */
export const IFNAME_KEY = 'weft.dev/ifName';

type Json = Record<string, unknown>;

export interface DelegateRecord {
  /** The delegate configuration, without weft's key. */
  conf: Json;
  /** CNI_IFNAME of the ADD that wrote it (undefined in a record flannel's plugin wrote). */
  ifName?: string;
}

export function recordPath(dataDir: string, containerId: string): string {
  return join(dataDir, containerId);
}

/** Writes the record whole (temp file, fsync, rename): a DEL never reads half of one. */
export function saveRecord(dataDir: string, containerId: string, conf: Json, ifName: string): void {
  const path = recordPath(dataDir, containerId);
  // A leading dot cannot start a container ID, so a temp file is never taken for a record.
  const tmp = join(dataDir, `.${containerId}.tmp-${process.pid}`);
  try {
    mkdirSync(dataDir, { recursive: true, mode: 0o700 });
    const fd = openSync(tmp, 'w', 0o600);
    try {
      writeSync(fd, JSON.stringify({ ...conf, [IFNAME_KEY]: ifName }));
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, path);
  } catch (err) {
    try {
      rmSync(tmp, { force: true });
    } catch {}
    throw new CniError(
      CniCode.ioFailure,
      `cannot save the delegate configuration to ${path}`,
      `${(err as Error).message}; dataDir must be writable by the container runtime`,
      { cause: err },
    );
  }
}

/** The text of a container's record, or undefined when there is none. */
export function readRecordText(dataDir: string, containerId: string): string | undefined {
  const path = recordPath(dataDir, containerId);
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new CniError(CniCode.ioFailure, `cannot read ${path}`, (err as Error).message, {
      cause: err,
    });
  }
}

/** Parses a record's text; undefined when it is not a delegate configuration (no string `type`). */
export function parseRecord(text: string): DelegateRecord | undefined {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return undefined;
  const { [IFNAME_KEY]: ifName, ...conf } = value as Json;
  if (typeof conf.type !== 'string' || conf.type === '') return undefined;
  return typeof ifName === 'string' ? { conf, ifName } : { conf };
}

export function removeRecord(dataDir: string, containerId: string): void {
  rmSync(recordPath(dataDir, containerId), { force: true });
}

/** The container IDs with a record (temp files and anything else are left out). */
export function listRecords(dataDir: string): string[] {
  try {
    return readdirSync(dataDir).filter((name) => /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/.test(name));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw new CniError(CniCode.ioFailure, `cannot list ${dataDir}`, (err as Error).message, {
      cause: err,
    });
  }
}
