import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  cidrNetwork,
  formatCidr,
  formatIpv4,
  formatIpv6,
  formatMac,
  ipv4InCidr,
  macIsMulticast,
  parseCidr,
  parseIp,
  parseIpv4,
  parseIpv6,
  parseMac,
  randomMac,
  tryParseIpv4,
  tryParseIpv6,
  WeftError,
} from '../src/index.js';

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    return err instanceof WeftError ? err.code : 'not a WeftError';
  }
  return undefined;
}

describe('IPv4', () => {
  it('parses to a host-order number and formats back', () => {
    expect(parseIpv4('10.244.1.0')).toBe(0x0af40100);
    expect(parseIpv4('255.255.255.255')).toBe(0xffffffff);
    expect(formatIpv4(0xc6120002)).toBe('198.18.0.2');
  });

  it('refuses malformed text with ERR_BAD_IP', () => {
    for (const bad of [
      '',
      '1.2.3',
      '1.2.3.4.5',
      '256.1.1.1',
      '01.2.3.4',
      '1.2.3.-4',
      ' 1.2.3.4',
      'a.b.c.d',
    ]) {
      expect(
        codeOf(() => parseIpv4(bad)),
        bad,
      ).toBe('ERR_BAD_IP');
    }
  });

  it('round-trips every uint32', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 0xffffffff }), (n) => parseIpv4(formatIpv4(n)) === n),
    );
  });
});

describe('IPv6', () => {
  it('parses the forms of RFC 4291 2.2', () => {
    expect(formatIpv6(parseIpv6('fc00::'))).toBe('fc00::');
    expect(formatIpv6(parseIpv6('::1'))).toBe('::1');
    expect(formatIpv6(parseIpv6('2001:DB8:0:0:1:0:0:1'))).toBe('2001:db8::1:0:0:1');
    expect(formatIpv6(parseIpv6('::ffff:10.1.2.3'))).toBe('::ffff:10.1.2.3');
    expect(formatIpv6(parseIpv6('1:2:3:4:5:6:7:8'))).toBe('1:2:3:4:5:6:7:8');
    expect(parseIpv6('fe80::1')[0]).toBe(0xfe);
  });

  it('refuses malformed text', () => {
    for (const bad of [
      ':',
      '1:::2',
      '1::2::3',
      '1:2:3:4:5:6:7:8:9',
      '12345::',
      'g::',
      '1:2:3:4:5:6:7::8:9',
      '::1.2.3',
    ]) {
      expect(tryParseIpv6(bad), bad).toBeUndefined();
    }
  });

  it('formats as RFC 5952 exactly as the WHATWG URL serializer does, and round-trips', () => {
    const words = fc.array(fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 0xffff })), {
      minLength: 8,
      maxLength: 8,
    });
    fc.assert(
      fc.property(words, (ws) => {
        const bytes = new Uint8Array(16);
        ws.forEach((w, i) => {
          bytes[i * 2] = w >> 8;
          bytes[i * 2 + 1] = w & 0xff;
        });
        const text = formatIpv6(bytes);
        expect(parseIpv6(text)).toEqual(bytes);
        const isMapped = ws.slice(0, 5).every((w) => w === 0) && ws[5] === 0xffff;
        if (!isMapped) expect(text).toBe(new URL(`http://[${text}]/`).hostname.slice(1, -1));
      }),
    );
  });
});

describe('CIDR', () => {
  it('parses IPv4 and IPv6 networks', () => {
    expect(parseCidr('10.244.0.0/16')).toEqual({
      family: 4,
      address: 0x0af40000,
      prefixLength: 16,
    });
    expect(formatCidr(parseCidr('fc00::/64'))).toBe('fc00::/64');
    expect(formatCidr(parseCidr('0.0.0.0/0'))).toBe('0.0.0.0/0');
  });

  it('names each kind of bad input by code', () => {
    expect(codeOf(() => parseCidr('10.244.0.0'))).toBe('ERR_BAD_CIDR');
    expect(codeOf(() => parseCidr('10.244.0/16'))).toBe('ERR_BAD_CIDR');
    expect(codeOf(() => parseCidr('10.244.0.0/33'))).toBe('ERR_BAD_PREFIX_LENGTH');
    expect(codeOf(() => parseCidr('fc00::/129'))).toBe('ERR_BAD_PREFIX_LENGTH');
    expect(codeOf(() => parseCidr('10.244.0.0/-1'))).toBe('ERR_BAD_PREFIX_LENGTH');
    expect(codeOf(() => parseCidr('10.244.1.1/16'))).toBe('ERR_CIDR_HOST_BITS');
    expect(codeOf(() => parseCidr('fc00::1/64'))).toBe('ERR_CIDR_HOST_BITS');
  });

  it('suggests the network when host bits are set, and allows them on request', () => {
    expect(() => parseCidr('10.244.1.1/24')).toThrow(/did you mean 10\.244\.1\.0\/24/);
    expect(parseCidr('10.244.1.1/24', { allowHostBits: true }).address).toBe(0x0af40101);
  });

  it('agrees with a bitwise reference on membership', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 0xffffffff }),
        fc.integer({ min: 0, max: 32 }),
        fc.integer({ min: 0, max: 0xffffffff }),
        (a, len, ip) => {
          const net = cidrNetwork({ family: 4, address: a, prefixLength: len });
          if (net.family !== 4) throw new Error('family');
          const inRef = len === 0 || ip >>> (32 - len) === a >>> (32 - len);
          expect(ipv4InCidr(ip, net)).toBe(inRef);
        },
      ),
    );
  });

  it('clears IPv6 host bits at any prefix length', () => {
    const net = cidrNetwork(parseCidr('fc00:ffff:ffff::/20', { allowHostBits: true }));
    expect(formatCidr(net)).toBe('fc00:f000::/20');
  });
});

describe('MAC', () => {
  it('parses colon and dash forms and formats in lower case', () => {
    expect(parseMac('02:00:00:00:01:01')).toBe(0x020000000101);
    expect(parseMac('C6-D2-32-6F-8F-44')).toBe(0xc6d2326f8f44);
    expect(formatMac(0xc6d2326f8f44)).toBe('c6:d2:32:6f:8f:44');
  });

  it('refuses malformed MACs with ERR_BAD_MAC', () => {
    for (const bad of [
      '',
      '02:00:00:00:01',
      '02:00:00:00:01:01:01',
      '02:00-00:00:01:01',
      'zz:00:00:00:01:01',
    ]) {
      expect(
        codeOf(() => parseMac(bad)),
        bad,
      ).toBe('ERR_BAD_MAC');
    }
  });

  it('round-trips every 48-bit value', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 2 ** 48 - 1 }), (m) => parseMac(formatMac(m)) === m),
    );
  });

  it('makes random MACs that are unicast and locally administered', () => {
    for (let i = 0; i < 100; i++) {
      const mac = randomMac();
      expect(macIsMulticast(mac)).toBe(false);
      expect(Math.floor(mac / 2 ** 40) & 0x02).toBe(2);
    }
    expect(macIsMulticast(parseMac('01:00:5e:00:00:01'))).toBe(true);
  });
});

describe('parseIp', () => {
  it('tells the family', () => {
    expect(parseIp('198.18.0.1').family).toBe(4);
    expect(parseIp('fd00::1').family).toBe(6);
    expect(codeOf(() => parseIp('nope'))).toBe('ERR_BAD_IP');
    expect(tryParseIpv4('1.2.3.4')).toBe(0x01020304);
  });
});
