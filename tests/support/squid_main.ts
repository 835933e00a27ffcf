/**
 * squid as a process (for network namespaces), through {@link startSquid}:
 *   deno run -A tests/support/squid_main.ts <listen address> <user> <password> <log file> <port>…
 * Prints `ports <open> <auth> pid <squid's pid>` then "ready"; on SIGTERM stops squid, writes its access log to
 * `<log file>` and exits.
 * @module
 */

import { startSquid } from "./squid.ts";

const [hostname, user, password, logFile, ...ports] = Deno.args;
const squid = await startSquid({ hostname, user, password, allowedPorts: ports.map(Number) });
console.log(`ports ${squid.openPort} ${squid.authPort} pid ${squid.pid}`);
console.log("ready");
const { promise, resolve } = Promise.withResolvers<void>();
Deno.addSignalListener("SIGTERM", () => resolve());
await promise;
await Deno.writeTextFile(logFile, await squid.stop());
Deno.exit(0);
