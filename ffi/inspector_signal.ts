/**
 * Deno 2.9 installs, about 500 ms after the process starts, a process-wide
 * SIGUSR1 handler that starts the V8 inspector on 127.0.0.1:9229, so anyone on
 * the machine who may signal the daemon could then run code inside it (and read
 * its keys). Neither `--deny-net` nor `Deno.addSignalListener("SIGUSR1")`
 * prevents it. {@link disableInspectorSignal} does: it calls libc
 * `signal(SIGUSR1, SIG_IGN)` every few milliseconds during the startup window
 * (every millisecond around 500 ms), so whenever Deno installs its handler,
 * the next call replaces it (the previous handler the call returns tells us
 * when that happened).
 * @module
 */

import { getLog } from "../shared/log.ts";

const log = getLog("ffi.inspector");

/** `SIG_IGN` as a handler pointer value. */
const SIG_IGN = 1n;
/** `SIG_DFL`. */
const SIG_DFL = 0n;

const SYMBOLS = {
  signal: { parameters: ["i32", "pointer"], result: "pointer" },
} as const satisfies Deno.ForeignLibraryInterface;

/** Where libc lives and what SIGUSR1's number is, per OS (none on Windows). */
const PLATFORMS: Partial<Record<typeof Deno.build.os, { lib: string; signo: number }>> = {
  linux: { lib: "libc.so.6", signo: 10 },
  android: { lib: "libc.so", signo: 10 },
  darwin: { lib: "/usr/lib/libSystem.B.dylib", signo: 30 },
  freebsd: { lib: "libc.so.7", signo: 30 },
};

/** The warning logged when FFI is not granted. */
export const NO_FFI_WARNING = "cannot disable Deno's signal-started inspector without " +
  "--allow-ffi; never send that signal (SIGUSR1) to this process";

/** How {@link disableInspectorSignal} ended. */
export type InspectorSignalOutcome =
  /**
   * Deno's handler was found and replaced by SIG_IGN. `atMs` is when (ms since
   * the process started); `exposedMs` bounds how long it was in place (the
   * time since the previous poll).
   */
  | { state: "disabled"; atMs: number; exposedMs: number }
  /** The window passed without Deno installing a handler; the signal is ignored anyway. */
  | { state: "not-seen"; polls: number }
  /** `--allow-ffi` not granted: nothing was done (a warning was logged). */
  | { state: "no-ffi" }
  /** Windows (no SIGUSR1) or an OS without a known libc: nothing to do. */
  | { state: "unsupported"; os: string }
  /** libc could not be opened or `signal` failed. */
  | { state: "failed"; reason: string };

/** Options of {@link disableInspectorSignal}. */
export interface InspectorSignalOptions {
  /** Poll period during the window, ms; default 5. */
  intervalMs?: number;
  /**
   * While no handler was seen, poll every 1 ms from `focusMs[0]` to `focusMs[1]` ms after start,
   * around when Deno 2.9 installs it (≈500 ms); default [400, 900].
   */
  focusMs?: readonly [number, number];
  /** Polling at `intervalMs` lasts until this many ms after process start; default 3000. */
  windowMs?: number;
  /** Slower polling (every 100 ms) continues until this many ms if no handler was seen; 30000. */
  graceMs?: number;
}

let running: Promise<InspectorSignalOutcome> | null = null;
let warned = false;

/**
 * Makes SIGUSR1 harmless for this process: ignored, and Deno's inspector
 * handler replaced as soon as it appears. Idempotent (later calls share the
 * first call's result). Never prompts for permissions; without `--allow-ffi`
 * it logs {@link NO_FFI_WARNING} once and resolves `no-ffi`. The polling timer
 * does not keep the process alive.
 */
export function disableInspectorSignal(
  options: InspectorSignalOptions = {},
): Promise<InspectorSignalOutcome> {
  running ??= run(options);
  return running;
}

function run(options: InspectorSignalOptions): Promise<InspectorSignalOutcome> {
  const os = Deno.build.os;
  const platform = PLATFORMS[os];
  if (!platform) return Promise.resolve({ state: "unsupported", os });
  if (Deno.permissions.querySync({ name: "ffi" }).state !== "granted") {
    if (!warned) log.warn(NO_FFI_WARNING);
    warned = true;
    return Promise.resolve({ state: "no-ffi" });
  }
  let lib: Deno.DynamicLibrary<typeof SYMBOLS>;
  try {
    lib = Deno.dlopen(platform.lib, SYMBOLS);
  } catch (e) {
    const reason = `cannot open ${platform.lib}: ${(e as Error).message}`;
    log.warn("cannot disable Deno's signal-started inspector: {reason}", { reason });
    return Promise.resolve({ state: "failed", reason });
  }
  const ign = Deno.UnsafePointer.create(SIG_IGN);
  const intervalMs = options.intervalMs ?? 5;
  const [focusFrom, focusTo] = options.focusMs ?? [400, 900];
  const windowMs = options.windowMs ?? 3000;
  const graceMs = Math.max(windowMs, options.graceMs ?? 30_000);
  const { promise, resolve } = Promise.withResolvers<InspectorSignalOutcome>();
  let polls = 0;
  let lastPoll = 0; // before the first poll, the handler may have been there since the start
  let seen: { atMs: number; exposedMs: number } | null = null;
  let timer: ReturnType<typeof setTimeout> | undefined;

  const finish = (outcome: InspectorSignalOutcome) => {
    clearTimeout(timer);
    lib.close();
    if (outcome.state === "disabled") {
      log.debug(
        "Deno's inspector signal handler replaced at {atMs} ms (exposed ≤ {exposedMs} ms)",
        {
          atMs: Math.round(outcome.atMs),
          exposedMs: Math.round(outcome.exposedMs * 10) / 10,
        },
      );
    } else if (outcome.state === "failed") {
      log.warn("cannot disable Deno's signal-started inspector: {reason}", {
        reason: outcome.reason,
      });
    } else log.debug("no inspector signal handler appeared in {polls} polls", { polls });
    resolve(outcome);
  };

  const poll = () => {
    const now = performance.now();
    const prev = BigInt(Deno.UnsafePointer.value(lib.symbols.signal(platform.signo, ign)));
    polls++;
    if (prev === (1n << 64n) - 1n) {
      finish({ state: "failed", reason: "signal() returned SIG_ERR" });
      return;
    }
    if (prev !== SIG_IGN && prev !== SIG_DFL && seen === null) {
      seen = { atMs: now, exposedMs: now - lastPoll };
    }
    lastPoll = now;
    // Keep polling through the whole window even after a replacement, in case
    // the handler is installed again; then stop, or slow down while none was seen.
    if (now >= windowMs && seen) {
      finish({ state: "disabled", ...seen });
      return;
    }
    if (now >= graceMs) {
      finish({ state: "not-seen", polls });
      return;
    }
    const focused = seen === null && now >= focusFrom && now < focusTo;
    const next = setTimeout(poll, focused ? 1 : now < windowMs ? intervalMs : 100);
    Deno.unrefTimer(next);
    timer = next;
  };
  poll();
  return promise;
}
