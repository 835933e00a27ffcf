/**
 * Which name each address was the answer for: filled from the DNS answers
 * the TUN inbound relays, read when a connection arrives at a bare IP, so
 * domain rules and `exclude.domains` work for traffic that reaches the client
 * as addresses. Bounded (least recently used entries go first) and
 * time-limited (an answer's TTL, but never less than {@link MIN_KEEP_MS}:
 * applications cache answers longer than their TTL and connect later).
 * @module
 */

import { isMapped } from "../../shared/net/cidr.ts";

/** Shortest time an address keeps its name, ms. */
export const MIN_KEEP_MS = 10 * 60_000;
/** Longest, ms (a TTL of a week is not a promise the address stays that name's). */
export const MAX_KEEP_MS = 24 * 3600_000;

/** Address → name, bounded; times are ms on any monotonic clock the caller uses. */
export class NameMap {
  private readonly entries = new Map<string, { name: string; expires: number }>();

  /** Keeps at most `capacity` addresses. */
  constructor(readonly capacity = 65_536) {
    if (!Number.isSafeInteger(capacity) || capacity < 1) throw new RangeError("capacity");
  }

  /** Addresses held (expired ones may linger until looked up or pushed out). */
  get size(): number {
    return this.entries.size;
  }

  /** Remembers that `addresses` (4 or 16 bytes each) answered `name` for `ttlSeconds`. */
  remember(name: string, addresses: Iterable<Uint8Array>, ttlSeconds: number, now: number): void {
    const keep = Math.min(MAX_KEEP_MS, Math.max(MIN_KEEP_MS, ttlSeconds * 1000));
    for (const a of addresses) {
      const key = keyOf(a);
      if (key === null) continue;
      this.entries.delete(key);
      this.entries.set(key, { name, expires: now + keep });
      if (this.entries.size > this.capacity) {
        this.entries.delete(this.entries.keys().next().value as string);
      }
    }
  }

  /** The name `address` answered for, if it is still known at `now`. */
  lookup(address: Uint8Array, now: number): string | undefined {
    const key = keyOf(address);
    if (key === null) return undefined;
    const e = this.entries.get(key);
    if (!e) return undefined;
    if (e.expires <= now) {
      this.entries.delete(key);
      return undefined;
    }
    // Recently used entries stay longest.
    this.entries.delete(key);
    this.entries.set(key, e);
    return e.name;
  }
}

/** A map key for an address; IPv4-mapped IPv6 and IPv4 give the same key. */
function keyOf(a: Uint8Array): string | null {
  if (a.length === 4) return `${a[0]}.${a[1]}.${a[2]}.${a[3]}`;
  if (a.length !== 16) return null;
  if (isMapped(a)) return `${a[12]}.${a[13]}.${a[14]}.${a[15]}`;
  let s = "";
  for (let i = 0; i < 16; i++) s += a[i].toString(16).padStart(2, "0");
  return s;
}
