import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { privileged } from '@weft/testkit';
import { describe, expect, it } from 'vitest';

const example = fileURLToPath(new URL('../dist/two-node-overlay.js', import.meta.url));

describe.skipIf(!privileged('the two-node overlay example'))('examples/two-node-overlay', () => {
  for (const type of ['vxlan', 'udp']) {
    it(`runs a ${type} overlay between two namespaces and pings across it`, () => {
      const out = execFileSync(process.execPath, [example, type], {
        encoding: 'utf8',
        timeout: 30_000,
      });
      expect(out).toMatch(new RegExp(`two ${type} nodes up`));
      expect(out).toMatch(/3 packets transmitted, 3 received/);
      expect(out).toMatch(/"txPackets":[3-9]/);
      expect(execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })).not.toMatch(
        /weft-example-a/,
      );
    });
  }
});
