/**
 * The "direct" outbound: plain TCP from this host with `Deno.connect`, with
 * connect errors mapped to {@link DialError} reasons.
 * @module
 */

import { lookup } from "node:dns/promises";
import { type Dialer, DialError, type DialFailure, type Duplex } from "../duplex.ts";
import { bypass } from "./bypass.ts";
import { parseIp } from "./cidr.ts";

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

/** Granularity of connect timeouts: a dial times out between `connectTimeoutMs` and this much later. */
const TIMEOUT_GRANULARITY_MS = 250;

/**
 * Connect timeouts in coarse buckets: every dial started within one
 * {@link TIMEOUT_GRANULARITY_MS} window shares one AbortController, aborted
 * (by one timer) once the last of them is due. A controller and a timer per
 * dial — an AbortSignal is an EventTarget, costly to build — were a tenth of
 * the server's CPU per short connection. A dial that finished is not affected
 * by a later abort.
 */
class TimeoutBuckets {
  #bucket = -1;
  #signal: AbortSignal | null = null;

  constructor(readonly timeoutMs: number) {}

  /** The signal that aborts (reason {@link TIMED_OUT}) `timeoutMs` to `timeoutMs + 250` ms from now. */
  signal(): AbortSignal {
    const b = Math.floor(performance.now() / TIMEOUT_GRANULARITY_MS);
    if (b !== this.#bucket || this.#signal === null) {
      const ctl = new AbortController();
      const due = (b + 1) * TIMEOUT_GRANULARITY_MS + this.timeoutMs - performance.now();
      const t = setTimeout(() => ctl.abort(TIMED_OUT), Math.max(0, due));
      // Only the connects it times out keep the process alive, not the timer.
      const node = t as unknown as { unref?: () => void };
      if (typeof node.unref === "function") node.unref();
      else Deno.unrefTimer(t as unknown as number);
      this.#bucket = b;
      this.#signal = ctl.signal;
    }
    return this.#signal;
  }
}

/** The abort reason of a bucket's signal. */
const TIMED_OUT = new DialError("timeout", "connect timed out");

/**
 * Creates a {@link Dialer} that connects straight to the target over TCP.
 * Without a caller's signal, a dial costs no AbortController of its own (see
 * {@link TimeoutBuckets}); with one, it gets a controller that either aborts.
 */
export function createDirectDialer(opts: DirectDialerOptions = {}): Dialer {
  const buckets = new TimeoutBuckets(opts.connectTimeoutMs ?? 10_000);
  const noDelay = opts.noDelay ?? true;
  return async (target, signal): Promise<Duplex> => {
    if (signal?.aborted) throw new DialError("general", "dial aborted");
    const timeout = buckets.signal();
    let ctl: AbortController | null = null;
    let onAbort: (() => void) | null = null;
    let onTimeout: (() => void) | null = null;
    if (signal) {
      const c = ctl = new AbortController();
      onAbort = () => c.abort(new DialError("general", "dial aborted"));
      onTimeout = () => c.abort(TIMED_OUT);
      signal.addEventListener("abort", onAbort, { once: true });
      timeout.addEventListener("abort", onTimeout, { once: true });
    }
    const used = ctl ? ctl.signal : timeout;
    try {
      const b = bypass();
      if (b) {
        // TUN mode: the socket must carry the client's mark (bypass.ts), which only
        // the libc dialer can set; it connects to an address, so resolve first.
        const host = parseIp(target.host) ? target.host : (await lookup(target.host).catch((e) => {
          throw new DialError("dns", `${target.host}: ${e instanceof Error ? e.message : e}`);
        })).address;
        return await b.dial(host, target.port, {
          mark: b.mark,
          timeoutMs: opts.connectTimeoutMs ?? 10_000,
          signal: used,
        });
      }
      // Deno.connect rejects with the signal's reason once it is aborted.
      const conn = await Deno.connect({ hostname: target.host, port: target.port, signal: used });
      if (noDelay) {
        try {
          conn.setNoDelay(true);
        } catch { /* not fatal */ }
      }
      return conn;
    } catch (e) {
      const why = used.aborted ? used.reason : e;
      if (why === TIMED_OUT) {
        throw new DialError("timeout", `connect to ${target.host}:${target.port} timed out`);
      }
      throw toDialError(why);
    } finally {
      if (onAbort) signal!.removeEventListener("abort", onAbort);
      if (onTimeout) timeout.removeEventListener("abort", onTimeout);
    }
  };
}

/** The default direct dialer (10 s connect timeout, TCP_NODELAY). */
export const directDialer: Dialer = createDirectDialer();
