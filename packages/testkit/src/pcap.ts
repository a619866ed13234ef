/**
 * A minimal reader and writer for classic libpcap files (not pcapng), enough for golden vectors
 * and for handing weft's frames to tshark and scapy.
 */

/** libpcap link types used here. */
export const LINKTYPE_ETHERNET = 1;
export const LINKTYPE_RAW = 101;

export interface PcapRecord {
  /** Capture time in microseconds since the epoch. */
  timestampMicros: number;
  /** Length on the wire; larger than data.length when the capture was cut at the snap length. */
  originalLength: number;
  /** The captured bytes (a view into the file's buffer). */
  data: Buffer;
}

export interface PcapFile {
  linkType: number;
  snapLength: number;
  records: PcapRecord[];
}

const MAGIC_MICROS = 0xa1b2c3d4;
const MAGIC_NANOS = 0xa1b23c4d;

export function readPcap(file: Buffer): PcapFile {
  if (file.length < 24)
    throw new Error(`pcap: file too short for a global header (${file.length} bytes)`);
  let little: boolean;
  let nanos: boolean;
  const magicLE = file.readUInt32LE(0);
  const magicBE = file.readUInt32BE(0);
  if (magicLE === MAGIC_MICROS || magicLE === MAGIC_NANOS) {
    little = true;
    nanos = magicLE === MAGIC_NANOS;
  } else if (magicBE === MAGIC_MICROS || magicBE === MAGIC_NANOS) {
    little = false;
    nanos = magicBE === MAGIC_NANOS;
  } else {
    throw new Error(`pcap: bad magic 0x${magicBE.toString(16)} (pcapng is not supported)`);
  }
  const u32 = (off: number) => (little ? file.readUInt32LE(off) : file.readUInt32BE(off));
  const snapLength = u32(16);
  const linkType = u32(20) & 0xffff;
  const records: PcapRecord[] = [];
  let off = 24;
  while (off < file.length) {
    if (off + 16 > file.length) throw new Error(`pcap: truncated record header at byte ${off}`);
    const sec = u32(off);
    const frac = u32(off + 4);
    const inclLen = u32(off + 8);
    const origLen = u32(off + 12);
    off += 16;
    if (off + inclLen > file.length) throw new Error(`pcap: truncated record data at byte ${off}`);
    records.push({
      timestampMicros: sec * 1e6 + (nanos ? Math.floor(frac / 1000) : frac),
      originalLength: origLen,
      data: file.subarray(off, off + inclLen),
    });
    off += inclLen;
  }
  return { linkType, snapLength, records };
}

/** Writes frames as a little-endian microsecond pcap file. */
export function writePcap(frames: readonly Uint8Array[], linkType = LINKTYPE_ETHERNET): Buffer {
  const size = 24 + frames.reduce((n, f) => n + 16 + f.length, 0);
  const out = Buffer.alloc(size);
  out.writeUInt32LE(MAGIC_MICROS, 0);
  out.writeUInt16LE(2, 4);
  out.writeUInt16LE(4, 6);
  out.writeUInt32LE(0, 8);
  out.writeUInt32LE(0, 12);
  out.writeUInt32LE(262144, 16);
  out.writeUInt32LE(linkType, 20);
  let off = 24;
  frames.forEach((frame, i) => {
    out.writeUInt32LE(1_700_000_000 + i, off);
    out.writeUInt32LE(0, off + 4);
    out.writeUInt32LE(frame.length, off + 8);
    out.writeUInt32LE(frame.length, off + 12);
    out.set(frame, off + 16);
    off += 16 + frame.length;
  });
  return out;
}
