/**
 * `ostp-client` / `deno task client`: takes a share link (or flags, or a
 * config file), starts the local proxy, the router and the tunnel, reloads the
 * routing on SIGHUP, a config file change or `reload` on the control socket,
 * answers `status` and `hop` there, and stops cleanly on SIGINT/SIGTERM.
 * Deno's signal-started inspector is disabled first.
 * @module
 */

import { getLog, setupLogging } from "../shared/log.ts";
import { parseClientArgs } from "./cli.ts";
import { OstpClient } from "./client.ts";
import { disableInspectorSignal } from "../ffi/inspector_signal.ts";
import { ControlCommandError, openDaemonControl } from "../shared/control/server.ts";
import { watchConfigFile } from "../shared/config/watch.ts";
import { configReloader } from "../shared/config/reloader.ts";

const log = getLog("client");

/** Runs the client CLI; resolves with the process exit code. */
export async function main(argv: string[]): Promise<number> {
  const parsed = await parseClientArgs(argv);
  if (parsed.kind === "down") return await down(parsed.stateDir);
  if (parsed.kind === "vpn-up" || parsed.kind === "vpn-down" || parsed.kind === "vpn-self-test") {
    void disableInspectorSignal();
    const vpn = await import("./vpn/vpn_run.ts");
    if (parsed.kind === "vpn-down") return await vpn.vpnDown(parsed.stateDir);
    if (parsed.kind === "vpn-self-test") return await vpn.vpnSelfTest(parsed.options);
    return await vpn.vpnUp(parsed.options, parsed.warnings);
  }
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
    const moved = client.hop();
    log.info("moved {moved} session(s) to new UDP sockets", { moved });
    return moved;
  };
  // Hot reload: SIGHUP, the control socket's "reload", or the config file
  // changing on disk. The arguments are parsed again (file, environment,
  // flags); a config that fails validation is refused with its reasons and
  // the running one kept. Routing and log levels apply at once, to new flows.
  const { reload, reloadLogged, settled } = configReloader({
    parse: () => parseClientArgs(argv),
    apply: async (config, why) => {
      const r = await client.reload(config);
      log.info("config reloaded ({why}): {rules} rule(s), default outbound {default}", {
        why,
        rules: r.rules,
        default: config.routing.defaultOutbound,
      });
      return { rules: r.rules, needsRestart: r.needsRestart };
    },
    log,
  });
  const hup = () => reloadLogged("SIGHUP");
  Deno.addSignalListener("SIGINT", stop);
  if (Deno.build.os !== "windows") {
    Deno.addSignalListener("SIGTERM", stop);
    Deno.addSignalListener("SIGUSR2", hop);
    Deno.addSignalListener("SIGHUP", hup);
  }
  const removeSignals = (which: "reload" | "all") => {
    if (Deno.build.os !== "windows") {
      Deno.removeSignalListener("SIGUSR2", hop);
      Deno.removeSignalListener("SIGHUP", hup);
    }
    if (which === "reload") return;
    Deno.removeSignalListener("SIGINT", stop);
    if (Deno.build.os !== "windows") Deno.removeSignalListener("SIGTERM", stop);
  };
  const control = await openDaemonControl(parsed.config.control, "client", {
    status: () => {
      const { rules, runners, ...stats } = client.stats();
      const sessions = runners.map(({ index, ...r }) => ({
        name: `session ${index}`,
        index,
        ...r,
      }));
      return { stats, sessions, rules };
    },
    hop: () => ({ moved: hop() }),
    reload: async () => {
      const r = await reload("control socket");
      if (typeof r.rejected === "string") throw new ControlCommandError(r.rejected);
      return r;
    },
  });

  try {
    await client.start();
  } catch (e) {
    console.error(`ostp-client: cannot start: ${(e as Error).message}`);
    removeSignals("all");
    await control?.close();
    await client.stop();
    return 1;
  }
  const watcher = parsed.configPath
    ? watchConfigFile(parsed.configPath, () => reloadLogged("file changed"), log)
    : null;
  await done;
  watcher?.close();
  removeSignals("reload");
  await control?.close();
  await settled();
  log.info("shutting down");
  await client.stop();
  // SIGINT/SIGTERM go last: a second one during shutdown must not kill the process.
  Deno.removeSignalListener("SIGINT", stop);
  if (Deno.build.os !== "windows") Deno.removeSignalListener("SIGTERM", stop);
  return 0;
}

/** `ostp-client down`: undoes a crashed TUN run's host changes; exit 1 if some could not be. */
async function down(stateDir: string): Promise<number> {
  if (Deno.build.os === "windows") {
    const { recoverWindowsSystemProxy } = await import("./sysproxy/windows.ts");
    const r = await recoverWindowsSystemProxy();
    console.log(
      r ? `system proxy: ${r.undone.length} value(s) put back` : "system proxy: nothing to undo",
    );
  }
  const { downAndReport } = await import("./tun/tun_mode.ts");
  return await downAndReport(stateDir, "ostp-client down");
}

if (import.meta.main) Deno.exit(await main(Deno.args));
