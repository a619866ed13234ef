// The published packages as an ES module program imports them.
import { createRequire } from 'node:module';

const { check } = createRequire(import.meta.url)('./check.cjs');
const m = {
  core: await import('@weft/core'),
  encap: await import('@weft/encap'),
  fdb: await import('@weft/fdb'),
  tun: await import('@weft/tun'),
  netlink: await import('@weft/netlink'),
  dataplane: await import('@weft/dataplane'),
  subnet: await import('@weft/subnet'),
  agent: await import('@weft/agent'),
  cni: await import('@weft/cni'),
};
console.log(JSON.stringify({ loader: 'esm', ...(await check(m)) }));
