/**
 * TCP MSS clamping for the layer-3 tunnel: a SYN (or SYN-ACK) whose MSS
 * option promises more than fits the tunnel gets it lowered in place, with
 * the TCP checksum updated incrementally (RFC 1624), so TCP inside the tunnel
 * never sends segments the path cannot carry (no PMTU black hole even where
 * ICMP is filtered). IPv4, and IPv6 with TCP as the first next header (a SYN
 * behind extension headers is left alone; PMTU discovery still covers it).
 * @module
 */

import { updateChecksum16 } from "../netstack/wire/checksum.ts";

const swap16 = (v: number) => ((v & 0xff) << 8) | (v >> 8);

/**
 * Lowers the MSS option of a TCP SYN in `p` to at most `maxMss`; returns the
 * MSS now in the packet when it changed it, else 0. Never throws: anything
 * that is not a well-formed SYN is left as it is.
 */
export function clampMss(p: Uint8Array, maxMss: number): number {
  if (p.length < 1) return 0;
  let tcp: number;
  let end: number;
  const version = p[0] >> 4;
  if (version === 4) {
    if (p.length < 20 || p[9] !== 6) return 0;
    const ihl = (p[0] & 0x0f) * 4;
    const total = (p[2] << 8) | p[3];
    const fragOffset = ((p[6] & 0x1f) << 8) | p[7];
    if (ihl < 20 || fragOffset !== 0 || total > p.length || total < ihl + 20) return 0;
    tcp = ihl;
    end = total;
  } else if (version === 6) {
    if (p.length < 60 || p[6] !== 6) return 0;
    const payload = (p[4] << 8) | p[5];
    if (40 + payload > p.length || payload < 20) return 0;
    tcp = 40;
    end = 40 + payload;
  } else return 0;
  if ((p[tcp + 13] & 0x02) === 0) return 0; // not a SYN
  const doff = (p[tcp + 12] >> 4) * 4;
  if (doff < 20 || tcp + doff > end) return 0;
  for (let i = tcp + 20; i < tcp + doff;) {
    const kind = p[i];
    if (kind === 0) break; // end of options
    if (kind === 1) {
      i++;
      continue;
    }
    if (i + 1 >= tcp + doff) return 0;
    const len = p[i + 1];
    if (len < 2 || i + len > tcp + doff) return 0;
    if (kind === 2 && len === 4) {
      const mss = (p[i + 2] << 8) | p[i + 3];
      if (mss <= maxMss) return 0;
      const at = i + 2 - tcp; // offset of the value in the TCP segment
      const c = (p[tcp + 16] << 8) | p[tcp + 17];
      const next = at % 2 === 0
        ? updateChecksum16(c, mss, maxMss)
        : updateChecksum16(c, swap16(mss), swap16(maxMss));
      p[i + 2] = maxMss >> 8;
      p[i + 3] = maxMss & 0xff;
      p[tcp + 16] = next >> 8;
      p[tcp + 17] = next & 0xff;
      return maxMss;
    }
    i += len;
  }
  return 0;
}

/** The largest MSS that fits a tunnel MTU for IPv4 (40 bytes of headers) or IPv6 (60). */
export function mssFor(mtu: number, version: 4 | 6): number {
  return mtu - (version === 4 ? 40 : 60);
}
