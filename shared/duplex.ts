/**
 * The byte-stream abstraction every inbound and outbound speaks.
 *
 * `Deno.TcpConn` satisfies {@link Duplex}, and so does an OSTP stream, so the
 * proxy inbounds can be tested against direct TCP and run against the tunnel.
 * @module
 */

/** A bidirectional byte stream with half-close. */
export interface Duplex {
  /** Reads into `p`; resolves to the count read, or `null` at end of stream. */
  read(p: Uint8Array): Promise<number | null>;
  /** Writes from `p`; resolves to the count written (may be less than `p.length`). */
  write(p: Uint8Array): Promise<number>;
  /** Half-closes the sending direction (FIN); reading continues. */
  closeWrite(): Promise<void>;
  /** Closes both directions and releases resources; never throws. */
  close(): void;
}

/** Where a flow wants to go. `host` is a domain name, dotted IPv4, or IPv6 without brackets. */
export interface Target {
  host: string;
  port: number;
}

/** Why a dial failed, in terms every inbound protocol can map to its own error reply. */
export type DialFailure =
  | "refused"
  | "unreachable"
  | "timeout"
  | "dns"
  | "denied"
  | "unavailable"
  | "general";

/** A dial that failed for a known reason; inbounds map `reason` to a protocol reply. */
export class DialError extends Error {
  /** The failure class. */
  readonly reason: DialFailure;
  constructor(reason: DialFailure, message?: string) {
    super(message ?? reason);
    this.name = "DialError";
    this.reason = reason;
  }
}

/** Opens a byte stream to a target; rejects with {@link DialError}. */
export type Dialer = (target: Target, signal?: AbortSignal) => Promise<Duplex>;
