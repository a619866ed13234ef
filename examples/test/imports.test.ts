import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const src = fileURLToPath(new URL('../src/', import.meta.url));
const root = fileURLToPath(new URL('../../', import.meta.url));
const publicPackages = readdirSync(join(root, 'packages'))
  .map((dir) => JSON.parse(readFileSync(join(root, 'packages', dir, 'package.json'), 'utf8')))
  .filter((pkg) => !pkg.private)
  .map((pkg) => pkg.name as string);

describe('examples use only the public packages', () => {
  it('the check sees imports at all', () => {
    expect(readFileSync(join(src, 'demo.ts'), 'utf8')).toMatch(/from '@weft\/subnet'/);
  });

  for (const file of readdirSync(src).filter((f) => f.endsWith('.ts'))) {
    it(`${file} imports node:*, its own files and published @weft packages only`, () => {
      const text = readFileSync(join(src, file), 'utf8');
      const specifiers = [...text.matchAll(/(?:from|import)\s*\(?\s*'([^']+)'/g)].map((m) => m[1]);
      for (const s of specifiers) {
        const ok = s.startsWith('node:') || s.startsWith('./') || publicPackages.includes(s);
        expect(ok, `${file} imports ${s}`).toBe(true);
      }
    });
  }
});
