/**
 * The test origin as a process (for network namespaces):
 *   deno run -A tests/support/origin_main.ts <host>[,<host>…] <port>
 * Serves `/bytes/<n>?seed=s`, `/upload`, `/hello` on each host (an IPv6 address unbracketed);
 * prints "ready" when listening.
 * @module
 */

import { startOrigin } from "./daemons.ts";

const [hosts = "0.0.0.0", port = "8080"] = Deno.args;
for (const host of hosts.split(",")) startOrigin(host, Number(port));
console.log("ready");
