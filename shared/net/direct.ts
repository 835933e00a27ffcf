/**
 * The "direct" outbound: plain TCP from this host with `Deno.connect`, with
 * connect errors mapped to {@link DialError} reasons.
 * @module
 */

import { type Dialer, DialError, type DialFailure, type Duplex } from "../duplex.ts";

/** Options for {@link createDirectDialer}. */
export interface DirectDialerOptions {
  /** Give up connecting after this long (DialError "timeout"); default 10 000 ms. */
  connectTimeoutMs?: number;
  /** Set TCP_NODELAY on connected sockets; default true. */
  noDelay?: boolean;
}

/**
 * Maps an error from `Deno.connect` to a {@link DialError}:
 * ConnectionRefused → "refused", NotFound and name-resolution failures → "dns",
 * TimedOut → "timeout", NetworkUnreachable / no route to host → "unreachable",
 * PermissionDenied / NotCapable → "denied", anything else → "general".
 * A DialError is returned unchanged.
 */
export function toDialError(e: unknown): DialError {
  if (e instanceof DialError) return e;
  const message = e instanceof Error ? e.message : String(e);
  let reason: DialFailure = "general";
  if (e instanceof Deno.errors.ConnectionRefused) reason = "refused";
  else if (e instanceof Deno.errors.TimedOut) reason = "timeout";
  else if (e instanceof Deno.errors.NotFound) reason = "dns";
  else if (e instanceof Deno.errors.NetworkUnreachable) reason = "unreachable";
  else if (e instanceof Deno.errors.PermissionDenied || e instanceof Deno.errors.NotCapable) {
    reason = "denied";
  } else if (
    e instanceof URIError ||
    /lookup address|name or service not known|nodename nor servname|name resolution|no address associated|dns/i
      .test(message)
  ) {
    reason = "dns";
  } else if (/no route to host|host is unreachable|network is unreachable/i.test(message)) {
    reason = "unreachable";
  } else if (/timed out/i.test(message)) reason = "timeout";
  return new DialError(reason, message);
}

/** Creates a {@link Dialer} that connects straight to the target over TCP. */
export function createDirectDialer(opts: DirectDialerOptions = {}): Dialer {
  const timeoutMs = opts.connectTimeoutMs ?? 10_000;
  const noDelay = opts.noDelay ?? true;
  return async (target, signal): Promise<Duplex> => {
    if (signal?.aborted) throw new DialError("general", "dial aborted");
    const ctl = new AbortController();
    const onAbort = () => ctl.abort(new DialError("general", "dial aborted"));
    signal?.addEventListener("abort", onAbort, { once: true });
    const timer = setTimeout(
      () =>
        ctl.abort(new DialError("timeout", `connect to ${target.host}:${target.port} timed out`)),
      timeoutMs,
    );
    try {
      const conn = await new Promise<Deno.TcpConn>((resolve, reject) => {
        const giveUp = () => reject(ctl.signal.reason);
        ctl.signal.addEventListener("abort", giveUp, { once: true });
        Deno.connect({ hostname: target.host, port: target.port, signal: ctl.signal }).then(
          (c) => {
            ctl.signal.removeEventListener("abort", giveUp);
            if (ctl.signal.aborted) {
              try {
                c.close();
              } catch { /* already closed */ }
              reject(ctl.signal.reason);
            } else resolve(c);
          },
          (e) => {
            ctl.signal.removeEventListener("abort", giveUp);
            reject(ctl.signal.aborted ? ctl.signal.reason : e);
          },
        );
      });
      if (noDelay) {
        try {
          conn.setNoDelay(true);
        } catch { /* not fatal */ }
      }
      return conn;
    } catch (e) {
      throw toDialError(e);
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
    }
  };
}

/** The default direct dialer (10 s connect timeout, TCP_NODELAY). */
export const directDialer: Dialer = createDirectDialer();
