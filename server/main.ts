/**
 * `ostp-server` / `deno task server`: parses flags and the config file, starts
 * the server, prints a share link, and shuts down cleanly on SIGINT/SIGTERM.
 * @module
 */

import { formatHostPort, isUnspecifiedHost } from "../shared/config/types.ts";
import { encodeShareLink } from "../shared/link.ts";
import { getLog, setupLogging } from "../shared/log.ts";
import { parseServerArgs } from "./cli.ts";
import { OstpServer } from "./server.ts";

const log = getLog("server");

/** Runs the server CLI; resolves with the process exit code. */
export async function main(argv: string[]): Promise<number> {
  const parsed = await parseServerArgs(argv);
  if (parsed.kind !== "run") {
    // error: usage or validation (exit 2); failure: runtime, e.g. a file not written (exit 1).
    const failed = parsed.kind === "error" || parsed.kind === "failure";
    (failed ? console.error : console.log)(parsed.text);
    if (parsed.kind === "links" && parsed.warning) console.error(parsed.warning);
    return parsed.kind === "error" ? 2 : parsed.kind === "failure" ? 1 : 0;
  }
  const config = parsed.config;
  await setupLogging(config.log);
  const server = new OstpServer(config);
  try {
    server.start();
  } catch (e) {
    console.error(`ostp-server: cannot listen: ${(e as Error).message}`);
    return 1;
  }
  const { promise: done, resolve } = Promise.withResolvers<void>();
  const stop = () => resolve();
  // SIGUSR1 prints the counters (sessions, drops by reason, memory) as one JSON line.
  const dump = () =>
    console.log(JSON.stringify({ stats: server.stats(), rssBytes: Deno.memoryUsage().rss }));
  // Handlers go in before the share link is printed: that line means "ready".
  Deno.addSignalListener("SIGINT", stop);
  if (Deno.build.os !== "windows") {
    Deno.addSignalListener("SIGTERM", stop);
    Deno.addSignalListener("SIGUSR1", dump);
  }
  const bound = server.addresses[0];
  const advertised = config.publicAddress ??
    { host: isUnspecifiedHost(bound.hostname) ? "127.0.0.1" : bound.hostname, port: bound.port };
  for (const key of config.keys) {
    console.log(`share link: ${encodeShareLink({ key, server: advertised, mtu: config.mtu })}`);
  }
  if (!config.publicAddress && isUnspecifiedHost(bound.hostname)) {
    log.info("share links use {address}; set publicAddress for clients elsewhere", {
      address: formatHostPort(advertised),
    });
  }
  await done;
  if (Deno.build.os !== "windows") Deno.removeSignalListener("SIGUSR1", dump);
  log.info("shutting down");
  await server.stop();
  Deno.removeSignalListener("SIGINT", stop);
  if (Deno.build.os !== "windows") Deno.removeSignalListener("SIGTERM", stop);
  return 0;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
