/**
 * Command line of `ostp-server`: parses the arguments into a validated
 * {@link ServerConfig} (defaults < config file < flags) without printing or
 * exiting; the caller prints `text` and picks the exit code.
 * @module
 */

import { Command, CommanderError, Option } from "commander";
import { formatAccessKey, generateAccessKey } from "../shared/crypto/keys.ts";
import {
  ConfigError,
  type ConfigIssue,
  isPlainObject,
  LOG_FORMATS,
  LOG_LEVELS,
  readJsoncFile,
} from "../shared/config/types.ts";
import { parseServerConfig, type ServerConfig } from "../shared/config/server_config.ts";
import denoJson from "../deno.json" with { type: "json" };

/** What {@link parseServerArgs} decided. `text` has no trailing newline (print it with `console.log`). */
export type ServerCliResult =
  | { kind: "run"; config: ServerConfig; configPath?: string }
  | { kind: "generate-key"; text: string }
  | { kind: "help" | "version" | "error"; text: string };

/** Error text when the server would start without any access key. */
export const NO_KEY_MESSAGE =
  "no access key: pass --key or a config file (generate one with --generate-key)";

interface ServerOptions {
  config?: string;
  listen?: string[];
  key?: string[];
  publicAddress?: string;
  maxSessions?: string;
  idleTimeout?: string;
  logLevel?: string;
  logFormat?: string;
  generateKey?: string | boolean;
}

const collect = (v: string, prev: string[] = []): string[] => [...prev, v];

function buildProgram(output: { out: string; err: string }): Command {
  return new Command("ostp-server")
    .description("OSTP server: accepts tunnel clients and relays their traffic to the internet.")
    .version(denoJson.version, "-V, --version", "print the version")
    .helpOption("-h, --help", "show this help")
    .exitOverride()
    .configureOutput({
      writeOut: (s) => (output.out += s),
      writeErr: (s) => (output.err += s),
      getOutHelpWidth: () => 100,
      getErrHelpWidth: () => 100,
      getOutHasColors: () => false,
      getErrHasColors: () => false,
    })
    .showHelpAfterError("(run with --help for usage)")
    .allowExcessArguments(false)
    .option("-c, --config <file>", "config file (JSON with comments)")
    .option(
      "-l, --listen <host:port>",
      "address to listen on; repeatable, replaces the file's list",
      collect,
    )
    .option(
      "-k, --key <key>",
      "access key (hex or base64url); repeatable, added to the file's keys",
      collect,
    )
    .option("--public-address <host:port>", "address that share links advertise")
    .option("--max-sessions <n>", "most concurrent sessions")
    .option("--idle-timeout <s>", "seconds without traffic before a session is closed")
    .addOption(new Option("--log-level <lvl>", "log level").choices(LOG_LEVELS))
    .addOption(new Option("--log-format <fmt>", "log format").choices(LOG_FORMATS))
    .option("--generate-key [format]", 'print a fresh access key ("hex" or "base64url") and exit');
}

/** Parses a decimal number flag, recording an issue naming the flag. */
function numberFlag(
  v: string | undefined,
  flag: string,
  issues: ConfigIssue[],
): number | undefined {
  if (v === undefined) return undefined;
  if (!/^\d+(\.\d+)?$/.test(v.trim())) {
    issues.push({ path: flag, message: "expected a number" });
    return undefined;
  }
  return Number(v.trim());
}

/** Rewrites issue paths of fields that came from flags to the flag's name. */
function renameIssues(
  issues: ConfigIssue[],
  origin: (path: string) => string | undefined,
): ConfigIssue[] {
  return issues.map((i) => ({ path: origin(i.path) ?? i.path, message: i.message }));
}

function errorResult(e: ConfigError): ServerCliResult {
  return { kind: "error", text: `error: ${e.message}` };
}

/**
 * Parses the server's arguments (without the program name). Never prints or
 * exits: help, version, key generation and errors come back as text.
 */
export async function parseServerArgs(argv: string[]): Promise<ServerCliResult> {
  const r = await parse(argv);
  if ("text" in r) r.text = r.text.trimEnd();
  return r;
}

async function parse(argv: string[]): Promise<ServerCliResult> {
  const output = { out: "", err: "" };
  const program = buildProgram(output);
  try {
    await program.parseAsync(argv, { from: "user" });
  } catch (e) {
    if (!(e instanceof CommanderError)) throw e;
    if (e.code === "commander.helpDisplayed" || e.code === "commander.help") {
      return { kind: "help", text: output.out };
    }
    if (e.code === "commander.version") return { kind: "version", text: output.out };
    return { kind: "error", text: output.err || `error: ${e.message}` };
  }
  const o = program.opts<ServerOptions>();

  if (o.generateKey !== undefined) {
    const form = o.generateKey === true ? "hex" : o.generateKey;
    if (form !== "hex" && form !== "base64url") {
      return {
        kind: "error",
        text: 'error: --generate-key: format must be "hex" or "base64url"',
      };
    }
    return { kind: "generate-key", text: formatAccessKey(generateAccessKey(), form) + "" };
  }

  if (o.config === undefined && (o.key === undefined || o.key.length === 0)) {
    return { kind: "error", text: `error: ${NO_KEY_MESSAGE}` };
  }

  let raw: unknown = {};
  if (o.config !== undefined) {
    try {
      raw = await readJsoncFile(o.config);
    } catch (e) {
      if (e instanceof ConfigError) return errorResult(e);
      throw e;
    }
  }
  // Merge flags into the file's object, in the file's format, then validate it all at once.
  const flagIssues: ConfigIssue[] = [];
  const merged: Record<string, unknown> = isPlainObject(raw) ? { ...raw } : {};
  const fileKeyCount = Array.isArray(merged.keys) ? merged.keys.length : 0;
  if (o.listen) merged.listen = o.listen;
  if (o.key) merged.keys = [...(Array.isArray(merged.keys) ? merged.keys : []), ...o.key];
  if (o.publicAddress !== undefined) merged.publicAddress = o.publicAddress;
  const maxSessions = numberFlag(o.maxSessions, "--max-sessions", flagIssues);
  if (maxSessions !== undefined) merged.maxSessions = maxSessions;
  const idleTimeout = numberFlag(o.idleTimeout, "--idle-timeout", flagIssues);
  if (idleTimeout !== undefined) merged.idleTimeout = idleTimeout;
  if (o.logLevel !== undefined || o.logFormat !== undefined) {
    const log = isPlainObject(merged.log) ? { ...merged.log } : {};
    if (o.logLevel !== undefined) log.level = o.logLevel;
    if (o.logFormat !== undefined) log.format = o.logFormat;
    merged.log = log;
  }

  const origin = (path: string): string | undefined => {
    const top = /^[^.[]+/.exec(path)?.[0];
    if (top === "listen" && o.listen) return "--listen";
    if (top === "publicAddress" && o.publicAddress !== undefined) return "--public-address";
    if (top === "maxSessions" && maxSessions !== undefined) return "--max-sessions";
    if (top === "idleTimeout" && idleTimeout !== undefined) return "--idle-timeout";
    const k = /^keys\[(\d+)\]$/.exec(path);
    if (k && Number(k[1]) >= fileKeyCount && o.key) return "--key";
    return undefined;
  };
  const issues = [...flagIssues];
  let config: ServerConfig | undefined;
  try {
    config = parseServerConfig(isPlainObject(raw) ? merged : raw, o.config);
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    issues.push(...renameIssues(e.issues, origin));
  }
  if (!config || issues.length > 0) return errorResult(new ConfigError(issues, o.config));
  return { kind: "run", config, configPath: o.config };
}
