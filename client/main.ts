/**
 * `ostp-client` / `deno task client`: takes a share link (or flags, or a
 * config file), starts the local proxy and the tunnel, answers `status` and
 * `hop` on its control socket, and stops cleanly on SIGINT/SIGTERM. Deno's
 * signal-started inspector is disabled first.
 * @module
 */

import { getLog, setupLogging } from "../shared/log.ts";
import { parseClientArgs } from "./cli.ts";
import { OstpClient } from "./client.ts";
import { disableInspectorSignal } from "../ffi/inspector_signal.ts";
import { openDaemonControl } from "../shared/control/server.ts";

const log = getLog("client");

/** Runs the client CLI; resolves with the process exit code. */
export async function main(argv: string[]): Promise<number> {
  const parsed = await parseClientArgs(argv);
  if (parsed.kind !== "run") {
    // error: usage or validation (exit 2); failure: runtime, e.g. a file not written (exit 1).
    const failed = parsed.kind === "error" || parsed.kind === "failure";
    (failed ? console.error : console.log)(parsed.text);
    return parsed.kind === "error" ? 2 : parsed.kind === "failure" ? 1 : 0;
  }
  await setupLogging(parsed.config.log);
  void disableInspectorSignal();
  const client = new OstpClient(parsed.config);
  const { promise: done, resolve } = Promise.withResolvers<void>();
  const stop = () => resolve();
  // SIGUSR2 (or "hop" on the control socket) moves every session to a fresh
  // UDP socket (new source port) without a new handshake.
  const hop = () => {
    const moved = client.pool.runners.filter((r) => r.rebind()).length;
    log.info("moved {moved} session(s) to new UDP sockets", { moved });
    return moved;
  };
  Deno.addSignalListener("SIGINT", stop);
  if (Deno.build.os !== "windows") {
    Deno.addSignalListener("SIGTERM", stop);
    Deno.addSignalListener("SIGUSR2", hop);
  }
  const control = await openDaemonControl(parsed.config.control, "client", {
    status: () => ({ stats: client.stats() }),
    hop: () => ({ moved: hop() }),
  });

  try {
    await client.start();
  } catch (e) {
    console.error(`ostp-client: cannot start: ${(e as Error).message}`);
    await control?.close();
    await client.stop();
    return 1;
  }
  await done;
  if (Deno.build.os !== "windows") Deno.removeSignalListener("SIGUSR2", hop);
  await control?.close();
  log.info("shutting down");
  await client.stop();
  Deno.removeSignalListener("SIGINT", stop);
  if (Deno.build.os !== "windows") Deno.removeSignalListener("SIGTERM", stop);
  return 0;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
