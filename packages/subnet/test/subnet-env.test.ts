import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { formatCidr, isWeftError } from '@weft/core';
import { tempDir } from '@weft/testkit';
import { describe, expect, it } from 'vitest';
import {
  parseNetworkConfig,
  previousSubnets,
  readSubnetEnv,
  subnetEnvText,
  writeSubnetEnv,
} from '../src/index.js';

describe('subnet.env', () => {
  it("writes flannel's variables, first host address with the subnet's prefix, atomically", () => {
    const dir = tempDir();
    try {
      const config = parseNetworkConfig({
        Network: '10.244.0.0/16',
        EnableIPv6: true,
        IPv6Network: 'fc00::/48',
      });
      const path = join(dir.path, 'run/flannel/subnet.env');
      writeSubnetEnv(
        path,
        subnetEnvText(config, { subnet: '10.244.1.0/24', subnet6: 'fc00:0:0:1::/64' }, 1450, true),
      );
      expect(readFileSync(path, 'utf8')).toBe(
        'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_IPV6_NETWORK=fc00::/48\nFLANNEL_IPV6_SUBNET=fc00:0:0:1::1/64\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n',
      );
      expect(readdirSync(join(dir.path, 'run/flannel'))).toEqual(['subnet.env']);
      const env = readSubnetEnv(path);
      expect(env).toMatchObject({
        network: '10.244.0.0/16',
        subnet: '10.244.1.1/24',
        mtu: 1450,
        ipMasq: true,
      });
      const prev = previousSubnets(env);
      expect(formatCidr(prev.subnet!)).toBe('10.244.1.0/24');
      expect(formatCidr(prev.subnet6!)).toBe('fc00:0:0:1::/64');
      expect(readSubnetEnv(join(dir.path, 'missing.env'))).toBeUndefined();
    } finally {
      dir.remove();
    }
  });

  it('writes the IPv4 variables alone when IPv6 is off', () => {
    const config = parseNetworkConfig({ Network: '10.5.0.0/16', SubnetLen: 26 });
    expect(subnetEnvText(config, { subnet: '10.5.3.64/26' }, 8951, false)).toBe(
      'FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.3.65/26\nFLANNEL_MTU=8951\nFLANNEL_IPMASQ=false\n',
    );
  });

  it('fails with ERR_SUBNET_FILE naming the file, leaving the old one whole and no temp file', () => {
    const dir = tempDir();
    try {
      const path = join(dir.path, 'subnet.env');
      writeFileSync(path, 'FLANNEL_SUBNET=10.244.1.1/24\n');
      // The temp file's name is taken by a directory: the write cannot happen.
      mkdirSync(`${path}.tmp-${process.pid}`);
      let err: unknown;
      try {
        writeSubnetEnv(path, 'FLANNEL_SUBNET=10.244.2.1/24\n');
      } catch (e) {
        err = e;
      }
      expect(isWeftError(err, 'ERR_SUBNET_FILE')).toBe(true);
      expect((err as Error).message).toContain(`cannot write ${path}: EISDIR`);
      expect(readFileSync(path, 'utf8')).toBe('FLANNEL_SUBNET=10.244.1.1/24\n');
      // Under a regular file, nothing can be written; reading a directory is refused too.
      const under = join(path, 'subnet.env');
      expect(() => writeSubnetEnv(under, '')).toThrow(`cannot write ${under}: E`);
      const unreadable = (() => {
        try {
          readSubnetEnv(dir.path);
        } catch (e) {
          return e;
        }
      })();
      expect(isWeftError(unreadable, 'ERR_SUBNET_FILE')).toBe(true);
      expect((unreadable as Error).message).toContain(`cannot read ${dir.path}: EISDIR`);
    } finally {
      dir.remove();
    }
  });
});
