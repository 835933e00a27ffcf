/**
 * Watching a daemon's config file for changes (both daemons reload on them).
 * @module
 */

import type { Logger } from "../log.ts";

/** Quiet time after the last change event before `onChange` runs, ms. */
export const CONFIG_WATCH_DEBOUNCE_MS = 300;

/**
 * Calls `onChange` (debounced) when the file at `path` is written or
 * replaced. Returns null, after a warning on `log`, when it cannot be watched.
 */
export function watchConfigFile(
  path: string,
  onChange: () => void,
  log: Logger,
  debounceMs = CONFIG_WATCH_DEBOUNCE_MS,
): { close(): void } | null {
  let watcher: Deno.FsWatcher;
  try {
    watcher = Deno.watchFs(path);
  } catch (e) {
    log.warn("cannot watch {path} for changes: {error}", { path, error: String(e) });
    return null;
  }
  let timer: ReturnType<typeof setTimeout> | undefined;
  (async () => {
    try {
      for await (const ev of watcher) {
        if (ev.kind !== "modify" && ev.kind !== "create") continue;
        clearTimeout(timer);
        timer = setTimeout(onChange, debounceMs);
      }
    } catch {
      // watcher closed
    }
  })();
  return {
    close() {
      clearTimeout(timer);
      try {
        watcher.close();
      } catch {
        // already closed
      }
    },
  };
}
