/**
 * The layer-3 hub's forwarding decision (sans-I/O): where a raw IP packet
 * goes — another client's session, the server's TUN, or nowhere — with the
 * anti-spoofing check on everything a session sends.
 *
 * - From a session: the source must be the session's own assigned address
 *   (IPv4 or IPv6), else the packet is dropped and counted ("spoofed"). A
 *   destination that is another live session's address goes straight to that
 *   session (never through the server's kernel); anything else to the TUN
 *   (the server's own address, and — with NAT — the internet).
 * - From the TUN: to the session that holds the destination, or dropped
 *   ("no route").
 * - Broadcast and multicast are dropped (off by default: TUN, not TAP);
 *   malformed packets are dropped, never thrown on.
 *
 * Only the fixed header is read: version, the two addresses. Addresses are
 * keyed without allocating (IPv4 as a number, IPv6 as four numbers joined).
 * @module
 */

import { parseIpInto } from "../net/cidr.ts";

/** Where a packet goes. */
export type HubDecision =
  | { to: "session"; session: number }
  | { to: "tun" }
  | { to: "drop"; reason: HubDropReason };

/** Why the hub dropped a packet. */
export type HubDropReason = "malformed" | "spoofed" | "no-route" | "multicast" | "unknown-session";

/** Drops by reason, and packets forwarded each way. */
export interface HubCounters {
  sessionToSession: number;
  sessionToTun: number;
  tunToSession: number;
  drops: Record<HubDropReason, number>;
}

function key4(b: Uint8Array, off: number): number {
  return ((b[off] << 24) >>> 0) + (b[off + 1] << 16) + (b[off + 2] << 8) + b[off + 3];
}

function key6(b: Uint8Array, off: number): string {
  const v = new DataView(b.buffer, b.byteOffset + off, 16);
  return `${v.getUint32(0)}:${v.getUint32(4)}:${v.getUint32(8)}:${v.getUint32(12)}`;
}

/** IPv4 text → the hub's key, or null. */
function parse4(text: string): number | null {
  const b = new Uint8Array(16);
  return parseIpInto(text, b) === 4 ? key4(b, 12) : null;
}

/** IPv6 text → the hub's key, or null. */
function parse6(text: string): string | null {
  const b = new Uint8Array(16);
  return parseIpInto(text, b) === 6 ? key6(b, 0) : null;
}

interface Member {
  session: number;
  v4: number;
  v6: string | null;
}

/** The hub's table of live layer-3 sessions and its decisions (see the module doc). */
export class L3Hub {
  /** Counters since start. */
  readonly counters: HubCounters = {
    sessionToSession: 0,
    sessionToTun: 0,
    tunToSession: 0,
    drops: { malformed: 0, spoofed: 0, "no-route": 0, multicast: 0, "unknown-session": 0 },
  };
  readonly #by4 = new Map<number, Member>();
  readonly #by6 = new Map<string, Member>();
  readonly #bySession = new Map<number, Member>();
  /** IPv4 broadcast of the subnet (dropped like multicast), when known. */
  readonly #broadcast: number | null;

  /** `broadcast`: the subnet's broadcast address (e.g. 10.77.0.255), dropped like multicast. */
  constructor(opts: { broadcast?: string } = {}) {
    this.#broadcast = opts.broadcast === undefined ? null : parse4(opts.broadcast);
  }

  /** Registers `session` with its addresses (replacing what it had). */
  attach(session: number, addresses: { v4: string; v6?: string }): void {
    this.detach(session);
    const v4 = parse4(addresses.v4);
    if (v4 === null) throw new RangeError(`not an IPv4 address: ${addresses.v4}`);
    const v6 = addresses.v6 === undefined ? null : parse6(addresses.v6);
    if (addresses.v6 !== undefined && v6 === null) {
      throw new RangeError(`not an IPv6 address: ${addresses.v6}`);
    }
    const m: Member = { session, v4, v6 };
    this.#bySession.set(session, m);
    this.#by4.set(v4, m);
    if (v6 !== null) this.#by6.set(v6, m);
  }

  /** Forgets `session` (it ended, or its lease moved to another session). */
  detach(session: number): void {
    const m = this.#bySession.get(session);
    if (!m) return;
    this.#bySession.delete(session);
    if (this.#by4.get(m.v4) === m) this.#by4.delete(m.v4);
    if (m.v6 !== null && this.#by6.get(m.v6) === m) this.#by6.delete(m.v6);
  }

  /** Live members. */
  get size(): number {
    return this.#bySession.size;
  }

  #drop(reason: HubDropReason): HubDecision {
    this.counters.drops[reason]++;
    return { to: "drop", reason };
  }

  /** Where a packet that `session` sent goes. */
  fromSession(session: number, p: Uint8Array): HubDecision {
    const m = this.#bySession.get(session);
    if (!m) return this.#drop("unknown-session");
    const version = p.length > 0 ? p[0] >> 4 : 0;
    if (version === 4) {
      if (p.length < 20) return this.#drop("malformed");
      if (key4(p, 12) !== m.v4) return this.#drop("spoofed");
      const dst = key4(p, 16);
      if (p[16] >= 224 || dst === this.#broadcast || dst === 0xffffffff) {
        return this.#drop("multicast");
      }
      const to = this.#by4.get(dst);
      if (to && to !== m) {
        this.counters.sessionToSession++;
        return { to: "session", session: to.session };
      }
      this.counters.sessionToTun++;
      return { to: "tun" };
    }
    if (version === 6) {
      if (p.length < 40) return this.#drop("malformed");
      if (m.v6 === null || key6(p, 8) !== m.v6) return this.#drop("spoofed");
      if (p[24] === 0xff) return this.#drop("multicast");
      const to = this.#by6.get(key6(p, 24));
      if (to && to !== m) {
        this.counters.sessionToSession++;
        return { to: "session", session: to.session };
      }
      this.counters.sessionToTun++;
      return { to: "tun" };
    }
    return this.#drop("malformed");
  }

  /** Where a packet the server's TUN gave goes. */
  fromTun(p: Uint8Array): HubDecision {
    const version = p.length > 0 ? p[0] >> 4 : 0;
    let to: Member | undefined;
    if (version === 4 && p.length >= 20) to = this.#by4.get(key4(p, 16));
    else if (version === 6 && p.length >= 40) to = this.#by6.get(key6(p, 24));
    else return this.#drop("malformed");
    if (!to) return this.#drop("no-route");
    this.counters.tunToSession++;
    return { to: "session", session: to.session };
  }
}
