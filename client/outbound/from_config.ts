/**
 * Builds the outbounds a routing config names (`client/router/config.ts`
 * {@link OutboundConfig}: the built-ins `ostp`, `direct`, `block` and the
 * declared ones) for the router. On a reload the outbounds of the running
 * table are reused when their declaration did not change, so an unchanged
 * `direct` keeps its UDP flows' counters and the tunnel is always the same pool.
 * @module
 */

import type { OutboundConfig } from "../router/config.ts";
import type { OutboundEntry } from "../router/router_outbound.ts";
import { BlockOutbound } from "./block.ts";
import { DirectOutbound } from "./direct.ts";
import { HttpConnectOutbound } from "./http_connect.ts";
import { OstpOutbound, type TunnelPool } from "./ostp_outbound.ts";

/** What the outbounds are made with. */
export interface OutboundDeps {
  /** The tunnel's session pool (every `ostp` outbound shares it). */
  pool: TunnelPool;
  /** Connect timeout of `direct` and `http` outbounds, ms. */
  connectTimeoutMs: number;
}

/** Whether two declarations describe the same outbound. */
function sameDeclaration(a: OutboundConfig, b: OutboundConfig): boolean {
  if (a.name !== b.name || a.type !== b.type) return false;
  if (a.type !== "http" || b.type !== "http") return true;
  return a.proxy.host === b.proxy.host && a.proxy.port === b.proxy.port &&
    a.auth?.username === b.auth?.username && a.auth?.password === b.auth?.password;
}

/**
 * One entry per declaration, by name. `previous` (the running table's
 * declarations and entries) supplies entries to reuse.
 */
export function buildOutbounds(
  configs: readonly OutboundConfig[],
  deps: OutboundDeps,
  previous?: {
    configs: readonly OutboundConfig[];
    outbounds: ReadonlyMap<string, OutboundEntry>;
  },
): Map<string, OutboundEntry> {
  const out = new Map<string, OutboundEntry>();
  for (const c of configs) {
    const old = previous?.configs.find((p) => p.name === c.name);
    const reuse = old && sameDeclaration(old, c) ? previous!.outbounds.get(c.name) : undefined;
    if (reuse) {
      out.set(c.name, reuse);
      continue;
    }
    switch (c.type) {
      case "ostp":
        out.set(c.name, { type: "ostp", outbound: new OstpOutbound(deps.pool, c.name) });
        break;
      case "direct":
        out.set(c.name, {
          type: "direct",
          outbound: new DirectOutbound({ name: c.name, connectTimeoutMs: deps.connectTimeoutMs }),
        });
        break;
      case "block":
        out.set(c.name, { type: "block", outbound: new BlockOutbound(c.name) });
        break;
      case "http":
        out.set(c.name, {
          type: "http",
          outbound: new HttpConnectOutbound({
            name: c.name,
            proxy: {
              secure: false,
              host: c.proxy.host,
              port: c.proxy.port,
              ...(c.auth
                ? { credentials: { username: c.auth.username, password: c.auth.password } }
                : {}),
            },
            connectTimeoutMs: deps.connectTimeoutMs,
          }),
        });
        break;
    }
  }
  return out;
}
