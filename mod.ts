/**
 * ostp — an obfuscated, censorship-resistant secure tunnel for Deno.
 *
 * The library face: start a server or a client from code, stop it, and
 * subscribe to typed events (state changes, traffic counters, log records).
 *
 * ```ts
 * import { generateAccessKey, OstpClient, OstpServer, parseClientConfig, parseServerConfig, formatAccessKey } from "./mod.ts";
 * const key = formatAccessKey(generateAccessKey(), "hex");
 * const server = new OstpServer(parseServerConfig({ listen: ["127.0.0.1:0"], keys: [key] }));
 * server.start();
 * const client = new OstpClient(parseClientConfig({
 *   server: `127.0.0.1:${server.addresses[0].port}`, key, listen: "127.0.0.1:0",
 * }));
 * client.events.on("state", (e) => console.log(e.session, e.state));
 * client.events.on("stats", (s) => console.log(s.bytesReceived, s.rttMs));
 * await client.start();
 * // … use the proxy at client.proxyAddress (the server refuses loopback and private
 * // targets unless its config's `egress.allow` opens them: docs/egress.md) …
 * await client.stop();
 * await server.stop();
 * ```
 * @module
 */

export {
  OstpServer,
  type ServerEvents,
  type ServerOptions,
  type ServerStats,
  type WorkerSummary,
} from "./server/server.ts";
export {
  type ClientEvents,
  type ClientOptions,
  type ClientReload,
  type ClientStats,
  OstpClient,
} from "./client/client.ts";
export type { RuleHits } from "./client/router/rules.ts";
export type { RouterUdpStats } from "./client/router/router_outbound.ts";
export type { RunnerState } from "./client/outbound/ostp.ts";
export { Emitter, type TrafficStats } from "./shared/events.ts";
export {
  type ClientConfig,
  ConfigError,
  type HostPort,
  type LogConfig,
  type ServerConfig,
} from "./shared/config/types.ts";
export { loadServerConfig, parseServerConfig } from "./shared/config/server_config.ts";
export { loadClientConfig, parseClientConfig } from "./shared/config/client_config.ts";
export {
  clientConfigFromLink,
  decodeShareLink,
  encodeShareLink,
  LinkError,
  type ShareLink,
} from "./shared/link.ts";
export { formatAccessKey, generateAccessKey, parseAccessKey } from "./shared/crypto/keys.ts";
export { addLogListener, setupLogging } from "./shared/log.ts";
export type { DropCounters } from "./server/dispatcher.ts";
