/**
 * The test origin as a process (for network namespaces):
 *   deno run -A tests/support/origin_main.ts <host> <port>
 * Serves `/bytes/<n>?seed=s`, `/upload`, `/hello`; prints "ready" when listening.
 * @module
 */

import { startOrigin } from "./daemons.ts";

const [host = "0.0.0.0", port = "8080"] = Deno.args;
startOrigin(host, Number(port));
console.log("ready");
