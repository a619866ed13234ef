import { chmodSync, mkdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The plugin's entry point (`weft-cni`): one bundled file, built by `pnpm build`. */
export const PLUGIN_MAIN = fileURLToPath(new URL('../dist/weft-cni.cjs', import.meta.url));

/** Options of {@link installPlugin}. */
export interface InstallOptions {
  /** The file name in the bin directory: `flannel` (default) serves kube-flannel's configuration. */
  name?: string;
  /** The Node.js binary the plugin runs on (default: the one running this call). */
  node?: string;
}

const quote = (s: string) => `'${s.replaceAll("'", `'\\''`)}'`;

/**
 * Installs weft-cni into a CNI bin directory as a two-line shell script that execs Node on the
 * plugin, so it runs whatever PATH the runtime passes. Written to a temp file and renamed: a
 * runtime never runs half of it. Returns the installed path.
 */
export function installPlugin(binDir: string, options: InstallOptions = {}): string {
  const name = options.name ?? 'flannel';
  if (!/^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/.test(name)) {
    throw new TypeError(`plugin name must be a plain file name: ${JSON.stringify(name)}`);
  }
  const node = options.node ?? process.execPath;
  const path = join(binDir, name);
  const tmp = join(binDir, `.${name}.tmp-${process.pid}`);
  mkdirSync(binDir, { recursive: true });
  try {
    writeFileSync(tmp, `#!/bin/sh\nexec ${quote(node)} ${quote(PLUGIN_MAIN)} "$@"\n`);
    chmodSync(tmp, 0o755);
    renameSync(tmp, path);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw err;
  }
  return path;
}
