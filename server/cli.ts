/**
 * Command line of `ostp-server`: parses the arguments into a validated
 * {@link ServerConfig} (defaults < config file < `OSTP_KEY` < flags) without
 * exiting; the caller prints `text` and picks the exit code. Keys
 * add up from every source (`keys`, `keyFiles`, `OSTP_KEY`, `--key-file`,
 * `--key`); the only output of its own is a warning (through
 * {@link CliContext.warn}, stderr by default) for a key typed on the command
 * line or a key file other users can read.
 *
 * Besides running the server (`ostp-server --key-file … --listen …`), it has
 * subcommands: `init server|client [path]`, `check <config>`,
 * `genkey [--count N] [--format hex|base64url]` and
 * `links <config> [--public-address host:port] [--qr]`.
 * @module
 */

import { type Command, Option } from "commander";
import {
  absolutePath,
  baseCommand,
  essentialHelp,
  initConfig,
  runCommander,
} from "../shared/cli.ts";
import { formatAccessKey, generateAccessKey } from "../shared/crypto/keys.ts";
import {
  ConfigError,
  type ConfigIssue,
  formatHostPort,
  type HostPort,
  HostPortError,
  isPlainObject,
  isUnspecifiedHost,
  LOG_FORMATS,
  LOG_LEVELS,
  parseHostPort,
  readJsoncFile,
} from "../shared/config/types.ts";
import { parseServerConfig, type ServerConfig } from "../shared/config/server_config.ts";
import {
  type CliContext,
  cliContext,
  commandLineWarning,
  ENV_KEY,
  readConfigSecretFiles,
  readSecretFile,
  warnLooseFiles,
} from "../shared/config/secrets.ts";
import { programName, quietTaskHint } from "../shared/program_name.ts";
import { encodeShareLink, LinkError } from "../shared/link.ts";
import { statusCommand } from "../shared/control/status.ts";
import { terminalQr } from "../shared/qr.ts";
import { versionLine } from "../shared/version.ts";

/**
 * What {@link parseServerArgs} decided. `text` has no trailing newline (print it with `console.log`).
 *
 * - `run`: start the server.
 * - `generate-key`, `genkey`: keys to print on stdout (exit 0).
 * - `init`: the template to print (`path` absent) or the confirmation that it was written to `path`.
 * - `check`: the config is valid; `text` is `ok`.
 * - `links`: share links (and QR codes) to print on stdout; `warning` goes to stderr.
 * - `help`, `version`: print on stdout, exit 0.
 * - `error`: usage or validation error (stderr, exit 2).
 * - `failure`: runtime error such as a file that exists or cannot be written (stderr, exit 1).
 */
export type ServerCliResult =
  | { kind: "run"; config: ServerConfig; configPath?: string; printLinks?: boolean }
  | { kind: "generate-key"; text: string }
  | { kind: "genkey"; text: string; keys: Uint8Array[] }
  | { kind: "init"; text: string; path?: string }
  | { kind: "check"; text: string; config: ServerConfig }
  | { kind: "links"; text: string; links: string[]; warning?: string }
  | { kind: "status"; text: string; answer: Record<string, unknown> }
  | { kind: "help" | "version" | "error" | "failure"; text: string };

/** Subcommand names `ostp-server` recognises as its first argument. */
export const SERVER_COMMANDS = ["init", "check", "genkey", "links", "status"] as const;

/** Most keys `genkey --count` prints at once. */
export const MAX_GENKEY_COUNT = 1000;

/** How the user runs the server: `ostp-server`, or `deno task server` from the repository. */
const SERVER = programName("server");

/** Error text when the server would start without any access key. */
export const NO_KEY_MESSAGE = `no access key: pass --key-file <path>, set ${ENV_KEY}, or pass ` +
  `a config file (generate a key with: ${SERVER} genkey)`;

interface ServerOptions {
  config?: string;
  listen?: string[];
  key?: string[];
  keyFile?: string[];
  publicAddress?: string;
  maxSessions?: string;
  idleTimeout?: string;
  workers?: string;
  logLevel?: string;
  logFormat?: string;
  generateKey?: string | boolean;
  control?: string | false;
  printLinks?: boolean;
  egressAllow?: string[];
  egressDeny?: string[];
  faketcpListen?: string;
  uotListen?: string;
  tlsListen?: string;
  tlsCert?: string;
  tlsKey?: string;
  tlsFallback?: string;
  fecListen?: string;
  tcpUpstream?: string;
  udpUpstream?: string;
  allowInPorts?: string;
}

const collect = (v: string, prev: string[] = []): string[] => [...prev, v];

const COMMANDS_HELP = `
Commands:
  init server|client [path] [--force]  write a commented config template (stdout without a path)
  check <config>                       validate a server config file
  genkey [--count N] [--format hex|base64url]
                                       print fresh access keys, one per line
  links <config> [--public-address host:port] [--qr]
                                       print each key's ostp:// share link (and a QR code)
  status [--control <path>] [-c <config>] [--json]
                                       print the running server's counters (control socket)
Run "${SERVER} <command> --help" for a command's options.

Keep keys out of "ps": use --key-file, ${ENV_KEY} or keyFiles in a config file rather than --key.${
  quietTaskHint("server")
}`;

/** The options `--help` shows; `--help-all` shows every one. */
const ESSENTIAL_OPTIONS = new Set([
  "--version",
  "--config",
  "--listen",
  "--key-file",
  "--public-address",
  "--workers",
  "--log-level",
  "--faketcp-listen",
  "--tls-listen",
  "--tcp-upstream",
  "--allow-in-ports",
  "--help",
]);

function buildProgram(output: { out: string; err: string }, all = false): Command {
  return essentialHelp(buildAllOptions(output), ESSENTIAL_OPTIONS, all);
}

function buildAllOptions(output: { out: string; err: string }): Command {
  return baseCommand(SERVER, output)
    .description("OSTP server: accepts tunnel clients and relays their traffic to the internet.")
    .version(versionLine(SERVER), "-V, --version", "print the version, commit and target")
    .usage(`[options]\n       ${SERVER} <command> [args]`)
    .addHelpText("after", COMMANDS_HELP)
    .option("-c, --config <file>", "config file (JSON with comments)")
    .option(
      "-l, --listen <host:port>",
      "address to listen on; repeatable, replaces the file's list",
      collect,
    )
    .option(
      "--key-file <path>",
      `file of access keys, one per line ("#" comments); repeatable, added to the other keys`,
      collect,
    )
    .option(
      "-k, --key <key>",
      `access key (hex or base64url); repeatable, added to the others. Other local users can ` +
        `read it: prefer --key-file or ${ENV_KEY}`,
      collect,
    )
    .option("--public-address <host:port>", "address that share links advertise")
    .option(
      "--egress-allow <entry>",
      'let clients reach a range the egress policy refuses ("10.91.2.0/24", "127.0.0.1:8080", ' +
        '"[::1]:8000-8100"); repeatable, added to the file\'s egress.allow',
      collect,
    )
    .option(
      "--egress-deny <entry>",
      'refuse a range beyond the built-in list ("0.0.0.0/0:25"); repeatable, added to the ' +
        "file's egress.deny",
      collect,
    )
    .option("--max-sessions <n>", "most concurrent sessions")
    .option("--idle-timeout <s>", "seconds without traffic before a session is closed")
    .option(
      "--workers <n>",
      "worker threads running the sessions (default: one per core, at most 16; 1: all on " +
        "the main thread)",
    )
    .addOption(new Option("--log-level <lvl>", "log level").choices(LOG_LEVELS))
    .addOption(new Option("--log-format <fmt>", "log format").choices(LOG_FORMATS))
    .option(
      "--faketcp-listen <host:port>",
      "also accept clients over fake TCP here (raw sockets: root or CAP_NET_RAW; docs/carriers.md)",
    )
    .option("--uot-listen <host:port>", "also accept clients over UDP-over-TCP here")
    .option(
      "--fec-listen <host:port>",
      "also accept clients over UDP with forward error correction",
    )
    .option("--tls-listen <host:port>", "also accept clients over TLS here (with --tls-cert/-key)")
    .option("--tls-cert <file>", "the TLS listener's certificate chain (PEM)")
    .option("--tls-key <file>", "the TLS listener's private key (PEM)")
    .option(
      "--tls-fallback <host:port>",
      "the web server a TLS connection that is no client is handed to, byte for byte",
    )
    .option(
      "--tcp-upstream <host:port>",
      "where a client's OUT TCP mapping to ANY goes (docs/mappings.md)",
    )
    .option(
      "--udp-upstream <ip:port>",
      "where a client's OUT UDP mapping to ANY goes (an address)",
    )
    .option(
      "--allow-in-ports <list>",
      'ports clients\' IN mappings may open here, as "18080,20000-20100" (default none)',
    )
    .option("--generate-key [format]", 'print a fresh access key ("hex" or "base64url") and exit')
    .option("--control <path>", "control socket for `status` and `reload` (default: see README)")
    .option("--no-control", "run without a control socket")
    .option(
      "--print-links",
      "print the share links (keys included) at start even when stdout is not a terminal",
    );
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
 * Parses the server's arguments (without the program name). Never exits, and
 * prints nothing but warnings (to `ctx.warn`): help, version, key generation
 * and errors come back as text. `ctx.env` supplies `OSTP_KEY`.
 */
export async function parseServerArgs(
  argv: string[],
  ctx?: CliContext,
): Promise<ServerCliResult> {
  const r = await parse(argv, cliContext(ctx));
  if ("text" in r) r.text = r.text.trimEnd();
  return r;
}

async function parse(argv: string[], ctx: Required<CliContext>): Promise<ServerCliResult> {
  switch (argv[0]) {
    case "init":
      return await initCommand(argv.slice(1));
    case "check":
      return await checkCommand(argv.slice(1), ctx);
    case "genkey":
      return await genkeyCommand(argv.slice(1));
    case "links":
      return await linksCommand(argv.slice(1), ctx);
    case "status":
      return await statusCommand(argv.slice(1), {
        program: SERVER,
        daemon: "server",
        command: baseCommand,
        run: runCommander,
      });
  }
  const output = { out: "", err: "" };
  const all = argv.includes("--help-all");
  const program = buildProgram(output, all);
  const early = await runCommander(program, all ? ["--help"] : argv, output);
  if (early) return early;
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

  const envKeys = ctx.env(ENV_KEY)?.split(/[\s,]+/).filter((k) => k.length > 0) ?? [];
  if (o.config === undefined && !o.key?.length && !o.keyFile?.length && envKeys.length === 0) {
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
  const fileKeyFileCount = Array.isArray(merged.keyFiles) ? merged.keyFiles.length : 0;
  if (o.listen) merged.listen = o.listen;
  // Keys add up: the file's keys, OSTP_KEY, --key; the file's keyFiles, then --key-file.
  // A `keys`/`keyFiles` of the wrong type is left alone, for the validator to report.
  const extraKeys = [...envKeys, ...(o.key ?? [])];
  if (extraKeys.length > 0 && (merged.keys == null || Array.isArray(merged.keys))) {
    merged.keys = [...(merged.keys ?? []) as unknown[], ...extraKeys];
  }
  // Secret files are read before validation: the config's relative to its directory,
  // --key-file's relative to the working directory (keyed by absolute path, so never mixed up).
  const files = await readConfigSecretFiles(merged, "server", o.config);
  const flagFiles = (o.keyFile ?? []).map((p) => absolutePath(p));
  if (flagFiles.length > 0 && (merged.keyFiles == null || Array.isArray(merged.keyFiles))) {
    merged.keyFiles = [...(merged.keyFiles ?? []) as unknown[], ...flagFiles];
    for (const [i, p] of flagFiles.entries()) {
      if (!files.has(p)) files.set(p, await readSecretFile(o.keyFile![i]));
    }
  }
  if (o.publicAddress !== undefined) merged.publicAddress = o.publicAddress;
  if (o.control !== undefined) merged.control = o.control;
  // Egress entries add up too: the file's lists, then the flags (a list of the wrong type is
  // left alone for the validator).
  const fileEgress = { allow: 0, deny: 0 };
  if ((o.egressAllow?.length || o.egressDeny?.length) && (merged.egress ?? null) === null) {
    merged.egress = {};
  }
  if (isPlainObject(merged.egress)) {
    const egress: Record<string, unknown> = { ...merged.egress };
    for (const [list, flag] of [["allow", o.egressAllow], ["deny", o.egressDeny]] as const) {
      const have = egress[list];
      if (Array.isArray(have)) fileEgress[list] = have.length;
      if (flag?.length && (have === undefined || Array.isArray(have))) {
        egress[list] = [...(have ?? []) as unknown[], ...flag];
      }
    }
    merged.egress = egress;
  }
  if (o.tcpUpstream !== undefined) merged.tcpUpstream = o.tcpUpstream;
  if (o.udpUpstream !== undefined) merged.udpUpstream = o.udpUpstream;
  if (o.allowInPorts !== undefined) merged.allowInPorts = o.allowInPorts;
  // Carrier flags fill (or create) their config blocks.
  const carrierFlags: [string, string, string | undefined][] = [
    ["faketcp", "listen", o.faketcpListen],
    ["uot", "listen", o.uotListen],
    ["tls", "listen", o.tlsListen],
    ["tls", "cert", o.tlsCert === undefined ? undefined : absolutePath(o.tlsCert)],
    ["tls", "key", o.tlsKey === undefined ? undefined : absolutePath(o.tlsKey)],
    ["tls", "fallback", o.tlsFallback],
    ["fec", "listen", o.fecListen],
  ];
  for (const [block, field, value] of carrierFlags) {
    if (value === undefined) continue;
    const have = merged[block];
    if (have !== undefined && have !== null && !isPlainObject(have)) continue; // validator reports
    merged[block] = { ...(isPlainObject(have) ? have : {}), [field]: value };
  }
  // The TLS files of a config file are relative to its directory.
  if (o.config && isPlainObject(merged.tls)) {
    const dir = o.config.includes("/") ? o.config.slice(0, o.config.lastIndexOf("/") + 1) : "";
    const tls: Record<string, unknown> = { ...merged.tls };
    for (const f of ["cert", "key"]) {
      const v = tls[f];
      if (typeof v === "string" && !v.startsWith("/") && dir) tls[f] = dir + v;
    }
    merged.tls = tls;
  }
  const maxSessions = numberFlag(o.maxSessions, "--max-sessions", flagIssues);
  if (maxSessions !== undefined) merged.maxSessions = maxSessions;
  const idleTimeout = numberFlag(o.idleTimeout, "--idle-timeout", flagIssues);
  if (idleTimeout !== undefined) merged.idleTimeout = idleTimeout;
  const workers = numberFlag(o.workers, "--workers", flagIssues);
  if (workers !== undefined) merged.workers = workers;
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
    if (top === "control" && o.control !== undefined) return "--control";
    if (top === "maxSessions" && maxSessions !== undefined) return "--max-sessions";
    if (top === "idleTimeout" && idleTimeout !== undefined) return "--idle-timeout";
    if (top === "workers" && workers !== undefined) return "--workers";
    for (const [block, field, value] of carrierFlags) {
      if (value !== undefined && path === `${block}.${field}`) return `--${block}-${field}`;
    }
    const e = /^egress\.(allow|deny)\[(\d+)\]$/.exec(path);
    if (e) {
      const list = e[1] as "allow" | "deny";
      const given = (list === "allow" ? o.egressAllow : o.egressDeny) ?? [];
      const i = Number(e[2]) - fileEgress[list];
      if (i >= 0) return `--egress-${list}${given.length > 1 ? ` #${i + 1}` : ""}`;
    }
    const k = /^keys\[(\d+)\]$/.exec(path);
    if (k && Number(k[1]) >= fileKeyCount) {
      return Number(k[1]) < fileKeyCount + envKeys.length ? ENV_KEY : "--key";
    }
    const f = /^keyFiles\[(\d+)\]$/.exec(path);
    if (f && Number(f[1]) >= fileKeyFileCount) return "--key-file";
    return undefined;
  };
  const issues = [...flagIssues];
  let config: ServerConfig | undefined;
  try {
    config = parseServerConfig(isPlainObject(raw) ? merged : raw, o.config, files);
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    issues.push(...renameIssues(e.issues, origin));
  }
  if (!config || issues.length > 0) return errorResult(new ConfigError(issues, o.config));
  warnLooseFiles(files.values(), ctx.warn);
  const onCommandLine = commandLineWarning(
    o.key?.length
      ? [{ given: "--key", instead: `--key-file <path>, ${ENV_KEY} or keyFiles in a config file` }]
      : [],
  );
  if (onCommandLine) ctx.warn(onCommandLine);
  return { kind: "run", config, configPath: o.config, printLinks: o.printLinks === true };
}

// --- subcommands -------------------------------------------------------------

function initCommand(argv: string[]): Promise<ServerCliResult> {
  return initConfig(SERVER, argv);
}

/**
 * Reads and validates a server config file and its key files; the error text
 * never contains a value from them.
 */
async function loadConfig(
  path: string,
  ctx: Required<CliContext>,
): Promise<ServerConfig | ServerCliResult> {
  try {
    const raw = await readJsoncFile(path);
    const files = await readConfigSecretFiles(raw, "server", path);
    const config = parseServerConfig(raw, path, files);
    warnLooseFiles(files.values(), ctx.warn);
    return config;
  } catch (e) {
    if (e instanceof ConfigError) return errorResult(e);
    throw e;
  }
}

function isResult(v: ServerConfig | ServerCliResult): v is ServerCliResult {
  return "kind" in v;
}

async function checkCommand(argv: string[], ctx: Required<CliContext>): Promise<ServerCliResult> {
  const output = { out: "", err: "" };
  const cmd = baseCommand(`${SERVER} check`, output)
    .description("Validate a server config file: prints ok, or one line per problem.")
    .argument("<config>", "server config file (JSON with comments)");
  const early = await runCommander(cmd, argv, output);
  if (early) return early;
  const loaded = await loadConfig(cmd.args[0], ctx);
  if (isResult(loaded)) return loaded;
  return { kind: "check", text: "ok", config: loaded };
}

/** `genkey [--count N] [--format hex|base64url]`. */
async function genkeyCommand(argv: string[]): Promise<ServerCliResult> {
  const output = { out: "", err: "" };
  const cmd = baseCommand(`${SERVER} genkey`, output)
    .description("Print fresh random access keys, one per line.")
    .option("-n, --count <n>", `how many keys (1..${MAX_GENKEY_COUNT})`, "1")
    .addOption(
      new Option("--format <fmt>", "key encoding").choices(["hex", "base64url"]).default("hex"),
    );
  const early = await runCommander(cmd, argv, output);
  if (early) return early;
  const o = cmd.opts<{ count: string; format: "hex" | "base64url" }>();
  const count = /^\d{1,7}$/.test(o.count.trim()) ? Number(o.count.trim()) : NaN;
  if (!(count >= 1 && count <= MAX_GENKEY_COUNT)) {
    return {
      kind: "error",
      text: `error: --count: expected an integer from 1 to ${MAX_GENKEY_COUNT}`,
    };
  }
  const keys = Array.from({ length: count }, () => generateAccessKey());
  return {
    kind: "genkey",
    keys,
    text: keys.map((k) => formatAccessKey(k, o.format)).join("\n"),
  };
}

/** `links <config> [--public-address host:port] [--qr]`. */
async function linksCommand(argv: string[], ctx: Required<CliContext>): Promise<ServerCliResult> {
  const output = { out: "", err: "" };
  const cmd = baseCommand(`${SERVER} links`, output)
    .description(
      "Print the ostp:// share link of every key in a server config (they carry the keys:\n" +
        "treat them like passwords), optionally with a QR code for phones to scan.",
    )
    .argument("<config>", "server config file (JSON with comments)")
    .option("--public-address <host:port>", "address clients reach the server at")
    .option("--qr", "also print each link as a QR code");
  const early = await runCommander(cmd, argv, output);
  if (early) return early;
  const o = cmd.opts<{ publicAddress?: string; qr?: boolean }>();

  let override: HostPort | undefined;
  if (o.publicAddress !== undefined) {
    try {
      override = parseHostPort(o.publicAddress);
    } catch (e) {
      if (!(e instanceof HostPortError)) throw e;
      return { kind: "error", text: `error: --public-address: ${e.message}` };
    }
    if (override.port === 0 || isUnspecifiedHost(override.host)) {
      return {
        kind: "error",
        text: "error: --public-address: must be an address and port clients can connect to",
      };
    }
  }
  const loaded = await loadConfig(cmd.args[0], ctx);
  if (isResult(loaded)) return loaded;
  const config = loaded;

  let warning: string | undefined;
  let server = override ?? config.publicAddress;
  if (!server) {
    const first = config.listen[0];
    if (first.port === 0) {
      return {
        kind: "error",
        text: "error: the first listen address has port 0 (random): pass --public-address",
      };
    }
    server = first;
    if (isUnspecifiedHost(first.host)) {
      server = { host: "127.0.0.1", port: first.port };
      warning = `warning: ${formatHostPort(first)} is a wildcard address, so these links use ` +
        `${formatHostPort(server)}; clients elsewhere need --public-address (or publicAddress ` +
        `in the config)`;
    }
  }
  let links: string[];
  try {
    links = [
      ...config.keys.map((key) => encodeShareLink({ key, server, mtu: config.mtu })),
      ...config.users.map((u) =>
        encodeShareLink({ key: u.key, server, mtu: config.mtu, name: u.name })
      ),
    ];
  } catch (e) {
    if (e instanceof LinkError) return { kind: "error", text: `error: ${e.message}` };
    throw e;
  }
  const parts: string[] = [];
  for (const link of links) {
    parts.push(link);
    if (o.qr) parts.push(await terminalQr(link));
  }
  const result: ServerCliResult = { kind: "links", links, text: parts.join("\n") };
  if (warning) result.warning = warning;
  return result;
}
