import { type Cidr4, type Cidr6, isWeftError, parseCidr } from '@weft/core';
import { describe, expect, it } from 'vitest';
import {
  leaseAttrsJson,
  parseLeaseAttrs,
  parseSubnetKey,
  subnetKey,
  vxlanLeaseData,
} from '../src/index.js';

describe("flannel's lease keys and values", () => {
  it('names keys as flannel does, single and dual stack', () => {
    expect(subnetKey(parseCidr('10.244.1.0/24') as Cidr4)).toBe('10.244.1.0-24');
    expect(subnetKey(parseCidr('10.244.1.0/24') as Cidr4, parseCidr('fc00::/64') as Cidr6)).toBe(
      '10.244.1.0-24&fc00::-64',
    );
    const back = parseSubnetKey('10.244.1.0-24&fc00::-64');
    expect(back?.subnet.prefixLength).toBe(24);
    expect(back?.subnet6?.prefixLength).toBe(64);
    expect(parseSubnetKey('/coreos.com/network/subnets/10.1.2.0-24')?.subnet.address).toBe(
      0x0a010200,
    );
    expect(parseSubnetKey('config')).toBeUndefined();
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
  });
});
