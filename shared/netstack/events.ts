/**
 * What the stack tells its embedder (`Stack.pollEvent()`), and the result codes of its
 * per-flow calls. Flows are numbered from 1 and a number is never reused in one stack.
 * @module
 */

/** Why a TCP flow ended (the `closed` event). */
export type TcpCloseReason =
  /** Both directions finished (FINs exchanged and everything read). */
  | "done"
  /** The application reset it (RST received). */
  | "reset"
  /** Retransmissions, keepalive probes or the SYN queue's timeout ran out. */
  | "timeout"
  /** The embedder called `abort` or `refuse`, or the stack dropped it for a limit. */
  | "aborted";

/** An event of the stack. */
export type StackEvent =
  /**
   * An application opened a TCP connection (its SYN is held): dial the outbound, then call
   * `accept(flow)` or `refuse(flow, …)`. `src` is the application's address, `dst` the
   * address it connects to (views are copies owned by the event).
   */
  | {
    type: "tcp-syn";
    flow: number;
    src: Uint8Array;
    srcPort: number;
    dst: Uint8Array;
    dstPort: number;
  }
  /** Bytes (or the end of the stream) can be read from the flow: read until WOULD_BLOCK. */
  | { type: "readable"; flow: number }
  /** A write that came short may be retried: send space opened. */
  | { type: "writable"; flow: number }
  /** The TCP flow is gone; its number means nothing any more. */
  | { type: "closed"; flow: number; reason: TcpCloseReason }
  /** A UDP datagram from the application (`flow` is its source address:port mapping). */
  | {
    type: "udp";
    flow: number;
    dst: Uint8Array;
    dstPort: number;
    payload: Uint8Array;
  }
  /** A new UDP mapping (the application's source address:port). */
  | { type: "udp-open"; flow: number; src: Uint8Array; srcPort: number }
  /** A UDP mapping expired (idle) or was evicted by the flow bound. */
  | { type: "udp-closed"; flow: number };

/** Result of `Stack.read` besides a positive byte count (the model of `Session.streamRead`). */
export const ReadResult = {
  /** Nothing to read now; a `readable` event follows. */
  WOULD_BLOCK: 0,
  /** The application sent FIN and everything before it was read. */
  END: -1,
  /** The connection was reset, aborted, or the flow is unknown. */
  RESET: -2,
} as const;

/** What `Stack.input` did with a packet: accepted, or why it was dropped. */
export type InputResult =
  | "ok"
  /** A fragment held for reassembly. */
  | "held"
  /** Parsed but not for us / not handled (counted, silently dropped). */
  | "dropped"
  | import("./wire/error.ts").WireError;
