/**
 * The "ostp" outbound: an {@link Outbound} over the tunnel's session pool
 * (`OstpPool` in `ostp.ts`). TCP flows become tunnel streams
 * (`pool.dial(target)`), UDP flows ride DATAGRAM frames (`pool.openUdpFlow`).
 * The pool's lifecycle (start, stop) stays with whoever created it.
 * @module
 */

import { type Dialer, DialError, type Duplex } from "../../shared/duplex.ts";
import { closeQuietly } from "../../shared/pipe.ts";
import type { FlowContext, Outbound, UdpFlow, UdpFlowOpener, UdpReplyHandler } from "./outbound.ts";

/** What the adapter needs of the pool; `OstpPool` has both. */
export interface TunnelPool {
  /** Opens a stream through the tunnel; rejects with DialError. */
  dial: Dialer;
  /** Opens a UDP flow through the tunnel; rejects with DialError. */
  openUdpFlow: UdpFlowOpener;
}

/** Carries flows through an OSTP session pool. */
export class OstpOutbound implements Outbound {
  /** The outbound's name (default `"ostp"`). */
  readonly name: string;
  /** The pool flows go through. */
  readonly pool: TunnelPool;

  /** Wraps `pool`; `name` is how rules and logs refer to the outbound. */
  constructor(pool: TunnelPool, name = "ostp") {
    this.pool = pool;
    this.name = name;
  }

  /**
   * Opens a tunnel stream to `ctx.target` (the server resolves names). An
   * abort rejects at once with DialError "general"; a stream that is opened
   * after the abort is closed.
   */
  dial(ctx: FlowContext, signal?: AbortSignal): Promise<Duplex> {
    if (!signal) return this.pool.dial(ctx.target);
    if (signal.aborted) return Promise.reject(new DialError("general", "dial aborted"));
    const pending = this.pool.dial(ctx.target, signal);
    return new Promise<Duplex>((resolve, reject) => {
      const onAbort = () => reject(new DialError("general", "dial aborted"));
      signal.addEventListener("abort", onAbort, { once: true });
      pending.then(
        (stream) => {
          signal.removeEventListener("abort", onAbort);
          if (signal.aborted) closeQuietly(stream);
          else resolve(stream);
        },
        (e) => {
          signal.removeEventListener("abort", onAbort);
          reject(e);
        },
      );
    });
  }

  /** Opens a UDP flow on one of the pool's sessions. */
  openUdp(_ctx: FlowContext, onReply: UdpReplyHandler): Promise<UdpFlow> {
    return this.pool.openUdpFlow(onReply);
  }
}
