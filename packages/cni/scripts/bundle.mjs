// Bundles the built plugin (dist/main.js and what it imports, @weft/core included) into one file,
// dist/weft-cni.cjs: a runtime starts the plugin once per pod, and one CommonJS file loads faster
// than ten ES modules (no module graph to link, no ES loader to start).
import { chmodSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { build } from 'rolldown';

const dist = fileURLToPath(new URL('../dist/', import.meta.url));
await build({
  input: `${dist}main.js`,
  platform: 'node',
  logLevel: 'warn',
  output: { file: `${dist}weft-cni.cjs`, format: 'cjs', codeSplitting: false },
});
chmodSync(`${dist}weft-cni.cjs`, 0o755);
