import { execFileSync } from 'node:child_process';
import { statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { haveTools, tempDir } from '@weft/testkit';
import { describe, expect, it } from 'vitest';
import { formatKey, loadOrCreateKeyFile, parseKey, publicKeyOf } from '../src/index.js';

const canRun = haveTools('WireGuard key file tests', 'wg');

describe.skipIf(!canRun)("the node's WireGuard key file, checked by wireguard-tools", () => {
  it('is made once, 0600, read back the same on every start; `wg pubkey` agrees', () => {
    const dir = tempDir('weft-wgkey-');
    try {
      const path = join(dir.path, 'run', 'flannel', 'wgkey');
      const first = loadOrCreateKeyFile(path);
      expect(first.created).toBe(true);
      expect(statSync(path).mode & 0o777).toBe(0o600);
      const wgPublic = execFileSync('sh', ['-c', `wg pubkey < ${path}`], {
        encoding: 'utf8',
      }).trim();
      expect(first.publicKey).toBe(wgPublic);
      const again = loadOrCreateKeyFile(path);
      expect(again).toEqual({ ...first, created: false, narrowedFrom: undefined });
    } finally {
      dir.remove();
    }
  });

  it('reads a key `wg genkey` wrote (newline, umask mode), narrowing the mode to 0600', () => {
    const dir = tempDir('weft-wgkey-');
    try {
      const path = join(dir.path, 'wgkey');
      const key = execFileSync('wg', ['genkey'], { encoding: 'utf8' });
      writeFileSync(path, key, { mode: 0o644 });
      const got = loadOrCreateKeyFile(path);
      expect(got.privateKey).toBe(key.trim());
      expect(got.publicKey).toBe(formatKey(publicKeyOf(parseKey(key.trim(), 'k'))));
      expect(got.narrowedFrom).toBe(0o644);
      expect(statSync(path).mode & 0o777).toBe(0o600);
    } finally {
      dir.remove();
    }
  });

  it('refuses a file that holds no key, saying what to do', () => {
    const dir = tempDir('weft-wgkey-');
    try {
      const path = join(dir.path, 'wgkey');
      writeFileSync(path, 'not a key\n');
      expect(() => loadOrCreateKeyFile(path)).toThrow(
        expect.objectContaining({
          code: 'ERR_WIREGUARD_KEY_FILE',
          message: expect.stringMatching(
            /holds no private key \(remove it to have a new one made\)/,
          ),
        }),
      );
    } finally {
      dir.remove();
    }
  });
});
