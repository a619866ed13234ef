// The published packages as a CommonJS program requires them (require(esm): Node >= 20.19).
'use strict';
const { check } = require('./check.cjs');

const m = {
  core: require('@weft/core'),
  encap: require('@weft/encap'),
  fdb: require('@weft/fdb'),
  tun: require('@weft/tun'),
  netlink: require('@weft/netlink'),
  dataplane: require('@weft/dataplane'),
  subnet: require('@weft/subnet'),
  agent: require('@weft/agent'),
  cni: require('@weft/cni'),
};
check(m).then(
  (out) => console.log(JSON.stringify({ loader: 'cjs', ...out })),
  (err) => {
    console.error(err);
    process.exit(1);
  },
);
