// Builds the addon from source with node-gyp against the headers of the Node that runs this
// script, so nothing is downloaded (node-gyp would otherwise fetch headers for an unknown Node).
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

const require = createRequire(import.meta.url);
const prefix = dirname(dirname(process.execPath));
const args = [require.resolve('node-gyp/bin/node-gyp.js'), 'rebuild'];
if (existsSync(join(prefix, 'include', 'node', 'node_api.h'))) args.push(`--nodedir=${prefix}`);
else
  console.warn(
    `weft: no Node headers under ${prefix}/include/node; node-gyp will look for them itself`,
  );
const result = spawnSync(process.execPath, args, {
  stdio: 'inherit',
  cwd: dirname(dirname(new URL(import.meta.url).pathname)),
});
process.exit(result.status ?? 1);
