/**
 * The carrier seam: anything that moves a session's datagrams between client
 * and server — plain UDP, fake-TCP, UDP-over-TCP, TLS, a TURN relay, and FEC
 * as a wrapper around another carrier. The session and the dispatcher never
 * know which one they ride on: they see opaque {@link Endpoint}s, batches of
 * datagrams, and what the carrier declares about itself ({@link CarrierInfo}).
 *
 * Two faces:
 * - {@link CarrierListener}: the server's side, one bound carrier many
 *   clients reach, each client path an {@link Endpoint};
 * - {@link CarrierLink}: the client's side, one path to one server, opened by
 *   a {@link CarrierDialer} (a fresh link per handshake attempt and per hop).
 *
 * Conventions shared by every implementation (checked by
 * `tests/conformance/carrier.ts`): `send` never throws and never blocks
 * (datagrams it cannot take are dropped and counted — the session recovers
 * them); queued datagrams leave at the end of the task or at `flush()`; data
 * handed to `onDatagram` is valid only during the call; `close()` is
 * idempotent and makes `run` resolve soon after.
 * @module
 */

import { formatNetAddr } from "../net/ip.ts";

/** Names of the carriers (the client's `carrier` setting and share-link `carrier=`). */
export type CarrierKind = "udp" | "turn" | "faketcp" | "uot" | "tls";

/** Every carrier name, in the client's default fallback order. */
export const CARRIER_KINDS: readonly CarrierKind[] = ["udp", "turn", "faketcp", "uot", "tls"];

/** True when `s` names a carrier. */
export function isCarrierKind(s: string): s is CarrierKind {
  return (CARRIER_KINDS as readonly string[]).includes(s);
}

/**
 * A peer path as a carrier sees it, opaque to everything above: a UDP
 * source address, a fake-TCP flow, a TCP or TLS connection, a TURN relay.
 * The carrier that produced it is the only one that can send to it.
 */
export interface Endpoint {
  /** The carrier that produced it ("udp", "faketcp", …, or a wrapper's name). */
  readonly carrier: string;
  /**
   * Identity: two endpoints of one listener are the same path exactly when
   * their keys are equal (the dispatcher's address map uses it). Unique
   * across carriers (the carrier name is part of it).
   */
  readonly key: string;
  /** The remote network address behind the path (logs, the API, per-address rules). */
  readonly address: Deno.NetAddr;
}

/** What a carrier declares about itself; the session's datagram size follows from it. */
export interface CarrierInfo {
  /** The carrier's name. */
  readonly kind: string;
  /**
   * Bytes this carrier adds per datagram beyond what plain UDP adds on the
   * same path (UDP: 0; fake-TCP: the TCP header's 20 + options − UDP's 8):
   * the session's largest datagram is the UDP budget minus this.
   */
  readonly overhead: number;
  /** Delivers every datagram, in order (stream carriers: UoT, TLS). */
  readonly reliable: boolean;
  /** Largest datagram it accepts, bytes. */
  readonly maxDatagram: number;
}

/** Called once per received datagram; `data` is valid only during the call. */
export type OnEndpointDatagram = (data: Uint8Array, from: Endpoint) => void;

/** The server's side of a carrier: bound once, reached by many clients. */
export interface CarrierListener extends CarrierInfo {
  /** Where it listens (the port a client dials). */
  readonly local: Deno.NetAddr;
  /** Receives until closed, calling `onDatagram` for each datagram. */
  run(onDatagram: OnEndpointDatagram): Promise<void>;
  /** Queues `data` (copied) for `to`, an endpoint this listener produced; never throws. */
  send(data: Uint8Array, to: Endpoint): void;
  /** Sends everything queued now. */
  flush(): void;
  /** Closes the listener and every path it holds; `run` resolves soon after. */
  close(): void;
}

/**
 * Decides whether the first datagram of a new stream-carrier path comes from
 * a client (an authentic hello, or a packet of a live session moving here).
 * Carriers that can hand a stranger to something else (TLS's web fallback)
 * ask before they deliver; `data` is valid only during the call.
 */
export type AdmitFirst = (data: Uint8Array) => boolean;

/** The client's side of a carrier: one path to one server. */
export interface CarrierLink extends CarrierInfo {
  /** Short description of the local end for logs ("udp 0.0.0.0:41234"). */
  readonly local: string;
  /** The local port (0 when the carrier has none of its own). */
  readonly localPort: number;
  /** Receives the server's datagrams until closed; anything from elsewhere is dropped. */
  run(onDatagram: (data: Uint8Array) => void): Promise<void>;
  /** Queues `data` (copied) for the server; never throws. */
  send(data: Uint8Array): void;
  /** Sends everything queued now. */
  flush(): void;
  /** Closes the path; `run` resolves soon after. */
  close(): void;
}

/** Opens client links of one carrier kind. */
export interface CarrierDialer {
  /** The carrier's name. */
  readonly kind: string;
  /**
   * A fresh path to `server` (a resolved address): a new source port for
   * UDP, a new connection for stream carriers. Rejects with a reason a person
   * can read when the path cannot be made (refused, timed out, blocked).
   */
  dial(server: Deno.NetAddr, signal?: AbortSignal): Promise<CarrierLink>;
  /**
   * The same at once, for carriers that need no round trip to open a path
   * (UDP): what socket hopping uses. May throw (EMFILE, …).
   */
  openNow?(server: Deno.NetAddr): CarrierLink;
}

/** Formats an endpoint for logs: "1.2.3.4:5" for UDP, "faketcp 1.2.3.4:5" otherwise. */
export function formatEndpoint(e: Endpoint): string {
  const hp = formatNetAddr(e.address);
  return e.carrier === "udp" ? hp : `${e.carrier} ${hp}`;
}
