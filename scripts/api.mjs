// API reports: one Markdown file per public package (packages/<name>/<name>.api.md), and one per
// further entry point of its exports (packages/dataplane/dataplane-testing.api.md for
// `@weft/dataplane/testing`), written by API Extractor from the built declarations, committed so a
// change to a public surface shows in review. `pnpm api` rewrites them (after a build);
// `pnpm api:check` (in `pnpm lint`) fails when one is out of date and names the command that fixes
// it.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Extractor, ExtractorConfig } from '@microsoft/api-extractor';

const root = dirname(dirname(fileURLToPath(import.meta.url)));
const check = process.argv.includes('--check');
const stale = [];

for (const dir of readdirSync(join(root, 'packages')).sort()) {
  const folder = join(root, 'packages', dir);
  const pkgFile = join(folder, 'package.json');
  if (!existsSync(pkgFile)) continue;
  const pkg = JSON.parse(readFileSync(pkgFile, 'utf8'));
  if (pkg.private) continue;
  for (const [sub, entry] of Object.entries(pkg.exports ?? { '.': { types: 'dist/index.d.ts' } })) {
    const report = sub === '.' ? dir : `${dir}-${sub.slice(2).replaceAll('/', '-')}`;
    if (!extract(dir, pkg, join(folder, entry.types), `${report}.api.md`))
      stale.push(sub === '.' ? pkg.name : `${pkg.name}/${sub.slice(2)}`);
  }
}

/** Writes (or checks) one entry point's report; false when a check finds it out of date. */
function extract(dir, pkg, entry, reportFileName) {
  const folder = join(root, 'packages', dir);
  if (!existsSync(entry)) {
    console.error(`api: ${entry} is missing: run \`pnpm build\` first`);
    process.exit(1);
  }
  const config = ExtractorConfig.prepare({
    configObject: {
      projectFolder: folder,
      mainEntryPointFilePath: entry,
      compiler: { tsconfigFilePath: join(folder, 'tsconfig.json') },
      apiReport: {
        enabled: true,
        reportFolder: folder,
        reportTempFolder: join(folder, 'dist', 'api'),
        reportFileName,
      },
      docModel: { enabled: false },
      dtsRollup: { enabled: false },
      tsdocMetadata: { enabled: false },
      messages: {
        compilerMessageReporting: { default: { logLevel: 'warning' } },
        extractorMessageReporting: {
          default: { logLevel: 'warning' },
          // Release tags (@public, @beta) are not used: everything index.ts exports is public.
          'ae-missing-release-tag': { logLevel: 'none' },
          // A type reached through the public API but exported elsewhere is fine in a report.
          'ae-forgotten-export': { logLevel: 'none' },
          // `pnpm docs:check` (TypeDoc) is the documentation check; the report marks the rest.
          'ae-undocumented': { logLevel: 'none' },
        },
        tsdocMessageReporting: { default: { logLevel: 'none' } },
      },
    },
    configObjectFullPath: join(folder, 'api-extractor.json'),
    packageJsonFullPath: join(folder, 'package.json'),
  });
  const result = Extractor.invoke(config, {
    localBuild: !check,
    messageCallback: (message) => {
      // Its preamble names the TypeScript it bundles for the analysis: noise in every run.
      if (message.messageId === 'console-preamble') message.handled = true;
    },
  });
  if (result.apiReportChanged && check) return false;
  if (!result.succeeded) {
    console.error(`api: API Extractor failed for ${pkg.name} (${reportFileName})`);
    process.exit(1);
  }
  return true;
}

if (stale.length > 0) {
  console.error(
    `api: the public API of ${stale.join(', ')} changed and its report is out of date: run \`pnpm build && pnpm api\` and commit packages/*/*.api.md`,
  );
  process.exit(1);
}
console.log(check ? 'api: every API report is up to date' : 'api: reports written');
