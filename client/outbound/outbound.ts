/**
 * The client's one interface for "carry this flow" (DESIGN principle 3, issue
 * 8): an {@link Outbound} opens TCP streams and UDP flows for the inbounds,
 * given each flow's {@link FlowContext}. The tunnel (`ostp_outbound.ts`),
 * `direct.ts`, `block.ts` and `http_connect.ts` implement it, and so does the
 * router (`client/router/router_outbound.ts`), which picks among outbounds; an
 * inbound needs no second type for UDP.
 *
 * Failures are {@link DialError}s whose reason the inbounds already map to
 * their protocol's reply (SOCKS5 reply codes, HTTP statuses).
 * @module
 */

import { type Dialer, DialError, type Duplex, type Target } from "../../shared/duplex.ts";
import type { FlowContext, FlowOrigin, Network } from "../router/flow.ts";

export type { FlowContext, FlowOrigin };

/** The transport a flow uses (the router's {@link Network}). */
export type FlowNetwork = Network;

/** A UDP flow an outbound opened: datagrams to any target, replies to its handler. */
export interface UdpFlow {
  /** Sends a datagram to `target`; false if it was dropped (no session, too big, refused). */
  send(target: Target, data: Uint8Array): boolean;
  /** Forgets the flow; replies arriving afterwards are dropped. */
  close(): void;
}

/**
 * Receives one reply datagram of a UDP flow: its source and payload. `data`
 * (and possibly `from`) is valid only during the call: copy what you keep.
 */
export type UdpReplyHandler = (from: Target, data: Uint8Array) => void;

/**
 * Opens a UDP flow whose replies (source address, payload) go to `onReply`;
 * rejects when no flow can be opened (tunnel down, limit reached). The tunnel
 * pool's form (`OstpPool.openUdpFlow`).
 */
export type UdpFlowOpener = (onReply: UdpReplyHandler) => Promise<UdpFlow>;

/** Carries TCP streams and UDP flows somewhere: the tunnel, this host, an upstream proxy, nowhere. */
export interface Outbound {
  /** The outbound's name, as rules and logs refer to it. */
  readonly name: string;
  /**
   * Opens a byte stream to `ctx.target`.
   * @throws {DialError} when the stream cannot be opened (the reason is what the inbound reports).
   */
  dial(ctx: FlowContext, signal?: AbortSignal): Promise<Duplex>;
  /**
   * Opens a UDP flow whose datagrams may go to any target; replies go to
   * `onReply` until the flow is closed. The caller closes idle flows.
   * @throws {DialError} when no flow can be opened.
   */
  openUdp(ctx: FlowContext, onReply: UdpReplyHandler): Promise<UdpFlow>;
  /** Releases what the outbound holds (sockets, flows still open); optional. */
  close?(): void | Promise<void>;
}

/**
 * An outbound over a bare {@link Dialer} (TCP only: UDP flows are refused
 * with DialError "general"): for tests and embedders that carry streams
 * themselves.
 */
export function dialerOutbound(dial: Dialer, name = "dialer"): Outbound {
  return {
    name,
    dial: (ctx, signal) => dial(ctx.target, signal),
    openUdp: () => Promise.reject(new DialError("general", `outbound "${name}" carries no UDP`)),
  };
}

/** `host:port` of a target for messages, IPv6 in brackets. */
export function formatTarget(t: Target): string {
  return t.host.includes(":") ? `[${t.host}]:${t.port}` : `${t.host}:${t.port}`;
}
