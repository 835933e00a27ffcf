/**
 * Opens the server's carrier listeners besides plain UDP (docs/carriers.md):
 * fake-TCP, UDP-over-TCP, TLS with its web fallback, and UDP with forward
 * error correction. Each module is loaded only when its block is configured
 * (fake-TCP needs raw sockets, TLS reads its certificate).
 * @module
 */

import type { AdmitFirst, CarrierListener } from "../shared/carrier/carrier.ts";
import { fecModeOf, type ServerCarriersConfig } from "../shared/config/carrier_config.ts";
import { formatHostPort } from "../shared/config/types.ts";

/** What the listeners need from the server. */
export interface CarrierListenerContext {
  /** Asked about the first frame of each stream-carrier connection (TLS fallback). */
  admit: AdmitFirst;
  /** Where the fake-TCP listener's host-change journal lives (default /var/lib/ostp). */
  stateDir?: string;
}

/**
 * Opens every configured listener; on a failure closes those already open
 * and throws an error naming the carrier and its address.
 */
export async function openCarrierListeners(
  cfg: ServerCarriersConfig,
  ctx: CarrierListenerContext,
): Promise<CarrierListener[]> {
  const out: CarrierListener[] = [];
  const attempt = async (what: string, open: () => Promise<CarrierListener>) => {
    try {
      out.push(await open());
    } catch (e) {
      for (const l of out) l.close();
      throw new Error(`${what}: ${(e as Error).message}`);
    }
  };
  if (cfg.faketcp) {
    const { listen } = cfg.faketcp;
    await attempt(`faketcp ${formatHostPort(listen)}`, async () => {
      const { FakeTcpListener } = await import("../shared/carrier/faketcp/faketcp.ts");
      const dir = cfg.faketcp!.stateDir ?? ctx.stateDir ?? "/var/lib/ostp";
      await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
      return await FakeTcpListener.open({
        hostname: listen.host,
        port: listen.port,
        journal: `${dir}/faketcp-${listen.port}.journal`,
      });
    });
  }
  if (cfg.uot) {
    const { listen } = cfg.uot;
    await attempt(`uot ${formatHostPort(listen)}`, async () => {
      const { UotListener } = await import("../shared/carrier/uot.ts");
      return UotListener.open(listen.host, listen.port);
    });
  }
  if (cfg.tls) {
    const { listen, cert, key, fallback } = cfg.tls;
    await attempt(`tls ${formatHostPort(listen)}`, async () => {
      const { TlsListener } = await import("../shared/carrier/tls.ts");
      return TlsListener.open({
        hostname: listen.host,
        port: listen.port,
        cert: await Deno.readTextFile(cert),
        key: await Deno.readTextFile(key),
        admit: ctx.admit,
        fallback: fallback ? { hostname: fallback.host, port: fallback.port } : null,
      });
    });
  }
  if (cfg.fec) {
    const { listen, mode } = cfg.fec;
    await attempt(`fec ${formatHostPort(listen)}`, async () => {
      const { UdpListener } = await import("../shared/carrier/udp.ts");
      const { FecListener } = await import("../shared/carrier/fec.ts");
      return new FecListener(UdpListener.open(listen.host, listen.port), { mode: fecModeOf(mode) });
    });
  }
  return out;
}
