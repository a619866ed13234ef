import { type Cidr4, type Cidr6, isWeftError, parseCidr } from '@weft/core';
import { describe, expect, it } from 'vitest';
import {
  leaseAttrsJson,
  parseLeaseAttrs,
  parseSubnetKey,
  subnetKey,
  vxlanLeaseData,
  vxlanLeaseDataV6,
} from '../src/index.js';

describe("flannel's lease keys and values", () => {
  it('names keys as flannel does, single and dual stack', () => {
    expect(subnetKey(parseCidr('10.244.1.0/24') as Cidr4)).toBe('10.244.1.0-24');
    expect(subnetKey(parseCidr('10.244.1.0/24') as Cidr4, parseCidr('fc00::/64') as Cidr6)).toBe(
      '10.244.1.0-24&fc00::-64',
    );
    const back = parseSubnetKey('10.244.1.0-24&fc00::-64');
    expect(back?.subnet?.prefixLength).toBe(24);
    expect(back?.subnet6?.prefixLength).toBe(64);
    expect(parseSubnetKey('/coreos.com/network/subnets/10.1.2.0-24')?.subnet?.address).toBe(
      0x0a010200,
    );
    expect(parseSubnetKey('config')).toBeUndefined();
    // IPv6 only: flannel's MakeSubnetKey with an empty IPv4 subnet, read back as no IPv4 subnet.
    const v6 = parseCidr('fd00:10:244:1::/64') as Cidr6;
    expect(subnetKey(undefined, v6)).toBe('0.0.0.0-0&fd00:10:244:1::-64');
    const only6 = parseSubnetKey('/coreos.com/network/subnets/0.0.0.0-0&fd00:10:244:1::-64');
    expect(only6?.subnet).toBeUndefined();
    expect(only6?.subnet6?.prefixLength).toBe(64);
    expect(parseSubnetKey('0.0.0.0-0')).toBeUndefined();
    expect(() => subnetKey(undefined)).toThrow(/needs an IPv4 or an IPv6 subnet/);
  });

  it('writes and reads the IPv6 fields: PublicIPv6, BackendV6Data, "0.0.0.0" for no IPv4', () => {
    const dual = {
      publicIp: '198.18.0.11',
      publicIpv6: '2001:2:0:0::11',
      backendType: 'vxlan',
      backendData: { VNI: 1, VtepMAC: '02:00:00:00:01:04' },
      backendV6Data: { VNI: 1, VtepMAC: '02:00:00:00:01:06' },
    };
    const json = leaseAttrsJson(dual);
    expect(json).toBe(
      '{"PublicIP":"198.18.0.11","PublicIPv6":"2001:2::11","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:00:00:00:01:04"},"BackendV6Data":{"VNI":1,"VtepMAC":"02:00:00:00:01:06"}}',
    );
    const back = parseLeaseAttrs(json);
    expect(back.publicIpv6).toBe('2001:2::11');
    expect(vxlanLeaseDataV6(back)).toEqual({ vni: 1, vtepMac: '02:00:00:00:01:06' });
    const only6 = leaseAttrsJson({
      publicIpv6: '2001:2::12',
      backendType: 'host-gw',
    });
    expect(only6).toBe('{"PublicIP":"0.0.0.0","PublicIPv6":"2001:2::12","BackendType":"host-gw"}');
    expect(parseLeaseAttrs(only6)).toEqual({ publicIpv6: '2001:2::12', backendType: 'host-gw' });
    // encoding/json leaves a missing PublicIP at its zero value: an IPv6-only lease without it still reads.
    expect(parseLeaseAttrs('{"PublicIPv6":"2001:2::13"}').publicIp).toBeUndefined();
  });

  it("writes flannel's exact JSON (PublicIPv6 null, Go field order)", () => {
    const json = leaseAttrsJson({
      publicIp: '192.168.64.3',
      backendType: 'vxlan',
      backendData: { VNI: 1, VtepMAC: 'c6:d2:32:6f:8f:44' },
    });
    expect(json).toBe(
      '{"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}',
    );
    expect(parseLeaseAttrs(json)).toEqual({
      publicIp: '192.168.64.3',
      backendType: 'vxlan',
      backendData: { VNI: 1, VtepMAC: 'c6:d2:32:6f:8f:44' },
    });
    expect(vxlanLeaseData(parseLeaseAttrs(json))).toEqual({ vni: 1, vtepMac: 'c6:d2:32:6f:8f:44' });
  });

  it('reads case-insensitively and refuses what is not a lease', () => {
    expect(parseLeaseAttrs('{"publicip":"10.0.0.1","backendtype":"udp"}').publicIp).toBe(
      '10.0.0.1',
    );
    const code = (text: string) => {
      try {
        parseLeaseAttrs(text, 'subnets/10.244.3.0-24');
      } catch (err) {
        return isWeftError(err, 'ERR_SUBNET_BAD_LEASE') ? err.message : 'other error';
      }
      return 'parsed';
    };
    expect(code('not json')).toMatch(/subnets\/10\.244\.3\.0-24: not JSON/);
    expect(code('{"PublicIP":"300.1.1.1"}')).toMatch(/PublicIP "300.1.1.1" is not an IPv4 address/);
    expect(code('{"PublicIP":"10.0.0.1","PublicIPv6":"nope"}')).toMatch(/PublicIPv6 "nope"/);
    expect(code('{"PublicIP":null,"PublicIPv6":"2001:2::1"}')).toMatch(/PublicIP null is not/);
    expect(code('{"BackendType":"vxlan"}')).toMatch(/neither a PublicIP nor a PublicIPv6/);
    expect(code('{"PublicIP":"0.0.0.0","PublicIPv6":null}')).toMatch(/neither a PublicIP/);
  });
});
