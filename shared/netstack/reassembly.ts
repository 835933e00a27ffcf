/**
 * IP fragment reassembly (RFC 791 §3.2, RFC 815; IPv6 RFC 8200 §4.5), sans-I/O: fed
 * fragments and `now` (milliseconds, any monotonic origin), it returns whole datagrams;
 * {@link Reassembler.expire} and {@link Reassembler.nextDeadline} replace timers.
 *
 * Rules:
 * - Key: (src, dst, protocol, identification) for IPv4; (src, dst, identification) for IPv6.
 * - Bounds: datagram size ({@link ReassemblerOptions.maxDatagramSize}), reassemblies in
 *   progress, fragments per datagram and bytes held across all of them. A new datagram over
 *   the reassembly limit, or bytes over the byte limit, evict the oldest reassemblies first;
 *   a datagram that cannot fit alone is dropped.
 * - A fragment that overlaps one already held drops the whole datagram (RFC 5722's rule,
 *   applied to IPv4 too); an exact duplicate is ignored.
 * - Every fragment but the last must carry a non-zero multiple of 8 bytes. A first
 *   fragment too short for its transport header (TCP 20, UDP 8, ICMP 8 bytes) and a TCP
 *   fragment at offset 8 are dropped (RFC 1858 tiny-fragment attacks).
 * - Timeout: {@link ReassemblerOptions.timeoutMs} from the first fragment received
 *   (not refreshed). {@link Reassembler.expire} hands back the first fragment of each
 *   datagram that timed out having received it, for an ICMP "reassembly time exceeded".
 * - Output: IPv4 — the first fragment's header (options kept) with MF and offset cleared,
 *   the total length and checksum rewritten (DF kept). IPv6 — the first fragment's fixed
 *   header with Next Header set to the Fragment header's, the payload length rewritten;
 *   extension headers before the Fragment header (the unfragmentable part) are not kept.
 *
 * Failure convention: see `wire/error.ts` — `push` returns the datagram, `null` (held), or
 * a {@link WireError} saying why the fragment (and maybe its datagram) was dropped; it
 * never throws.
 * @module
 */

import { type Ipv4Packet, rewriteIpv4Checksum } from "./wire/ipv4.ts";
import type { Ipv6Packet } from "./wire/ipv6.ts";
import { WireError } from "./wire/error.ts";
import { IpProtocol } from "./wire/ip_protocol.ts";

/** Bounds of a {@link Reassembler}; every field has a default. */
export interface ReassemblerOptions {
  /** Largest reassembled packet (IP header included) in bytes. Default 65535. */
  maxDatagramSize?: number;
  /** Reassemblies in progress at once. Default 64. */
  maxReassemblies?: number;
  /** Fragments held per datagram. Default 128. */
  maxFragments?: number;
  /** Bytes held across all reassemblies (headers and data copies). Default 1 MiB. */
  maxBytes?: number;
  /** Milliseconds from a datagram's first fragment to its expiry. Default 30000. */
  timeoutMs?: number;
}

interface Piece {
  start: number;
  end: number;
  data: Uint8Array;
}

interface Entry {
  key: string;
  version: 4 | 6;
  deadline: number;
  pieces: Piece[];
  received: number;
  /** Length of the reassembled data, -1 until the last fragment arrived. */
  total: number;
  /** Header of the first fragment (everything before its data), null until it arrived. */
  header: Uint8Array | null;
  /** IPv6: next header announced by the Fragment headers. */
  nextHeader: number;
  bytes: number;
}

/** Smallest transport header a first fragment must hold, by protocol. */
function minTransportHeader(protocol: number): number {
  switch (protocol) {
    case IpProtocol.Tcp:
      return 20;
    case IpProtocol.Udp:
    case IpProtocol.Icmp:
    case IpProtocol.Icmpv6:
      return 8;
    default:
      return 0;
  }
}

/** Reassembles IPv4 (and IPv6) fragments within fixed bounds. */
export class Reassembler {
  readonly #maxDatagram: number;
  readonly #maxEntries: number;
  readonly #maxFragments: number;
  readonly #maxBytes: number;
  readonly #timeout: number;
  /** Insertion order = creation order: the first entry is the oldest. */
  readonly #entries = new Map<string, Entry>();
  #bytes = 0;

  /** Creates a reassembler with the given bounds (see {@link ReassemblerOptions}). */
  constructor(opts: ReassemblerOptions = {}) {
    this.#maxDatagram = opts.maxDatagramSize ?? 65535;
    this.#maxEntries = opts.maxReassemblies ?? 64;
    this.#maxFragments = opts.maxFragments ?? 128;
    this.#maxBytes = opts.maxBytes ?? 1 << 20;
    this.#timeout = opts.timeoutMs ?? 30_000;
  }

  /** Reassemblies in progress. */
  get size(): number {
    return this.#entries.size;
  }

  /** Bytes held (never above `maxBytes`). */
  get bytesHeld(): number {
    return this.#bytes;
  }

  /**
   * Feeds an IPv4 packet. A packet that is not a fragment is returned as is (`p.buf`);
   * a fragment returns the whole datagram when it completes one (a new buffer), `null`
   * while it is held, or a {@link WireError} when it was dropped.
   */
  push(p: Ipv4Packet, now: number): Uint8Array | WireError | null {
    if (!p.moreFragments && p.fragmentOffset === 0) return p.buf;
    const key = `4:${p.srcU32}:${p.dstU32}:${p.protocol}:${p.identification}`;
    return this.#add(
      4,
      key,
      p.buf,
      p.payloadOffset,
      p.fragmentOffset,
      p.moreFragments,
      p.protocol,
      now,
    );
  }

  /**
   * Feeds an IPv6 packet, like {@link push}: one without a Fragment header, or an atomic
   * fragment (offset 0, M clear), is returned as is.
   */
  pushIpv6(p: Ipv6Packet, now: number): Uint8Array | WireError | null {
    if (!p.isFragment) return p.buf;
    let key = "6:";
    for (let i = 0; i < 16; i++) key += String.fromCharCode(p.src[i], p.dst[i]);
    key += `:${p.fragmentId}`;
    return this.#add(
      6,
      key,
      p.buf,
      p.payloadOffset,
      p.fragmentOffset,
      p.moreFragments,
      p.protocol,
      now,
    );
  }

  #add(
    version: 4 | 6,
    key: string,
    buf: Uint8Array,
    dataOffset: number,
    start: number,
    more: boolean,
    protocol: number,
    now: number,
  ): Uint8Array | WireError | null {
    const len = buf.length - dataOffset;
    const end = start + len;
    if (more && (len === 0 || len % 8 !== 0)) return WireError.BadFragment;
    if (start === 0 && more && len < minTransportHeader(protocol)) return WireError.BadFragment;
    if (start === 8 && protocol === IpProtocol.Tcp) return WireError.BadFragment;
    const headerRoom = version === 4 ? 20 : 40;
    let e = this.#entries.get(key);
    if (e && e.deadline <= now) {
      this.#drop(e);
      e = undefined;
    }
    if (end + headerRoom > this.#maxDatagram) {
      if (e) this.#drop(e);
      return WireError.BadFragment;
    }
    if (!e) {
      while (this.#entries.size >= this.#maxEntries) this.#drop(this.#oldest()!);
      if (this.#maxEntries <= 0) return WireError.LimitReached;
      e = {
        key,
        version,
        deadline: now + this.#timeout,
        pieces: [],
        received: 0,
        total: -1,
        header: null,
        nextHeader: protocol,
        bytes: 0,
      };
      this.#entries.set(key, e);
    }
    // Length of the datagram: known once the last fragment came.
    if (!more) {
      if (e.total >= 0 && e.total !== end) return this.#dropWith(e, WireError.BadFragment);
      const last = e.pieces.length > 0 ? e.pieces[e.pieces.length - 1].end : 0;
      if (last > end) return this.#dropWith(e, WireError.BadFragment);
    } else if (e.total >= 0 && end > e.total) {
      return this.#dropWith(e, WireError.BadFragment);
    }
    if (version === 6 && e.pieces.length > 0 && e.nextHeader !== protocol && start === 0) {
      return this.#dropWith(e, WireError.BadFragment);
    }
    // Where it goes, and whether it overlaps (pieces are sorted and disjoint).
    const pieces = e.pieces;
    let i = pieces.length;
    while (i > 0 && pieces[i - 1].start >= end) i--;
    if (i > 0 && pieces[i - 1].end > start) {
      const q = pieces[i - 1];
      if (q.start === start && q.end === end) return null; // exact duplicate
      return this.#dropWith(e, WireError.OverlappingFragment);
    }
    if (pieces.length >= this.#maxFragments) return this.#dropWith(e, WireError.LimitReached);
    const headerCost = start === 0 ? dataOffset : 0;
    const cost = len + headerCost;
    if (cost + this.#bytes > this.#maxBytes) {
      for (const other of this.#entries.values()) {
        if (cost + this.#bytes <= this.#maxBytes) break;
        if (other !== e) this.#drop(other);
      }
      if (cost + this.#bytes > this.#maxBytes) return this.#dropWith(e, WireError.LimitReached);
    }
    if (start === 0) {
      e.header = buf.slice(0, dataOffset);
      e.nextHeader = protocol;
    }
    if (len > 0) pieces.splice(i, 0, { start, end, data: buf.slice(dataOffset) });
    e.received += len;
    e.bytes += cost;
    this.#bytes += cost;
    if (!more) e.total = end;
    if (e.total < 0 || e.received !== e.total || e.header === null) return null;
    if ((e.version === 4 ? e.header.length : 40) + e.total > this.#maxDatagram) {
      return this.#dropWith(e, WireError.BadFragment);
    }
    return this.#finish(e);
  }

  #finish(e: Entry): Uint8Array {
    this.#drop(e);
    const h = e.header!;
    const hl = e.version === 4 ? h.length : 40;
    const out = new Uint8Array(hl + e.total);
    out.set(e.version === 4 ? h : h.subarray(0, 40));
    for (const q of e.pieces) out.set(q.data, hl + q.start);
    if (e.version === 4) {
      const total = hl + e.total;
      out[2] = total >> 8;
      out[3] = total & 0xff;
      out[6] &= 0x40; // keep DF, clear MF and the offset
      out[7] = 0;
      rewriteIpv4Checksum(out, 0);
    } else {
      out[4] = e.total >> 8;
      out[5] = e.total & 0xff;
      out[6] = e.nextHeader;
    }
    return out;
  }

  #oldest(): Entry | undefined {
    for (const e of this.#entries.values()) return e;
    return undefined;
  }

  #drop(e: Entry): void {
    if (this.#entries.get(e.key) !== e) return;
    this.#entries.delete(e.key);
    this.#bytes -= e.bytes;
  }

  #dropWith(e: Entry, err: WireError): WireError {
    this.#drop(e);
    return err;
  }

  /**
   * Drops every reassembly whose deadline is ≤ `now`. Returns, for each that had received
   * its first fragment, that fragment's header and data (a new packet, for an ICMP
   * "fragment reassembly time exceeded" quoting it; RFC 792 / RFC 8200 §4.5).
   */
  expire(now: number): Uint8Array[] {
    const firsts: Uint8Array[] = [];
    for (const e of this.#entries.values()) {
      if (e.deadline > now) continue;
      this.#drop(e);
      if (e.header && e.pieces.length > 0 && e.pieces[0].start === 0) {
        const d = e.pieces[0].data;
        const p = new Uint8Array(e.header.length + d.length);
        p.set(e.header);
        p.set(d, e.header.length);
        // The quote must look like what was received: its length fields are intact.
        firsts.push(p);
      }
    }
    return firsts;
  }

  /** The earliest deadline of a reassembly in progress, `Infinity` when none. */
  nextDeadline(): number {
    let t = Infinity;
    for (const e of this.#entries.values()) if (e.deadline < t) t = e.deadline;
    return t;
  }
}
