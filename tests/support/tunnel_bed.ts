/**
 * Starts an origin (target namespace), an ostp server (server namespace) and an
 * ostp client (client namespace) on a {@link Testbed}.
 * @module
 */

import { formatAccessKey, generateAccessKey } from "../../shared/crypto/keys.ts";
import type { Daemon } from "./daemons.ts";
import { ADDR, ADDR6, type Testbed } from "./netns.ts";

/** The daemons of one testbed. */
export interface TunnelBed {
  origin: Daemon;
  server: Daemon;
  client: Daemon;
  link: string;
  proxyPort: number;
  stop(): Promise<void>;
}

/**
 * Starts origin, server and client; resolves once the client is connected. The origin listens on
 * port 8080 of the target's IPv4 and IPv6 addresses ({@link ADDR}, {@link ADDR6}).
 */
export async function startTunnel(
  tb: Testbed,
  opts: { serverArgs?: string[]; clientArgs?: string[] } = {},
): Promise<TunnelBed> {
  const key = formatAccessKey(generateAccessKey(), "hex");
  const origin = tb.spawnDeno("origin", tb.target, "tests/support/origin_main.ts", [
    `${ADDR.target},${ADDR6.target}`,
    "8080",
  ]);
  const server = tb.spawnDeno("server", tb.server, "server/main.ts", [
    "-k",
    key,
    "-l",
    `${ADDR.server}:8443`,
    ...(opts.serverArgs ?? []),
  ]);
  const proxyPort = 1088;
  let client: Daemon | null = null;
  const stop = async () => {
    await client?.stop();
    await server.stop();
    await origin.stop();
  };
  try {
    await origin.waitFor(/ready/);
    const link = (await server.waitFor(/share link: (\S+)/))[1];
    client = tb.spawnDeno("client", tb.client, "client/main.ts", [
      link,
      "-l",
      `127.0.0.1:${proxyPort}`,
      ...(opts.clientArgs ?? []),
    ]);
    await client.waitFor(/connected to/);
    return { origin, server, client, link, proxyPort, stop };
  } catch (e) {
    await stop();
    throw e;
  }
}
