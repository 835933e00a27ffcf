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
import type { CarrierRoute } from "./ostp.ts";

const log = getLog("client");

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
  opts: { connectTimeoutMs: number },
): Promise<ClientCarriers> {
  const routes: CarrierRoute[] = [];
  const closers: (() => Promise<void>)[] = [];
  for (const kind of cfg ? carrierOrder(cfg) : ["udp" as const]) {
    let dialer: CarrierDialer;
    let port: number | undefined;
    if (kind === "udp") {
      dialer = new UdpDialer();
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
