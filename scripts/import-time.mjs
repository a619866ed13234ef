// node scripts/import-time.mjs <module> [runs]: the median time a fresh Node process takes to import
// a module (each run its own process, so nothing is cached).
import { spawnSync } from 'node:child_process';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

const [mod, runs = '15'] = process.argv.slice(2);
if (!mod) {
  console.error('usage: node scripts/import-time.mjs <module path or package> [runs]');
  process.exit(2);
}
const specifier = /^[./]/.test(mod) || mod.endsWith('.js') ? pathToFileURL(resolve(mod)).href : mod;
const code = `const t = performance.now(); await import(${JSON.stringify(specifier)}); console.log(performance.now() - t);`;
const times = [];
for (let i = 0; i < Number(runs); i++) {
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', code], { encoding: 'utf8' });
  if (r.status !== 0) {
    console.error(r.stderr);
    process.exit(1);
  }
  times.push(Number(r.stdout.trim()));
}
times.sort((a, b) => a - b);
const ms = (x) => `${x.toFixed(1)} ms`;
console.log(
  `${mod}: median ${ms(times[times.length >> 1])}, min ${ms(times[0])}, max ${ms(times.at(-1))} (${times.length} runs)`,
);
