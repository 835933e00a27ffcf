/**
 * `ostp-server` / `deno task server`: parses flags and the config file, starts
 * the server, prints a share link, reloads on SIGHUP, a config change or a
 * `reload` on the control socket, answers `status` there, and shuts down
 * cleanly on SIGINT/SIGTERM. Deno's signal-started inspector is disabled first.
 * @module
 */

import { defaultServerWorkers, formatHostPort, isUnspecifiedHost } from "../shared/config/types.ts";
import { encodeShareLink } from "../shared/link.ts";
import { programName } from "../shared/program_name.ts";
import { getLog, setupLogging } from "../shared/log.ts";
import { watchConfigFile } from "../shared/config/watch.ts";
import { parseServerArgs } from "./cli.ts";
import { OstpServer } from "./server.ts";
import { ApiServer } from "./api.ts";
import { disableInspectorSignal } from "../ffi/inspector_signal.ts";
import { ControlCommandError, openDaemonControl } from "../shared/control/server.ts";
import { configReloader } from "../shared/config/reloader.ts";

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
  void disableInspectorSignal();
  // One worker thread per core unless the config or --workers says otherwise (docs/workers.md).
  const server = new OstpServer(config, { workers: config.workers ?? defaultServerWorkers() });
  try {
    await server.start();
  } catch (e) {
    console.error(`ostp-server: cannot start: ${(e as Error).message}`);
    return 1;
  }
  let api: ApiServer | null = null;
  if (config.api) {
    try {
      api = new ApiServer(server.apiBackend(), {
        hostname: config.api.listen.host,
        port: config.api.listen.port,
        token: config.api.token,
      });
      const at = api.start();
      log.info("management API on http://{address}", {
        address: formatHostPort({ host: at.hostname, port: at.port }),
      });
    } catch (e) {
      console.error(`ostp-server: cannot start the management API: ${(e as Error).message}`);
      await server.stop();
      return 1;
    }
  }
  const { promise: done, resolve } = Promise.withResolvers<void>();
  const stop = () => resolve();
  // Hot reload: SIGHUP, the control socket's "reload", or the config file
  // changing on disk. A config that fails validation is refused with its
  // reasons and the running one is kept.
  const { reload, reloadLogged, settled } = configReloader({
    parse: () => parseServerArgs(argv),
    apply: (next, why) => {
      const r = server.reload(next);
      log.info("config reloaded ({why}): {keyCount} key(s), {closed} session(s) closed", {
        why,
        keyCount: next.keys.length + next.users.length,
        closed: r.closedSessions,
      });
      return { closedSessions: r.closedSessions, needsRestart: r.needsRestart };
    },
    log,
  });
  // Handlers and the control socket go in before the share link is printed:
  // that line means "ready".
  Deno.addSignalListener("SIGINT", stop);
  if (Deno.build.os !== "windows") Deno.addSignalListener("SIGTERM", stop);
  const hup = () => reloadLogged("SIGHUP");
  if (Deno.build.os !== "windows") Deno.addSignalListener("SIGHUP", hup);
  const control = await openDaemonControl(config.control, "server", {
    status: async () => ({
      stats: await server.statsNow(),
      workers: server.workerSummaries(),
      rssBytes: Deno.memoryUsage().rss,
      users: server.userStats(),
    }),
    reload: async () => {
      const r = await reload("control socket");
      if (typeof r.rejected === "string") throw new ControlCommandError(r.rejected);
      return r;
    },
  });
  const bound = server.addresses[0];
  const advertised = server.advertisedAddress();
  // A share link carries its key: print the links only to a person at a
  // terminal (or when asked), never into a service's journal.
  if (parsed.printLinks || Deno.stdout.isTerminal()) {
    for (const key of config.keys) {
      console.log(`share link: ${encodeShareLink({ key, server: advertised, mtu: config.mtu })}`);
    }
    for (const u of config.users) {
      const link = encodeShareLink({
        key: u.key,
        server: advertised,
        mtu: config.mtu,
        name: u.name,
      });
      console.log(`share link: ${link}`);
    }
  } else {
    log.info("share links not printed (they carry keys; stdout is not a terminal): {hint}", {
      hint: `${programName("server")} links${parsed.configPath ? " <config>" : ""} prints them`,
    });
  }
  console.log(
    `ready: udp ${
      server.addresses.map((a) => formatHostPort({ host: a.hostname, port: a.port })).join(", ")
    }, ${config.keys.length + config.users.length} key(s)`,
  );
  if (!config.publicAddress && isUnspecifiedHost(bound.hostname)) {
    log.info("share links use {address}; set publicAddress for clients elsewhere", {
      address: formatHostPort(advertised),
    });
  }
  const watcher = parsed.configPath
    ? watchConfigFile(parsed.configPath, () => reloadLogged("file changed"), log)
    : null;
  await done;
  watcher?.close();
  if (Deno.build.os !== "windows") Deno.removeSignalListener("SIGHUP", hup);
  await control?.close();
  await settled();
  log.info("shutting down");
  await api?.stop();
  await server.stop();
  Deno.removeSignalListener("SIGINT", stop);
  if (Deno.build.os !== "windows") Deno.removeSignalListener("SIGTERM", stop);
  return 0;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
