import { formatCidr, formatIpv4, formatIpv6, isWeftError } from '@weft/core';
import { describe, expect, it } from 'vitest';
import { networkConfigJson, parseNetworkConfig } from '../src/index.js';

function fails(json: unknown): string {
  try {
    parseNetworkConfig(typeof json === 'string' ? json : JSON.stringify(json));
  } catch (err) {
    if (!isWeftError(err, 'ERR_CONFIG_INVALID')) throw err;
    return err.message;
  }
  throw new Error('expected a config error');
}

describe("flannel's network config", () => {
  it('applies flannel defaults: SubnetLen 24 for /22 and shorter, first and last subnets, udp backend', () => {
    const c = parseNetworkConfig('{"Network": "10.244.0.0/16"}');
    expect(formatCidr(c.network!)).toBe('10.244.0.0/16');
    expect(c.subnetLen).toBe(24);
    expect(formatIpv4(c.subnetMin)).toBe('10.244.1.0');
    expect(formatIpv4(c.subnetMax)).toBe('10.244.255.0');
    expect(c.backend).toEqual({ type: 'udp', port: 8285 });
    expect(parseNetworkConfig('{"Network": "10.0.0.0/22"}').subnetLen).toBe(24);
  });

  it('uses prefix+2 for networks longer than /22, down to /28', () => {
    expect(parseNetworkConfig('{"Network": "10.0.0.0/23"}').subnetLen).toBe(25);
    const c = parseNetworkConfig('{"Network": "10.0.0.0/28"}');
    expect(c.subnetLen).toBe(30);
    expect(formatIpv4(c.subnetMin)).toBe('10.0.0.4');
    expect(formatIpv4(c.subnetMax)).toBe('10.0.0.12');
    expect(fails({ Network: '10.0.0.0/29' })).toMatch(
      /Network \/29 is too small: the longest useful prefix is \/28/,
    );
  });

  it('matches keys case-insensitively, as Go does', () => {
    const c = parseNetworkConfig(
      '{"network": "10.5.0.0/16", "subnetlen": 26, "BACKEND": {"type": "vxlan", "vni": 4096, "port": 4789}}',
    );
    expect(c.subnetLen).toBe(26);
    expect(c.backend).toEqual({
      type: 'vxlan',
      vni: 4096,
      port: 4789,
      mtu: 0,
      learning: false,
      directRouting: false,
      gbp: false,
    });
  });

  it('checks SubnetLen against flannel rules, naming the field', () => {
    expect(fails({ Network: '10.244.0.0/16', SubnetLen: 31 })).toMatch(
      /SubnetLen 31 must be <= 30/,
    );
    expect(fails({ Network: '10.244.0.0/16', SubnetLen: 17 })).toMatch(
      /SubnetLen 17 must be >= 18/,
    );
  });

  it('checks SubnetMin and SubnetMax: inside the network and aligned', () => {
    const c = parseNetworkConfig({
      Network: '10.244.0.0/16',
      SubnetMin: '10.244.10.0',
      SubnetMax: '10.244.20.0',
    });
    expect(formatIpv4(c.subnetMin)).toBe('10.244.10.0');
    expect(fails({ Network: '10.244.0.0/16', SubnetMin: '10.245.0.0' })).toMatch(
      /SubnetMin 10\.245\.0\.0 is not inside Network 10\.244\.0\.0\/16/,
    );
    expect(fails({ Network: '10.244.0.0/16', SubnetMax: '10.244.3.7' })).toMatch(
      /SubnetMax 10\.244\.3\.7 is not on a \/24 boundary/,
    );
    expect(fails({ Network: '10.244.0.0/16', SubnetMin: '10.244.1.128' })).toMatch(
      /SubnetMin 10\.244\.1\.128 is not on a \/24 boundary/,
    );
    expect(fails({ Network: '10.244.0.0/16', SubnetMax: '10.0.0.0' })).toMatch(
      /SubnetMax 10\.0\.0\.0 is not inside Network 10\.244\.0\.0\/16/,
    );
    expect(
      fails({ Network: '10.244.0.0/16', SubnetMin: '10.244.9.0', SubnetMax: '10.244.8.0' }),
    ).toMatch(/SubnetMin 10\.244\.9\.0 is after SubnetMax 10\.244\.8\.0/);
    // Aligned to a SubnetLen that is not the default.
    const c26 = parseNetworkConfig({ Network: '10.0.0.0/16', SubnetLen: 26 });
    expect(formatIpv4(c26.subnetMin)).toBe('10.0.0.64');
    expect(formatIpv4(c26.subnetMax)).toBe('10.0.255.192');
    expect(fails({ Network: '10.244.0.0/16', SubnetMin: 'ten' })).toMatch(
      /SubnetMin "ten" is not an IPv4 address/,
    );
  });

  it("matches the backend type lowercased, as flannel's backend manager does, and knows alloc and EnableNFTables", () => {
    expect(
      parseNetworkConfig({ Network: '10.1.0.0/16', Backend: { Type: 'VXLAN' } }).backend,
    ).toEqual({
      type: 'vxlan',
      vni: 1,
      port: 0,
      mtu: 0,
      learning: false,
      directRouting: false,
      gbp: false,
    });
    expect(
      parseNetworkConfig({ Network: '10.1.0.0/16', Backend: { Type: 'Host-GW' } }).backend.type,
    ).toBe('host-gw');
    expect(
      parseNetworkConfig({ Network: '10.1.0.0/16', Backend: { Type: 'alloc' } }).backend,
    ).toEqual({ type: 'alloc' });
    expect(parseNetworkConfig({ Network: '10.1.0.0/16' }).enableNftables).toBe(false);
    const nft = parseNetworkConfig({ Network: '10.1.0.0/16', EnableNFTables: true });
    expect(nft.enableNftables).toBe(true);
    expect(JSON.parse(networkConfigJson(nft)).EnableNFTables).toBe(true);
    expect(fails({ Network: '10.1.0.0/16', EnableNFTables: 'yes' })).toMatch(
      /EnableNFTables must be a boolean, not "yes"/,
    );
  });

  it('reads the backend options of udp and vxlan, and refuses unknown types', () => {
    expect(
      parseNetworkConfig({ Network: '10.1.0.0/16', Backend: { Type: 'udp', Port: 9000 } }).backend,
    ).toEqual({ type: 'udp', port: 9000 });
    const v = parseNetworkConfig({
      Network: '10.1.0.0/16',
      Backend: { Type: 'vxlan', MTU: 1400, Learning: true, DirectRouting: true, GBP: true },
    }).backend;
    expect(v).toEqual({
      type: 'vxlan',
      vni: 1,
      port: 0,
      mtu: 1400,
      learning: true,
      directRouting: true,
      gbp: true,
    });
    expect(
      parseNetworkConfig({ Network: '10.1.0.0/16', Backend: { Type: 'host-gw' } }).backend.type,
    ).toBe('host-gw');
    expect(fails({ Network: '10.1.0.0/16', Backend: { Type: 'ipip' } })).toMatch(
      /Backend.Type "ipip" is not a backend weft runs: use udp, vxlan, wireguard, host-gw or alloc/,
    );
    expect(fails({ Network: '10.1.0.0/16', Backend: { Type: 'vxlan', VNI: 2 ** 24 } })).toMatch(
      /Backend.VNI 16777216 must fit 24 bits/,
    );
    expect(fails({ Network: '10.1.0.0/16', Backend: { Type: 'vxlan', VNI: 'one' } })).toMatch(
      /Backend.VNI must be a number/,
    );
    expect(fails({ Network: '10.1.0.0/16', Backend: { Type: 'udp', Port: 70000 } })).toMatch(
      /Backend.Port 70000 must be 1..65535/,
    );
    expect(fails({ Network: '10.1.0.0/16', Backend: { Type: 'vxlan', Port: -1 } })).toMatch(
      /Backend.Port must be a non-negative integer, not -1/,
    );
    expect(fails({ Network: '10.1.0.0/16', Backend: { Type: 'vxlan', MTU: 40 } })).toMatch(
      /Backend.MTU 40 must be 68..65535, or 0 to derive it/,
    );
    expect(fails({ Network: '10.1.0.0/16', Backend: { Type: 'vxlan', GBP: 'yes' } })).toMatch(
      /Backend.GBP must be a boolean, not "yes"/,
    );
    expect(fails({ Network: '10.1.0.0/16', Backend: 'vxlan' })).toMatch(
      /Backend must be an object/,
    );
  });

  it("reads flannel's wireguard options with its defaults (pkg/backend/wireguard RegisterNetwork)", () => {
    expect(
      parseNetworkConfig({ Network: '10.1.0.0/16', Backend: { Type: 'wireguard' } }).backend,
    ).toEqual({
      type: 'wireguard',
      listenPort: 51820,
      listenPortV6: 51821,
      mtu: 0,
      psk: undefined,
      persistentKeepaliveSeconds: 0,
      mode: 'separate',
    });
    const psk = 'HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=';
    expect(
      parseNetworkConfig({
        Network: '10.1.0.0/16',
        Backend: {
          Type: 'WireGuard',
          listenport: 51000,
          PSK: psk,
          PersistentKeepaliveInterval: 25,
          Mode: 'auto',
          MTU: 1400,
        },
      }).backend,
    ).toMatchObject({
      listenPort: 51000,
      psk,
      persistentKeepaliveSeconds: 25,
      mode: 'auto',
      mtu: 1400,
    });
    const wg = (b: object) =>
      fails({ Network: '10.1.0.0/16', Backend: { Type: 'wireguard', ...b } });
    expect(wg({ PSK: 'abc' })).toMatch(/Backend.PSK is not a WireGuard key/);
    expect(wg({ Mode: 'both' })).toMatch(
      /Backend.Mode "both" is not one of separate, auto, ipv4, ipv6/,
    );
    expect(wg({ ListenPort: 70000 })).toMatch(
      /Backend.ListenPort 70000 must be a whole number 0..65535/,
    );
    expect(wg({ PersistentKeepaliveInterval: 1.5 })).toMatch(/Backend.PersistentKeepaliveInterval/);
    expect(wg({ MTU: 100 })).toMatch(/Backend.MTU 100 leaves no room/);
  });

  it('reads the IPv6 fields with their defaults', () => {
    const c = parseNetworkConfig({
      Network: '10.1.0.0/16',
      EnableIPv6: true,
      IPv6Network: 'fc00::/48',
    });
    expect(c.ipv6SubnetLen).toBe(64);
    expect(formatIpv6(c.ipv6SubnetMin!)).toBe('fc00:0:0:1::');
    expect(formatIpv6(c.ipv6SubnetMax!)).toBe('fc00:0:0:ffff::');
    expect(fails({ Network: '10.1.0.0/16', EnableIPv6: true })).toMatch(
      /IPv6Network is required when EnableIPv6 is true/,
    );
    expect(fails({ Network: '10.1.0.0/16', EnableIPv6: true, IPv6Network: 'fc00::/125' })).toMatch(
      /IPv6Network \/125 is too small/,
    );
    const v6only = parseNetworkConfig({
      EnableIPv4: false,
      EnableIPv6: true,
      IPv6Network: 'fc00::/64',
    });
    expect(v6only.network).toBeUndefined();
    expect(v6only.ipv6SubnetLen).toBe(66);
    // IPv6SubnetMin/Max: inside the network, on a subnet boundary; and back as flannel's JSON.
    const ranged = parseNetworkConfig({
      EnableIPv4: false,
      EnableIPv6: true,
      IPv6Network: 'fd00:10:244::/48',
      IPv6SubnetMin: 'fd00:10:244:10::',
      IPv6SubnetMax: 'fd00:10:244:1f::',
      Backend: { Type: 'host-gw' },
    });
    expect(JSON.parse(networkConfigJson(ranged))).toEqual({
      EnableIPv4: false,
      EnableIPv6: true,
      IPv6Network: 'fd00:10:244::/48',
      IPv6SubnetLen: 64,
      IPv6SubnetMin: 'fd00:10:244:10::',
      IPv6SubnetMax: 'fd00:10:244:1f::',
      Backend: { Type: 'host-gw' },
    });
    expect(
      fails({
        EnableIPv4: false,
        EnableIPv6: true,
        IPv6Network: 'fd00::/48',
        IPv6SubnetMin: 'fd00:0:0:1::1',
      }),
    ).toMatch(/IPv6SubnetMin fd00:0:0:1::1 is not on a \/64 boundary/);
    expect(
      fails({
        EnableIPv4: false,
        EnableIPv6: true,
        IPv6Network: 'fd00::/48',
        IPv6SubnetMax: 'fd01::',
      }),
    ).toMatch(/IPv6SubnetMax fd01:: is not inside IPv6Network fd00::\/48/);
    expect(fails({ EnableIPv4: false, EnableIPv6: false })).toMatch(/both false/);
  });

  it('says what is wrong with malformed JSON and missing fields', () => {
    expect(fails('{"Network": ')).toMatch(/network config is not JSON/);
    expect(fails('[1]')).toMatch(/must be a JSON object/);
    expect(fails({ Backend: { Type: 'vxlan' } })).toMatch(/Network is required/);
    expect(fails({ Network: 'fc00::/48' })).toMatch(/Network "fc00::\/48" must be an IPv4 network/);
  });
});
