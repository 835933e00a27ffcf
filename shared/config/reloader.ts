/**
 * Hot config reload, as both daemons do it: on SIGHUP, the control socket's
 * `reload` or the config file changing, the arguments are parsed again (file,
 * environment, flags); a config that fails validation is refused with its
 * reasons and the running one kept; otherwise logging is set up again and the
 * daemon applies the rest. Reloads run one at a time, in order.
 * @module
 */

import { type Logger, setupLogging } from "../log.ts";
import type { ControlAnswer } from "../control/server.ts";
import type { LogConfig } from "./types.ts";

/** What a daemon's argument parser gives: a config to run, or a text (e.g. the reasons it failed). */
export type ReloadParse<C> = { kind: "run"; config: C } | { kind: string; text: string };

/** What a daemon's apply step answers; `needsRestart` names the fields a restart still has to apply. */
export type ReloadAnswer = ControlAnswer & { needsRestart: readonly string[] };

/** How a daemon reloads. */
export interface ConfigReloaderOptions<C extends { log: LogConfig }> {
  /** Parses the arguments again. */
  parse: () => Promise<ReloadParse<C>>;
  /** Applies a valid config (after logging is set up) and logs the daemon's own "reloaded" line. */
  apply: (config: C, why: string) => ReloadAnswer | Promise<ReloadAnswer>;
  /** Where rejections, failures and the "after a restart" warning go. */
  log: Logger;
}

/** A daemon's serialized reloads. */
export interface ConfigReloader {
  /** Reloads (after any reload still running); answers `{ rejected }` for an invalid config. */
  reload(why: string): Promise<ControlAnswer>;
  /** {@link reload} for signal and file-change reloads, which have nobody to answer: a failure is logged. */
  reloadLogged(why: string): void;
  /** Resolves when the reloads asked for so far have finished (however they ended). */
  settled(): Promise<void>;
}

function isRun<C>(p: ReloadParse<C>): p is { kind: "run"; config: C } {
  return p.kind === "run";
}

/** Makes a daemon's reloader. */
export function configReloader<C extends { log: LogConfig }>(
  opts: ConfigReloaderOptions<C>,
): ConfigReloader {
  const { log } = opts;
  let reloading = Promise.resolve();
  const reload = (why: string): Promise<ControlAnswer> => {
    const result = reloading.then(async (): Promise<ControlAnswer> => {
      const next = await opts.parse();
      if (!isRun(next)) {
        log.error("config reload ({why}) rejected, keeping the running config: {reason}", {
          why,
          reason: next.text,
        });
        return { rejected: next.text };
      }
      await setupLogging(next.config.log);
      const answer = await opts.apply(next.config, why);
      if (answer.needsRestart.length > 0) {
        log.warn("changes to {fields} take effect after a restart", {
          fields: answer.needsRestart.join(", "),
        });
      }
      return answer;
    });
    reloading = result.then(() => {}, () => {});
    return result;
  };
  return {
    reload,
    reloadLogged: (why) =>
      void reload(why).catch((e) =>
        log.error("config reload ({why}) failed: {error}", { why, error: String(e) })
      ),
    settled: () => reloading,
  };
}
