import {
  type Cidr4,
  type Cidr6,
  cidrNetwork,
  formatCidr,
  formatIpv6,
  parseCidr,
  parseIpv6,
} from '@weft/core';
import { flannelDecodeLeases, flannelEncodeLeases, haveTools } from '@weft/testkit';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  type LeaseAttrs,
  leaseAttrsJson,
  parseLeaseAttrs,
  parseSubnetKey,
  subnetKey,
  vxlanLeaseData,
  vxlanLeaseDataV6,
} from '../src/index.js';

/**
 * weft's lease keys and values against flannel's own types: a Go fixture (testkit) restating
 * pkg/lease LeaseAttrs, pkg/ip IP4/IP6/IP4Net/IP6Net, the vxlan backend's vxlanLeaseAttrs and
 * pkg/subnet ParseSubnetKey/MakeSubnetKey field for field, run under Debian's golang-go.
 */
const PREFIX = '/coreos.com/network/subnets/';
const v4 = (s: string) => parseCidr(s) as Cidr4;
const v6 = (s: string) => parseCidr(s) as Cidr6;

const weftLeases: { what: string; subnet?: Cidr4; subnet6?: Cidr6; attrs: LeaseAttrs }[] = [
  {
    what: 'IPv4 vxlan',
    subnet: v4('10.244.1.0/24'),
    attrs: {
      publicIp: '198.18.0.11',
      backendType: 'vxlan',
      backendData: { VNI: 1, VtepMAC: '02:42:ac:11:00:02' },
    },
  },
  {
    what: 'dual-stack vxlan',
    subnet: v4('10.244.1.0/24'),
    subnet6: v6('fd00:10:244:1::/64'),
    attrs: {
      publicIp: '198.18.0.11',
      publicIpv6: '2001:2::11',
      backendType: 'vxlan',
      backendData: { VNI: 1, VtepMAC: '02:42:ac:11:00:02' },
      backendV6Data: { VNI: 1, VtepMAC: 'a2:0e:19:00:00:06' },
    },
  },
  {
    what: 'IPv6-only vxlan, VNI 4096',
    subnet6: v6('fd00:10:244:2a::/64'),
    attrs: {
      publicIpv6: '2001:db8:0:1:0:0:0:12',
      backendType: 'vxlan',
      backendV6Data: { VNI: 4096, VtepMAC: 'a2:0e:19:00:00:07' },
    },
  },
  {
    what: 'dual-stack host-gw',
    subnet: v4('10.244.3.0/24'),
    subnet6: v6('fd00:10:244:3::/64'),
    attrs: { publicIp: '198.18.0.13', publicIpv6: '2001:2::13', backendType: 'host-gw' },
  },
  {
    what: 'IPv6-only host-gw on a /120',
    subnet6: v6('fd00:10:244::300/120'),
    attrs: { publicIpv6: 'fe80::1', backendType: 'host-gw' },
  },
];

describe.skipIf(!haveTools("flannel's lease types in Go", 'go'))(
  "weft's leases through flannel's own types (Go)",
  () => {
    it('flanneld reads every lease weft writes, each family, and writes back the same key and bytes', async () => {
      const leases = weftLeases.map((l) => ({
        key: `${PREFIX}${subnetKey(l.subnet, l.subnet6)}`,
        value: leaseAttrsJson(l.attrs),
      }));
      const decoded = await flannelDecodeLeases(leases);
      for (const [i, l] of weftLeases.entries()) {
        const d = decoded[i];
        expect(d.ok, `${l.what}: ${d.error}`).toBe(true);
        expect(d.subnet, l.what).toBe(l.subnet ? formatCidr(l.subnet) : '0.0.0.0/0');
        expect(d.enableIPv6, l.what).toBe(l.subnet6 !== undefined);
        if (l.subnet6) expect(d.subnet6, l.what).toBe(formatCidr(l.subnet6));
        expect(d.publicIP, l.what).toBe(l.attrs.publicIp ?? '0.0.0.0');
        expect(d.publicIPv6, l.what).toBe(
          l.attrs.publicIpv6 ? formatIpv6(parseIpv6(l.attrs.publicIpv6)) : null,
        );
        expect(d.backendType, l.what).toBe(l.attrs.backendType);
        if (l.attrs.backendType === 'vxlan') {
          // What the vxlan backend's handleSubnetEvents decodes; an error there skips the whole lease.
          expect(d.vxlan6Error, l.what).toBeUndefined();
          if (l.subnet6) expect(d.vxlan6, l.what).toEqual(vxlanLeaseDataV6(l.attrs));
          if (l.subnet) {
            expect(d.vxlanError, l.what).toBeUndefined();
            expect(d.vxlan, l.what).toEqual(vxlanLeaseData(l.attrs));
          }
        }
        expect(`${PREFIX}${d.key}`, l.what).toBe(leases[i].key);
        expect(d.value, l.what).toBe(leases[i].value);
      }
    });

    it('weft reads what a dual-stack or IPv6-only flanneld writes, and writes it back byte for byte', async () => {
      const written = await flannelEncodeLeases([
        {
          subnet: '10.244.5.0/24',
          subnet6: 'fd00:10:244:5::/64',
          publicIP: '198.18.0.15',
          publicIPv6: '2001:2::15',
          backendType: 'vxlan',
          vni: 1,
          mac: '6e:5d:4c:3b:2a:19',
          mac6: '6e:5d:4c:3b:2a:1a',
        },
        {
          subnet6: 'fd00:10:244:6::/64',
          publicIPv6: '2001:2::16',
          backendType: 'vxlan',
          vni: 1,
          mac6: '6e:5d:4c:3b:2a:1b',
        },
        {
          subnet: '10.244.7.0/24',
          subnet6: 'fd00:10:244:7::/64',
          publicIP: '198.18.0.17',
          publicIPv6: '2001:2::17',
          backendType: 'host-gw',
        },
      ]);
      expect(written.map((w) => w.key)).toEqual([
        '10.244.5.0-24&fd00:10:244:5::-64',
        '0.0.0.0-0&fd00:10:244:6::-64',
        '10.244.7.0-24&fd00:10:244:7::-64',
      ]);
      const [dual, only6, hostGw] = written.map((w) => ({
        keys: parseSubnetKey(`${PREFIX}${w.key}`),
        attrs: parseLeaseAttrs(w.value),
        value: w.value,
      }));
      expect(dual.keys?.subnet && subnetKey(dual.keys.subnet, dual.keys.subnet6)).toBe(
        written[0].key,
      );
      expect(dual.attrs).toEqual({
        publicIp: '198.18.0.15',
        publicIpv6: '2001:2::15',
        backendType: 'vxlan',
        backendData: { VNI: 1, VtepMAC: '6e:5d:4c:3b:2a:19' },
        backendV6Data: { VNI: 1, VtepMAC: '6e:5d:4c:3b:2a:1a' },
      });
      expect(only6.keys?.subnet).toBeUndefined();
      expect(only6.attrs.publicIp).toBeUndefined();
      expect(vxlanLeaseDataV6(only6.attrs)).toEqual({ vni: 1, vtepMac: '6e:5d:4c:3b:2a:1b' });
      expect(hostGw.attrs).toEqual({
        publicIp: '198.18.0.17',
        publicIpv6: '2001:2::17',
        backendType: 'host-gw',
      });
      for (const w of [dual, only6, hostGw]) expect(leaseAttrsJson(w.attrs)).toBe(w.value);
    });

    it('the lease weft wrote before dual-stack (PublicIPv6 null, no BackendV6Data) is one a dual-stack flanneld skips whole', async () => {
      const [old] = await flannelDecodeLeases([
        {
          key: `${PREFIX}10.244.1.0-24&fd00:10:244:1::-64`,
          value:
            '{"PublicIP":"198.18.0.11","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:42:ac:11:00:02"}}',
        },
      ]);
      expect(old.vxlan6Error).toBe('unexpected end of JSON input');
    });

    it('keys flannel cannot read (prefix lengths past its 5- and 7-bit fields) are not subnets to weft either', async () => {
      const keys = ['10.244.1.0-32', '0.0.0.0-0&fd00::-128', '10.244.1.0-24&fd00::-64'];
      const decoded = await flannelDecodeLeases(
        keys.map((k) => ({ key: PREFIX + k, value: '{"PublicIP":"198.18.0.1"}' })),
      );
      expect(decoded.map((d) => d.ok)).toEqual([false, false, true]);
      expect(keys.map((k) => parseSubnetKey(PREFIX + k) !== undefined)).toEqual([
        false,
        false,
        true,
      ]);
    });

    it('IPv6 subnets and addresses are spelled as Go spells them (RFC 5952), for any address', async () => {
      // Go prints an address whose first 12 bytes are zero as IPv4 (flannel's IP6.ToIP): not a network anyone leases.
      const address = fc
        .array(fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 0xffff })), {
          minLength: 8,
          maxLength: 8,
        })
        .filter(
          (w) =>
            w.slice(0, 6).some((x) => x !== 0) &&
            !(w.slice(0, 5).every((x) => x === 0) && w[5] === 0xffff),
        )
        .map((w) => {
          const b = new Uint8Array(16);
          w.forEach((x, i) => {
            b[i * 2] = x >> 8;
            b[i * 2 + 1] = x & 0xff;
          });
          return b;
        });
      const samples = fc.sample(fc.tuple(address, address), 300);
      const leases = samples.map(([net, pub]) => {
        // flannel reads a key's prefix lengths as 5- and 7-bit numbers: /126 is the longest IPv6 one it takes.
        const subnet6 = cidrNetwork({ family: 6, address: net, prefixLength: 124 }) as Cidr6;
        return {
          key: `${PREFIX}${subnetKey(undefined, subnet6)}`,
          value: leaseAttrsJson({ publicIpv6: formatIpv6(pub), backendType: 'host-gw' }),
        };
      });
      const decoded = await flannelDecodeLeases(leases);
      for (const [i, d] of decoded.entries()) {
        expect(`${PREFIX}${d.key}`).toBe(leases[i].key);
        expect(d.value).toBe(leases[i].value);
      }
    });
  },
);
