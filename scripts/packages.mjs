// Checks (or with --write, sets) what every public package's tarball must carry: the license and
// its LICENSE file, a README, repository/homepage/bugs pointing into this repository, keywords,
// sideEffects, exports with types first, engines, public access, and the exports published
// without the workspace's `weft-src` condition. `pnpm lint` runs the check; `pnpm packages:write`
// fixes what a script can (repository links, LICENSE copies, publishConfig).
//
// The root package.json's `repository.url` is the one place the repository's address is written:
// every package's repository, homepage and bugs are derived from it here.
import { copyFileSync, existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = dirname(dirname(fileURLToPath(import.meta.url)));
const write = process.argv.includes('--write');
const rootPkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
const repoUrl = rootPkg.repository.url.replace(/^git\+/, '').replace(/\.git$/, '');
const license = readFileSync(join(root, 'LICENSE'));
const problems = [];

for (const dir of readdirSync(join(root, 'packages')).sort()) {
  const path = join(root, 'packages', dir, 'package.json');
  if (!existsSync(path)) continue;
  const text = readFileSync(path, 'utf8');
  const pkg = JSON.parse(text);
  if (pkg.private) continue;
  const want = {
    license: 'Apache-2.0',
    repository: { type: 'git', url: rootPkg.repository.url, directory: `packages/${dir}` },
    homepage: `${repoUrl}/tree/main/packages/${dir}#readme`,
    bugs: { url: `${repoUrl}/issues` },
    engines: rootPkg.engines,
    // pnpm pack and publish put publishConfig.exports in place of exports: a consumer's resolver
    // never sees `weft-src` (the workspace's condition for TypeScript sources, see vitest.config.ts).
    publishConfig: { access: 'public', exports: withoutSourceCondition(pkg.exports ?? {}) },
  };
  for (const [key, value] of Object.entries(want)) {
    if (JSON.stringify(pkg[key]) === JSON.stringify(value)) continue;
    if (write) pkg[key] = value;
    else problems.push(`${pkg.name}: ${key} should be ${JSON.stringify(value)}`);
  }
  const licenseFile = join(root, 'packages', dir, 'LICENSE');
  if (!existsSync(licenseFile) || !readFileSync(licenseFile).equals(license)) {
    if (write) copyFileSync(join(root, 'LICENSE'), licenseFile);
    else problems.push(`${pkg.name}: LICENSE missing or not the repository's`);
  }
  if (!existsSync(join(root, 'packages', dir, 'README.md')))
    problems.push(`${pkg.name}: no README.md`);
  if (!Array.isArray(pkg.keywords) || pkg.keywords.length === 0)
    problems.push(`${pkg.name}: no keywords`);
  if (pkg.sideEffects === undefined)
    problems.push(`${pkg.name}: sideEffects unset (false, or the files that have them)`);
  for (const [sub, entry] of Object.entries(pkg.exports ?? {})) {
    if (Object.keys(entry)[0] !== 'types')
      problems.push(`${pkg.name}: exports["${sub}"] must list "types" first`);
  }
  for (const field of ['scripts']) {
    for (const hook of ['preinstall', 'install', 'postinstall'])
      if (pkg[field]?.[hook])
        problems.push(`${pkg.name}: an ${hook} script runs on every consumer's install`);
  }
  if (write) {
    const out = `${JSON.stringify(pkg, null, 2)}\n`;
    if (out !== text) writeFileSync(path, out);
  }
}

/** `exports` with every `weft-src` condition left out. */
function withoutSourceCondition(exports) {
  return Object.fromEntries(
    Object.entries(exports).map(([sub, entry]) => [
      sub,
      Object.fromEntries(Object.entries(entry).filter(([condition]) => condition !== 'weft-src')),
    ]),
  );
}

if (problems.length > 0) {
  console.error(
    `${problems.join('\n')}\n\npackages: ${problems.length} problem(s); \`pnpm packages:write\` fixes links, LICENSE copies and access; the rest by hand`,
  );
  process.exit(1);
}
console.log(write ? 'packages: written' : 'packages: every public package is complete');
