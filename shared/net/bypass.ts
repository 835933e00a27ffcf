/**
 * The client's own sockets in TUN mode: with auto-route on, every socket of
 * the machine is routed into the TUN — the client's direct connections and
 * its UDP socket to the server too, which would loop back into it. TUN mode
 * sets a firewall mark here (and the libc dialer that can apply it, since
 * Deno's own TCP API cannot); the direct dialer and the UDP sockets read it
 * and mark every socket they open, and the policy rules let marked packets
 * use the main routing table.
 *
 * A process-wide setting, on purpose: every socket the process opens must
 * carry the mark, whichever outbound opens it.
 * @module
 */

import type { Duplex } from "../duplex.ts";

/** Opens a marked TCP connection to an IP literal (`ffi/tcp_linux.ts` `dialMarked`). */
export type MarkedDial = (
  host: string,
  port: number,
  opts: { mark: number; timeoutMs?: number; signal?: AbortSignal },
) => Promise<Duplex>;

let current: { mark: number; dial: MarkedDial } | null = null;

/** Marks every socket opened from now on with `mark`, TCP through `dial`; null: no marking. */
export function setBypass(b: { mark: number; dial: MarkedDial } | null): void {
  current = b;
}

/** The mark in force and its dialer, or null. */
export function bypass(): { mark: number; dial: MarkedDial } | null {
  return current;
}
