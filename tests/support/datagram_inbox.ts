/**
 * Waiting for a datagram with a timeout, without losing the next one.
 *
 * `Promise.race([sock.receive(), timeout])` leaves the receive pending when
 * the timeout wins; the next datagram then resolves that abandoned promise
 * and the caller's fresh receive waits for the one after. An inbox keeps one
 * receive outstanding and hands its result to whoever waits next.
 * @module
 */

/** A datagram socket read one datagram at a time, with timeouts. */
export interface DatagramInbox {
  /** The next datagram, or null when none arrives within `ms`. */
  next(ms: number): Promise<Uint8Array | null>;
}

/** Wraps `sock`; only the inbox may call `sock.receive()` afterwards. */
export function datagramInbox(sock: Deno.DatagramConn): DatagramInbox {
  let pending: Promise<Uint8Array | null> | null = null;
  return {
    async next(ms) {
      pending ??= sock.receive().then(([d]) => d, () => null);
      let timer: ReturnType<typeof setTimeout> | undefined;
      const timeout = new Promise<"timeout">((r) => timer = setTimeout(() => r("timeout"), ms));
      const got = await Promise.race([pending, timeout]);
      clearTimeout(timer);
      if (got === "timeout") return null;
      pending = null;
      return got;
    },
  };
}
