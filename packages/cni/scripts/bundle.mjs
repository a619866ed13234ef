// Bundles the built plugin (dist/main.js and what it imports, @weft/core included) into one file,
// dist/weft-cni.mjs: a runtime starts the plugin once per pod, and one module loads faster than ten.
import { chmodSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { build } from 'rolldown';

const dist = fileURLToPath(new URL('../dist/', import.meta.url));
await build({
  input: `${dist}main.js`,
  platform: 'node',
  logLevel: 'warn',
  output: { file: `${dist}weft-cni.mjs`, format: 'esm', codeSplitting: false },
});
chmodSync(`${dist}weft-cni.mjs`, 0o755);
