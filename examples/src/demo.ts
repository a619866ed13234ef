import { decodeVectors } from './decode-vectors.js';

// The main job, for now: decode the frames captured from the kernel's VXLAN and flannel's UDP
// proxy through weft's own wire-format package.
console.log(
  'weft demo: frames captured from the Linux kernel VXLAN and flannel, decoded by @weft/encap',
);
decodeVectors((line) => console.log(line));
