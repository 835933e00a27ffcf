/**
 * Command line of `ostp-client`: parses the arguments into a validated
 * {@link ClientConfig} without printing or exiting; the caller prints `text`
 * and picks the exit code.
 *
 * Precedence: defaults < config file < share link < flags. A share link is
 * the only argument a user needs: `ostp-client 'ostp://KEY@host:8443#name'`.
 *
 * Subcommands: `init server|client [path] [--force]` (a commented template)
 * and `check <config>` (validate a client config file).
 * @module
 */

import { type Command, Option } from "commander";
import { formatAccessKey } from "../shared/crypto/keys.ts";
import {
  ConfigError,
  type ConfigIssue,
  formatHostPort,
  isPlainObject,
  LOG_FORMATS,
  LOG_LEVELS,
  readJsoncFile,
} from "../shared/config/types.ts";
import { type ClientConfig, parseClientConfig } from "../shared/config/client_config.ts";
import { decodeShareLink, LinkError, type ShareLink } from "../shared/link.ts";
import { baseCommand, initConfig, runCommander } from "../server/cli.ts";
import denoJson from "../deno.json" with { type: "json" };

/**
 * What {@link parseClientArgs} decided. `text` has no trailing newline (print it with `console.log`).
 * `init` and `check` print `text` on stdout (exit 0); `error` is a usage or
 * validation error (exit 2), `failure` a runtime error such as a file that
 * exists or cannot be written (exit 1).
 */
export type ClientCliResult =
  | { kind: "run"; config: ClientConfig; configPath?: string; name?: string }
  | { kind: "init"; text: string; path?: string }
  | { kind: "check"; text: string; config: ClientConfig }
  | { kind: "help" | "version" | "error" | "failure"; text: string };

/** Subcommand names `ostp-client` recognises as its first argument. */
export const CLIENT_COMMANDS = ["init", "check"] as const;

const COMMANDS_HELP = `
Commands:
  init server|client [path] [--force]  write a commented config template (stdout without a path)
  check <config>                       validate a client config file
Run "ostp-client <command> --help" for a command's options.`;

interface ClientOptions {
  config?: string;
  server?: string;
  key?: string;
  listen?: string;
  mux?: string;
  keepalive?: string;
  idleTimeout?: string;
  username?: string;
  password?: string;
  logLevel?: string;
  logFormat?: string;
}

function buildProgram(output: { out: string; err: string }): Command {
  return baseCommand("ostp-client", output)
    .description("OSTP client: a local SOCKS5 and HTTP proxy that tunnels to an ostp server.")
    .version(denoJson.version, "-V, --version", "print the version")
    .usage("[options] [link]\n       ostp-client <command> [args]")
    .addHelpText("after", COMMANDS_HELP)
    .argument("[link]", "an ostp:// share link (all a client needs)")
    .option("-c, --config <file>", "config file (JSON with comments)")
    .option("-s, --server <host:port>", "server address")
    .option("-k, --key <key>", "access key (hex or base64url)")
    .option("-l, --listen <host:port>", "local SOCKS5/HTTP proxy address (default 127.0.0.1:1088)")
    .option("--mux <n>", "parallel sessions to the server (1..16)")
    .option("--keepalive <s>", "seconds between keepalives when idle")
    .option("--idle-timeout <s>", "seconds of silence before the server is declared dead")
    .option("--username <u>", "user name the local proxy requires")
    .option("--password <p>", "password the local proxy requires (visible to other local users)")
    .addOption(new Option("--log-level <lvl>", "log level").choices(LOG_LEVELS))
    .addOption(new Option("--log-format <fmt>", "log format").choices(LOG_FORMATS));
}

function errorResult(e: ConfigError | LinkError): ClientCliResult {
  return { kind: "error", text: `error: ${e.message}` };
}

/**
 * Parses the client's arguments (without the program name). Never prints or
 * exits: help, version and errors come back as text.
 */
export async function parseClientArgs(argv: string[]): Promise<ClientCliResult> {
  const r = await parse(argv);
  if ("text" in r) r.text = r.text.trimEnd();
  return r;
}

async function parse(argv: string[]): Promise<ClientCliResult> {
  if (argv[0] === "init") return await initConfig("ostp-client", argv.slice(1));
  if (argv[0] === "check") return await checkCommand(argv.slice(1));
  const output = { out: "", err: "" };
  const program = buildProgram(output);
  const early = await runCommander(program, argv, output);
  if (early) return early;
  const o = program.opts<ClientOptions>();
  const linkText = program.args[0] as string | undefined;

  let link: ShareLink | undefined;
  if (linkText !== undefined) {
    try {
      link = decodeShareLink(linkText);
    } catch (e) {
      if (e instanceof LinkError) {
        return errorResult(e);
      }
      throw e;
    }
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
  const merged: Record<string, unknown> = isPlainObject(raw) ? { ...raw } : {};
  const origins = new Map<string, string>(); // top-level field (or auth.x) → where it came from

  if (link) {
    merged.server = formatHostPort(link.server);
    merged.key = formatAccessKey(link.key, "hex");
    origins.set("server", "link").set("key", "link");
    if (link.mtu !== undefined) {
      merged.mtu = link.mtu;
      origins.set("mtu", "link");
    }
    if (link.mux !== undefined) {
      merged.mux = link.mux;
      origins.set("mux", "link");
    }
  }

  const issues: ConfigIssue[] = [];
  const flag = (field: string, name: string, value: unknown): void => {
    merged[field] = value;
    origins.set(field, name);
  };
  if (o.server !== undefined) flag("server", "--server", o.server);
  if (o.key !== undefined) flag("key", "--key", o.key);
  if (o.listen !== undefined) flag("listen", "--listen", o.listen);
  if (o.mux !== undefined) {
    if (/^\d+$/.test(o.mux.trim())) flag("mux", "--mux", Number(o.mux.trim()));
    else issues.push({ path: "--mux", message: "expected an integer" });
  }
  for (
    const [field, name, raw] of [
      ["keepalive", "--keepalive", o.keepalive],
      ["idleTimeout", "--idle-timeout", o.idleTimeout],
    ] as const
  ) {
    if (raw === undefined) continue;
    if (/^\d+(\.\d+)?$/.test(raw.trim())) flag(field, name, Number(raw.trim()));
    else issues.push({ path: name, message: "expected a number of seconds" });
  }
  if (o.username !== undefined || o.password !== undefined) {
    const auth = isPlainObject(merged.auth) ? { ...merged.auth } : {};
    if (o.username !== undefined) {
      auth.username = o.username;
      origins.set("auth.username", "--username");
    }
    if (o.password !== undefined) {
      auth.password = o.password;
      origins.set("auth.password", "--password");
    }
    if (auth.username === undefined) {
      issues.push({ path: "--password", message: "needs --username too" });
    }
    if (auth.password === undefined) {
      issues.push({ path: "--username", message: "needs --password too" });
    }
    merged.auth = auth;
  }
  if (o.logLevel !== undefined || o.logFormat !== undefined) {
    const log = isPlainObject(merged.log) ? { ...merged.log } : {};
    if (o.logLevel !== undefined) log.level = o.logLevel;
    if (o.logFormat !== undefined) log.format = o.logFormat;
    merged.log = log;
  }
  if (o.config === undefined && (merged.server === undefined || merged.key === undefined)) {
    // Nothing says where to connect: guide the user rather than list "required" fields.
    if (merged.server === undefined) {
      issues.push({
        path: "",
        message: "no server: pass an ostp:// share link, --server or a config file",
      });
    }
    if (merged.key === undefined) {
      issues.push({
        path: "",
        message: "no access key: pass an ostp:// share link, --key or a config file",
      });
    }
    return errorResult(new ConfigError(issues));
  }

  let config: ClientConfig | undefined;
  try {
    config = parseClientConfig(isPlainObject(raw) ? merged : raw, o.config);
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    for (const i of e.issues) {
      const where = origins.get(i.path) ?? origins.get(/^[^.[]+/.exec(i.path)?.[0] ?? "");
      issues.push(where ? { path: where, message: i.message } : i);
    }
  }
  if (!config || issues.length > 0) return errorResult(new ConfigError(issues, o.config));
  const result: ClientCliResult = { kind: "run", config };
  if (o.config !== undefined) result.configPath = o.config;
  if (link?.name !== undefined) result.name = link.name;
  return result;
}

/** `check <config>`: validates a client config file; errors never contain a value from it. */
async function checkCommand(argv: string[]): Promise<ClientCliResult> {
  const output = { out: "", err: "" };
  const cmd = baseCommand("ostp-client check", output)
    .description("Validate a client config file: prints ok, or one line per problem.")
    .argument("<config>", "client config file (JSON with comments)");
  const early = await runCommander(cmd, argv, output);
  if (early) return early;
  const path = cmd.args[0];
  try {
    const config = parseClientConfig(await readJsoncFile(path), path);
    return { kind: "check", text: "ok", config };
  } catch (e) {
    if (e instanceof ConfigError) return errorResult(e);
    throw e;
  }
}
