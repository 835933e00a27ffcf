/**
 * The `status` subcommand of both daemons: asks the running daemon for its
 * counters on the control socket and prints them readably (or as the raw JSON
 * answer with `--json`). The commander helpers come from the caller, so this
 * module depends on neither daemon's code.
 * @module
 */

import type { Command } from "commander";
import { ConfigError, isPlainObject, readJsoncFile } from "../config/types.ts";
import { readControlValue } from "../config/control.ts";
import { type DaemonKind, defaultControlPath, resolveControlPath } from "./path.ts";
import { ControlUnavailableError, queryControl } from "./query.ts";

/** Output buffers commander writes into. */
export type CommandOutput = { out: string; err: string };

/** What the caller's CLI provides: its command builder and runner. */
export interface StatusCliKit {
  /** `ostp-server` or `ostp-client`. */
  program: string;
  /** Which daemon's socket is the default. */
  daemon: DaemonKind;
  /** Builds a commander command that reports into `output`. */
  command(name: string, output: CommandOutput): Command;
  /** Runs commander; a result for help/version/usage errors, else undefined. */
  run(
    cmd: Command,
    argv: string[],
    output: CommandOutput,
  ): Promise<{ kind: "help" | "version" | "error"; text: string } | undefined>;
}

/**
 * What `status` ends with: `status` (print `text` on stdout, exit 0),
 * `failure` (no daemon answers or it refused: stderr, exit 1), or the usual
 * early results (`error` exits 2).
 */
export type StatusResult =
  | { kind: "status"; text: string; answer: Record<string, unknown> }
  | { kind: "help" | "version" | "error" | "failure"; text: string };

/** `status [--control <path>] [-c <config>] [--json]`. */
export async function statusCommand(argv: string[], kit: StatusCliKit): Promise<StatusResult> {
  const output = { out: "", err: "" };
  const cmd = kit.command(`${kit.program} status`, output)
    .description(
      `Print the counters of the running ${kit.daemon} daemon, asked on its local control socket.`,
    )
    .option(
      "--control <path>",
      `control socket path (default here: ${defaultControlPath(kit.daemon) ?? "none"})`,
    )
    .option("-c, --config <file>", "take the control socket path from this config file")
    .option("--json", "print the daemon's JSON answer as is");
  const early = await kit.run(cmd, argv, output);
  if (early) return early;
  const o = cmd.opts<{ control?: string; config?: string; json?: boolean }>();
  let setting: string | false | undefined = o.control;
  if (setting === undefined && o.config !== undefined) {
    const fromFile = await controlFromConfig(o.config);
    if (typeof fromFile === "object") return fromFile;
    setting = fromFile;
  }
  if (setting === false) {
    return { kind: "failure", text: `error: ${o.config} turns the control socket off` };
  }
  const path = resolveControlPath(setting, kit.daemon);
  if (path === null) {
    return {
      kind: "failure",
      text: "error: no control socket path here (Windows, or no --allow-sys): pass --control",
    };
  }
  let answer: Record<string, unknown>;
  try {
    answer = await queryControl(path, { cmd: "status" });
  } catch (e) {
    if (!(e instanceof ControlUnavailableError)) throw e;
    return { kind: "failure", text: `error: ${e.message} (is ${kit.program} running?)` };
  }
  if (answer.ok !== true) {
    return { kind: "failure", text: `error: the daemon refused: ${String(answer.error)}` };
  }
  const text = o.json ? JSON.stringify(answer) : formatStatus(answer, `${kit.program} on ${path}`);
  return { kind: "status", text, answer };
}

/** The `control` setting of a config file, or the error result naming the file. */
async function controlFromConfig(
  file: string,
): Promise<string | false | undefined | StatusResult> {
  try {
    const raw = await readJsoncFile(file);
    const issues: { path: string; message: string }[] = [];
    const v = readControlValue(isPlainObject(raw) ? raw.control : undefined, "control", issues);
    if (issues.length > 0) throw new ConfigError(issues, file);
    return v;
  } catch (e) {
    if (e instanceof ConfigError) return { kind: "error", text: `error: ${e.message}` };
    throw e;
  }
}

const KEY_WIDTH = 24;

function size(n: number): string {
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let v = n / 1024;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${v.toFixed(1)} ${units[u]}`;
}

function value(key: string, v: unknown): string {
  if (typeof v === "number" && /bytes/i.test(key) && !/^packets/i.test(key) && v >= 1024) {
    return `${v} (${size(v)})`;
  }
  if (typeof v === "number" && /Ms$/.test(key)) return `${Math.round(v * 10) / 10} ms`;
  return typeof v === "string" ? v : JSON.stringify(v);
}

/** `key  value` lines of an object, nested objects as `parent.child`. */
function lines(obj: Record<string, unknown>, indent: string, prefix = ""): string[] {
  const out: string[] = [];
  for (const [k, v] of Object.entries(obj)) {
    const name = prefix + k;
    if (isPlainObject(v)) out.push(...lines(v, indent, `${name}.`));
    else out.push(`${indent}${name.padEnd(KEY_WIDTH)} ${value(k, v)}`);
  }
  return out;
}

/**
 * A readable rendering of a status answer: `stats` as aligned lines, other
 * scalar fields (`rssBytes`), then lists one line per item: `users` (server),
 * `rules` with their hit counts (client).
 */
export function formatStatus(answer: Record<string, unknown>, title: string): string {
  const out = [title];
  for (const [k, v] of Object.entries(answer)) {
    if (k === "ok") continue;
    if (isPlainObject(v)) {
      out.push(`${k}:`, ...lines(v, "  "));
    } else if (Array.isArray(v)) {
      out.push(`${k} (${v.length}):`);
      for (const item of v) {
        if (!isPlainObject(item)) {
          out.push(`  ${JSON.stringify(item)}`);
          continue;
        }
        // Users have a name, the client's rules a label.
        const { name, label, ...rest } = item;
        const fields = Object.entries(rest).map(([f, x]) => `${f} ${value(f, x)}`);
        out.push(`  ${String(name ?? label ?? "?")}: ${fields.join(", ")}`);
      }
    } else out.push(`${k.padEnd(KEY_WIDTH + 2)} ${value(k, v)}`);
  }
  return out.join("\n");
}
