/**
 * A tiny reader for classic pcap files (not pcapng), for the netstack tests: yields each
 * record's IP packet, whatever the link type among those the fixtures use — EN10MB
 * (Ethernet, with 802.1Q tags skipped), LINUX_SLL, LINUX_SLL2 and RAW.
 * @module
 */

/** One IP packet from a capture. */
export interface PcapPacket {
  /** Index of the record in the file (0-based). */
  index: number;
  /** Capture timestamp in microseconds. */
  timeUs: number;
  /** The IP packet (a view into the file's bytes), or null when the frame is not IP. */
  ip: Uint8Array | null;
  /** The whole captured frame. */
  frame: Uint8Array;
}

/** Link types handled. */
export const LinkType = { Ethernet: 1, Raw: 101, LinuxSll: 113, LinuxSll2: 276 } as const;

function ipFromEthertype(type: number, frame: Uint8Array, at: number): Uint8Array | null {
  return type === 0x0800 || type === 0x86dd ? frame.subarray(at) : null;
}

/** Parses a pcap file's bytes into its packets. Throws on a file that is not pcap. */
export function readPcap(bytes: Uint8Array): { linkType: number; packets: PcapPacket[] } {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (bytes.length < 24) throw new Error("pcap: short file");
  const magic = dv.getUint32(0, true);
  let le: boolean;
  let nanos = false;
  if (magic === 0xa1b2c3d4 || magic === 0xa1b23c4d) {
    le = true;
    nanos = magic === 0xa1b23c4d;
  } else if (magic === 0xd4c3b2a1 || magic === 0x4d3cb2a1) {
    le = false;
    nanos = magic === 0x4d3cb2a1;
  } else throw new Error("pcap: bad magic (pcapng is not supported)");
  const linkType = dv.getUint32(20, le) & 0x0fffffff;
  const packets: PcapPacket[] = [];
  let off = 24;
  for (let index = 0; off + 16 <= bytes.length; index++) {
    const sec = dv.getUint32(off, le);
    const frac = dv.getUint32(off + 4, le);
    const incl = dv.getUint32(off + 8, le);
    off += 16;
    if (off + incl > bytes.length) throw new Error("pcap: truncated record");
    const frame = bytes.subarray(off, off + incl);
    off += incl;
    let ip: Uint8Array | null = null;
    if (linkType === LinkType.Ethernet && frame.length >= 14) {
      let at = 12;
      let type = (frame[at] << 8) | frame[at + 1];
      while ((type === 0x8100 || type === 0x88a8) && frame.length >= at + 6) {
        at += 4;
        type = (frame[at] << 8) | frame[at + 1];
      }
      ip = ipFromEthertype(type, frame, at + 2);
    } else if (linkType === LinkType.LinuxSll && frame.length >= 16) {
      ip = ipFromEthertype((frame[14] << 8) | frame[15], frame, 16);
    } else if (linkType === LinkType.LinuxSll2 && frame.length >= 20) {
      ip = ipFromEthertype((frame[0] << 8) | frame[1], frame, 20);
    } else if (linkType === LinkType.Raw) {
      ip = frame;
    }
    packets.push({ index, timeUs: sec * 1e6 + (nanos ? frac / 1000 : frac), ip, frame });
  }
  return { linkType, packets };
}

/** Reads a fixture from tests/fixtures/netstack/. */
export function readFixture(name: string): PcapPacket[] {
  const url = new URL(`../fixtures/netstack/${name}`, import.meta.url);
  return readPcap(Deno.readFileSync(url)).packets;
}

/** Writes IP packets as a classic pcap file of link type RAW (for tshark cross-checks). */
export function writePcap(packets: Uint8Array[]): Uint8Array {
  const size = 24 + packets.reduce((s, p) => s + 16 + p.length, 0);
  const out = new Uint8Array(size);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, 0xa1b2c3d4, true);
  dv.setUint16(4, 2, true);
  dv.setUint16(6, 4, true);
  dv.setUint32(16, 65535, true);
  dv.setUint32(20, LinkType.Raw, true);
  let off = 24;
  packets.forEach((p, i) => {
    dv.setUint32(off, 1_700_000_000 + i, true);
    dv.setUint32(off + 8, p.length, true);
    dv.setUint32(off + 12, p.length, true);
    out.set(p, off + 16);
    off += 16 + p.length;
  });
  return out;
}
