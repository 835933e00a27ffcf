/**
 * The client's carriers, composed from its configuration (docs/carriers.md):
 * one {@link CarrierRoute} per carrier in the fallback order, each with its
 * dialer and the server port it reaches. Modules are loaded only for the
 * carriers in use (fake-TCP needs raw sockets).
 * @module
 */

import { getLog } from "../../shared/log.ts";
import type { CarrierDialer } from "../../shared/carrier/carrier.ts";
import { UdpDialer } from "../../shared/carrier/udp.ts";
import {
  carrierOrder,
  type ClientCarriersConfig,
  fecModeOf,
} from "../../shared/config/carrier_config.ts";
import type { ClientNatConfig } from "../../shared/config/nat_config.ts";
import { formatHostPort, isIPv4, isIPv6 } from "../../shared/config/types.ts";
import { formatNetAddr } from "../../shared/net/ip.ts";
import type { MappingObservation } from "../../shared/carrier/stun_udp.ts";
import type { TurnEvent } from "../../shared/stun/turn_client.ts";
import type { CarrierRoute } from "./ostp.ts";

const log = getLog("client");
const natLog = getLog("nat");

/** What the NAT pieces report to the client (events for embedding programs). */
export interface NatHooks {
  /** A STUN answer on a session's UDP socket. */
  onMapping?: (o: MappingObservation) => void;
  /** A TURN allocation's event. */
  onTurn?: (e: TurnEvent, local: string) => void;
}

/** Resolves STUN servers (numeric addresses at once); the ones that fail are left out, logged. */
async function resolveServers(
  nat: ClientNatConfig,
): Promise<Deno.NetAddr[]> {
  const { lookup } = await import("node:dns/promises");
  const out: Deno.NetAddr[] = [];
  for (const s of nat.stun) {
    try {
      const address = isIPv4(s.host) || isIPv6(s.host) ? s.host : (await lookup(s.host)).address;
      out.push({ transport: "udp", hostname: address, port: s.port });
    } catch (e) {
      natLog.warn("STUN server {server} does not resolve: {error}", {
        server: formatHostPort(s),
        error: (e as Error).message,
      });
    }
  }
  return out;
}

/** The routes and what must be released when the client stops. */
export interface ClientCarriers {
  /** In fallback order. */
  routes: CarrierRoute[];
  /** Releases the dialers (fake-TCP's journal and rules). */
  close(): Promise<void>;
}

/** Where the client's fake-TCP journal lives unless the config says. */
export const DEFAULT_STATE_DIR = "/var/lib/ostp";

/**
 * Builds the dialers for `cfg` (absent: UDP alone). `serverHost` is the
 * name TLS checks the certificate against unless `tls.serverName` says.
 */
export async function clientCarriers(
  cfg: ClientCarriersConfig | undefined,
  serverHost: string,
  opts: { connectTimeoutMs: number; nat?: ClientNatConfig; hooks?: NatHooks },
): Promise<ClientCarriers> {
  const routes: CarrierRoute[] = [];
  const closers: (() => Promise<void>)[] = [];
  const nat = opts.nat;
  const order = cfg ? carrierOrder(cfg) : ["udp" as const];
  if (nat?.turn && !order.includes("turn")) {
    log.warn("turn is configured but the carrier ({carrier}) does not use it", {
      carrier: cfg?.carrier ?? "udp",
    });
  }
  for (const kind of order) {
    let dialer: CarrierDialer;
    let port: number | undefined;
    if (kind === "udp") {
      dialer = new UdpDialer();
      if (nat && nat.stun.length > 0) {
        const { StunUdpDialer } = await import("../../shared/carrier/stun_udp.ts");
        let resolved: Promise<Deno.NetAddr[]> | null = null;
        let resolvedAt = 0;
        dialer = new StunUdpDialer(dialer as UdpDialer, {
          // Names are looked up again after five minutes (and after a failure).
          servers: () => {
            if (!resolved || performance.now() - resolvedAt > 300_000) {
              resolvedAt = performance.now();
              resolved = resolveServers(nat).then((r) => {
                if (r.length === 0) resolved = null;
                return r;
              });
            }
            return resolved;
          },
          intervalMs: nat.stunInterval * 1000,
          onObservation: (o) => {
            if (o.change === "rebinding") {
              natLog.warn(
                "NAT rebinding: udp {port} is now seen as {mapped} (was {previous}) by {server}",
                {
                  port: o.localPort,
                  mapped: formatNetAddr(o.mapped),
                  previous: o.previous ? formatNetAddr(o.previous) : "",
                  server: formatNetAddr(o.server),
                },
              );
            } else if (o.change === "first") {
              natLog.info("udp {port} is seen as {mapped} by {server} ({rtt} ms)", {
                port: o.localPort,
                mapped: formatNetAddr(o.mapped),
                server: formatNetAddr(o.server),
                rtt: Math.round(o.rttMs),
              });
            } else {
              natLog.debug("udp {port} still seen as {mapped}", {
                port: o.localPort,
                mapped: formatNetAddr(o.mapped),
              });
            }
            opts.hooks?.onMapping?.(o);
          },
          onNoAnswer: (port, servers) => {
            natLog.warn("no STUN answer for udp {port} from {servers}", {
              port,
              servers: servers.map(formatNetAddr).join(", "),
            });
          },
        });
      }
      if (cfg && cfg.fec !== "off") {
        const { FecDialer } = await import("../../shared/carrier/fec.ts");
        dialer = new FecDialer(dialer, { mode: fecModeOf(cfg.fec) });
        port = cfg.fecPort;
      }
    } else if (kind === "faketcp") {
      const { FakeTcpDialer } = await import("../../shared/carrier/faketcp/faketcp.ts");
      const dir = cfg?.stateDir ?? DEFAULT_STATE_DIR;
      try {
        await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
      } catch (e) {
        const why = `fake-TCP needs a state directory it can write (${dir}: ${
          (e as Error).message
        }): run as root, or set faketcp.stateDir`;
        // In the fallback order it is one carrier among others: the rest still work.
        if (cfg?.carrier === "auto") {
          log.warn("carrier faketcp left out: {why}", { why });
          continue;
        }
        throw new Error(why);
      }
      const d = new FakeTcpDialer({ journal: `${dir}/faketcp-client.journal` });
      closers.push(() => d.close());
      dialer = d;
      port = cfg?.faketcpPort;
    } else if (kind === "turn") {
      const turn = nat?.turn;
      if (!turn) throw new Error('the "turn" carrier needs a turn block in the config');
      const { TurnDialer } = await import("../../shared/carrier/turn.ts");
      const ca = turn.ca ? [await Deno.readTextFile(turn.ca)] : undefined;
      const d = new TurnDialer({
        server: turn.server,
        credentials: { username: turn.username, password: turn.password },
        transport: turn.transport,
        ...(turn.serverName ? { serverName: turn.serverName } : {}),
        ...(ca ? { caCerts: ca } : {}),
        ...(turn.lifetime ? { lifetimeSec: turn.lifetime } : {}),
        connectTimeoutMs: opts.connectTimeoutMs,
        onEvent: (e, link) => {
          logTurnEvent(e, link.local);
          opts.hooks?.onTurn?.(e, link.local);
        },
      });
      closers.push(() => d.close());
      dialer = d; // no port of its own: the relay reaches the server's UDP port
    } else if (kind === "uot") {
      const { UotDialer } = await import("../../shared/carrier/uot.ts");
      dialer = new UotDialer({ connectTimeoutMs: opts.connectTimeoutMs });
      port = cfg?.uotPort;
    } else {
      const { TlsDialer } = await import("../../shared/carrier/tls.ts");
      const tls = cfg?.tls ?? { port: 443 };
      const ca = tls.ca ? [await Deno.readTextFile(tls.ca)] : undefined;
      dialer = new TlsDialer({
        serverName: tls.serverName ?? serverHost,
        ...(ca ? { caCerts: ca } : {}),
        connectTimeoutMs: opts.connectTimeoutMs,
      });
      port = tls.port;
    }
    routes.push(port === undefined ? { dialer } : { dialer, port });
  }
  if (routes.length === 0) throw new Error("no carrier is usable (see the warnings above)");
  return {
    routes,
    async close() {
      for (const c of closers) await c().catch(() => {});
    },
  };
}

/** One log line per TURN event worth one (the password never appears). */
function logTurnEvent(e: TurnEvent, local: string): void {
  switch (e.type) {
    case "allocated":
      natLog.info("TURN relay {relayed} allocated for {lifetime} s{mapped}", {
        relayed: formatNetAddr(e.relayed),
        lifetime: e.lifetime,
        mapped: e.mapped ? ` (this client seen as ${formatNetAddr(e.mapped)})` : "",
      });
      return;
    case "channel":
      natLog.debug("TURN channel 0x{channel} bound ({local})", {
        channel: e.channel.toString(16),
        local,
      });
      return;
    case "no-channel":
      natLog.warn("TURN ChannelBind refused ({reason}): data goes as Send/Data indications", {
        reason: e.reason,
      });
      return;
    case "refreshed":
      natLog.debug("TURN allocation refreshed for {lifetime} s ({local})", {
        lifetime: e.lifetime,
        local,
      });
      return;
    case "deallocated":
      natLog.info("TURN allocation released{how} ({local})", {
        how: e.confirmed ? "" : " (no answer to the release)",
        local,
      });
      return;
    case "failed":
      if (e.auth || e.lost) natLog.error("{reason}", { reason: e.reason });
      else natLog.warn("{reason}", { reason: e.reason });
      return;
    case "permitted":
      return;
  }
}
