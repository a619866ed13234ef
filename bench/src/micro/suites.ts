import { encapSuite } from './encap.js';
import { fdbSuite } from './fdb.js';
import { pumpSuite } from './pump.js';
import type { MicroSuite } from './suite.js';
import { wireguardSuite } from './wireguard.js';

/** Every package's micro suite; each package adds one line. */
export const suites: MicroSuite[] = [encapSuite, fdbSuite, pumpSuite, wireguardSuite];
