/** The frames of a classic libpcap file (not pcapng), as the golden vectors are stored. */
export function pcapFrames(file: Buffer): Buffer[] {
  const magic = file.readUInt32LE(0);
  // 0xa1b2c3d4 (microseconds) or 0xa1b23c4d (nanoseconds), in the writer's byte order.
  const little = magic === 0xa1b2c3d4 || magic === 0xa1b23c4d;
  if (!little && ![0xa1b2c3d4, 0xa1b23c4d].includes(file.readUInt32BE(0)))
    throw new Error('not a classic pcap file (pcapng is not read here)');
  const u32 = (off: number) => (little ? file.readUInt32LE(off) : file.readUInt32BE(off));
  const frames: Buffer[] = [];
  // A 24-byte file header, then per frame a 16-byte record header whose third word is its length.
  for (let off = 24; off + 16 <= file.length; ) {
    const length = u32(off + 8);
    frames.push(file.subarray(off + 16, off + 16 + length));
    off += 16 + length;
  }
  return frames;
}
