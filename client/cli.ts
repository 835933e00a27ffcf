/**
 * Command line of `ostp-client`: parses the arguments into a validated
 * {@link ClientConfig} without exiting; the caller prints `text` and picks
 * the exit code. The only output of its own is a warning (through
 * {@link CliContext.warn}, stderr by default) for a secret typed on the
 * command line or kept in a file other users can read.
 *
 * Precedence: defaults < config file < environment (`OSTP_LINK` < `OSTP_KEY`,
 * `OSTP_PASSWORD`) < command line (share link or `--link-file` < flags). A
 * share link is all a client needs: `OSTP_LINK='ostp://KEY@host:8443' ostp-client`,
 * `ostp-client --link-file link.txt` or `ostp-client 'ostp://KEY@host:8443'`.
 *
 * Subcommands: `init server|client [path] [--force]` (a commented template),
 * `check <config>` (validate a client config file), `status` (the running
 * client's counters) and `route <host:port>` (which rule and outbound a flow
 * would take, without connecting).
 * @module
 */

import { type Command, Option } from "commander";
import { formatAccessKey } from "../shared/crypto/keys.ts";
import {
  ConfigError,
  type ConfigIssue,
  formatHostPort,
  type HostPort,
  HostPortError,
  isIPv4,
  isIPv6,
  isPlainObject,
  LOG_FORMATS,
  LOG_LEVELS,
  parseHostPort,
  readJsoncFile,
} from "../shared/config/types.ts";
import {
  CLIENT_INBOUNDS,
  type ClientConfig,
  parseClientConfig,
} from "../shared/config/client_config.ts";
import {
  type CliContext,
  cliContext,
  type CommandLineSecret,
  commandLineWarning,
  ENV_KEY,
  ENV_LINK,
  ENV_PASSWORD,
  ENV_TURN_PASSWORD,
  passwordFromFile,
  readConfigSecretFiles,
  readSecretFile,
  type SecretFile,
  singleSecretLine,
  warnLooseFiles,
} from "../shared/config/secrets.ts";
import { decodeShareLink, LinkError, type ShareLink } from "../shared/link.ts";
import { type StatusCliKit, statusCommand } from "../shared/control/status.ts";
import { programName, quietTaskHint } from "../shared/program_name.ts";
import {
  absolutePath,
  baseCommand,
  type EarlyResult,
  essentialHelp,
  initConfig,
  runCommander,
} from "../shared/cli.ts";
import { parseVpnArgs, type VpnCliResult } from "./vpn/vpn_cli.ts";
import { defaultStateDir } from "../shared/config/tun_config.ts";
import { lookup } from "node:dns/promises";
import {
  DEFAULT_OUTBOUND,
  parseRoutingConfig,
  ROUTING_FIELDS,
  type RoutingConfig,
} from "./router/config.ts";
import { explainRoute } from "./router/explain.ts";
import type { FlowContext } from "./router/flow.ts";
import { Router } from "./router/rules.ts";
import type { NameResolver } from "./router/router_outbound.ts";
import { parseIp } from "../shared/net/cidr.ts";
import { versionLine } from "../shared/version.ts";

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
  | { kind: "status"; text: string; answer: Record<string, unknown> }
  | { kind: "route"; text: string; outbound: string; rule: string }
  | { kind: "down"; text: string; stateDir: string }
  | Exclude<VpnCliResult, EarlyResult>
  | { kind: "help" | "version" | "error" | "failure"; text: string };

/** Subcommand names `ostp-client` recognises as its first argument. */
export const CLIENT_COMMANDS = [
  "init",
  "check",
  "status",
  "route",
  "down",
  "vpn",
  "nat-check",
] as const;

/** How the user runs the client: `ostp-client`, or `deno task client` from the repository. */
const CLIENT = programName("client");

const COMMANDS_HELP = `
Commands:
  init server|client [path] [--force]  write a commented config template (stdout without a path)
  check <config>                       validate a client config file
  status [--control <path>] [-c <config>] [--json]
                                       print the running client's counters (control socket)
  route <host:port> [--process NAME] [--udp] [-c <config>] [--inbound NAME]
                                       print which rule and outbound a flow would take
  down [--state-dir DIR]               undo the routes, rules and DNS a crashed --tun run left
  nat-check [host:port ...] [--json]  what kind of NAT this machine is behind (STUN)
  vpn [up|down|self-test] --proxy-url URL  all TCP through an HTTP CONNECT proxy, kill switch
Run "${CLIENT} <command> --help" for a command's options.

Keep secrets out of "ps": set ${ENV_LINK}, ${ENV_KEY} or ${ENV_PASSWORD}, or use --link-file,
--key-file or --password-file, rather than a link argument, --key or --password.${
  quietTaskHint("client")
}`;

interface ClientOptions {
  config?: string;
  server?: string;
  key?: string;
  keyFile?: string;
  linkFile?: string;
  listen?: string;
  mux?: string;
  keepalive?: string;
  idleTimeout?: string;
  username?: string;
  password?: string;
  passwordFile?: string;
  logLevel?: string;
  logFormat?: string;
  control?: string | false;
  tun?: boolean;
  tunName?: string;
  autoRoute?: boolean;
  stateDir?: string;
  dryRun?: boolean;
  l3?: boolean;
  l3DefaultRoute?: boolean;
  carrier?: string;
  tlsCa?: string;
  fec?: string;
  stun?: string[];
  tcpMappings?: string;
  udpMappings?: string;
  proxy?: boolean;
  heartbeatInterval?: string;
  heartbeatTimeout?: string;
  hopInterval?: string;
  systemProxy?: boolean;
  turn?: string;
  turnUser?: string;
  turnPasswordFile?: string;
}

/** The options `--help` shows; `--help-all` shows every one. */
const ESSENTIAL_OPTIONS = new Set([
  "--version",
  "--config",
  "--link-file",
  "--server",
  "--key-file",
  "--listen",
  "--mux",
  "--log-level",
  "--carrier",
  "--tun",
  "--l3",
  "--tcp-mappings",
  "--udp-mappings",
  "--system-proxy",
  "--turn",
  "--help",
]);

function buildProgram(output: { out: string; err: string }, all = false): Command {
  return essentialHelp(buildAllOptions(output), ESSENTIAL_OPTIONS, all);
}

function buildAllOptions(output: { out: string; err: string }): Command {
  return baseCommand(CLIENT, output)
    .description("OSTP client: a local SOCKS5 and HTTP proxy that tunnels to an ostp server.")
    .version(versionLine(CLIENT), "-V, --version", "print the version, commit and target")
    .usage(`[options] [link]\n       ${CLIENT} <command> [args]`)
    .addHelpText("after", COMMANDS_HELP)
    .argument("[link]", `an ostp:// share link (other local users can read it: prefer ${ENV_LINK})`)
    .option("-c, --config <file>", "config file (JSON with comments)")
    .option("--link-file <path>", "file holding the ostp:// share link")
    .option("-s, --server <host:port>", "server address")
    .option("--key-file <path>", "file holding the access key")
    .option("-k, --key <key>", `access key (hex or base64url; prefer --key-file or ${ENV_KEY})`)
    .option("-l, --listen <host:port>", "local SOCKS5/HTTP proxy address (default 127.0.0.1:1088)")
    .option("--mux <n>", "parallel sessions to the server (1..16)")
    .option("--keepalive <s>", "seconds between keepalives when idle")
    .option(
      "--idle-timeout <s>",
      "seconds of silence before a session is closed (a new handshake starts after ~1 s unanswered)",
    )
    .option("--username <u>", "user name the local proxy requires")
    .option("--password-file <path>", "file holding the password the local proxy requires")
    .option(
      "--password <p>",
      `password the local proxy requires (prefer --password-file or ${ENV_PASSWORD})`,
    )
    .addOption(new Option("--log-level <lvl>", "log level").choices(LOG_LEVELS))
    .addOption(new Option("--log-format <fmt>", "log format").choices(LOG_FORMATS))
    .option(
      "--control <path>",
      "control socket for `status`, `reload` and `hop` (default: see README)",
    )
    .option("--no-control", "run without a control socket")
    .option("--tun", "capture all traffic of the machine through a TUN device (root)")
    .option("--tun-name <name>", "name of the TUN device (default ostp0)")
    .option("--no-auto-route", "with --tun: do not route traffic into the TUN (only the device)")
    .option("--state-dir <dir>", "where the host-change journal lives (default /var/lib/ostp)")
    .option("--dry-run", "with --tun: print every host change it would make, change nothing")
    .option("--l3", "layer-3 VPN: a TUN with the address the server assigns (root; docs/l3.md)")
    .option("--l3-default-route", "with --l3: route everything into the tunnel too")
    .option(
      "--carrier <kind>",
      "how to reach the server: udp, turn, faketcp, uot, tls, or auto (udp, then faketcp, then tls)",
    )
    .option(
      "--fec <mode>",
      'forward error correction on UDP: "off", "auto" (follows the loss) or "data:parity" like 10:3',
    )
    .option(
      "--tls-ca <file>",
      "with the tls carrier: a CA certificate (PEM) to trust besides the system's",
    )
    .option(
      "--stun <host:port>",
      "a STUN server the session socket learns its public address from (repeatable)",
      (v: string, prev: string[] | undefined) => [...(prev ?? []), v],
    )
    .option(
      "--tcp-mappings <list>",
      "TCP port mappings, comma-separated MODE^[ip:]port^[ip:]port: OUT^local^target|ANY, " +
        "IN^local-target^server-listen (docs/mappings.md)",
    )
    .option("--udp-mappings <list>", "UDP port mappings, the same syntax")
    .option("--no-proxy", "run without the local SOCKS5/HTTP proxy (mappings only)")
    .option("--heartbeat-interval <s>", "seconds between heartbeats when idle (0: none)")
    .option(
      "--heartbeat-timeout <s>",
      "seconds without anything from the server before the session is closed (0: never)",
    )
    .option(
      "--hop-interval <s>",
      "move the sessions to a fresh UDP socket this often, no new handshake (0: never; ≥ 5)",
    )
    .option(
      "--system-proxy",
      "Windows: point the system proxy at this client while it runs, restored on exit",
    )
    .option("--turn <host:port>", "reach the server through this TURN relay (docs/nat.md)")
    .option("--turn-user <name>", "the TURN relay's user name")
    .option(
      "--turn-password-file <path>",
      `file holding the TURN relay's password (or set ${ENV_TURN_PASSWORD})`,
    );
}

function errorResult(e: ConfigError | LinkError): { kind: "error"; text: string } {
  return { kind: "error", text: `error: ${e.message}` };
}

/**
 * Parses the client's arguments (without the program name). Never exits, and
 * prints nothing but warnings (to `ctx.warn`): help, version and errors come
 * back as text. `ctx.env` supplies `OSTP_LINK`, `OSTP_KEY` and `OSTP_PASSWORD`.
 */
export async function parseClientArgs(
  argv: string[],
  ctx?: CliContext,
): Promise<ClientCliResult> {
  const r = await parse(argv, cliContext(ctx));
  if ("text" in r) r.text = r.text.trimEnd();
  return r;
}

async function parse(argv: string[], ctx: Required<CliContext>): Promise<ClientCliResult> {
  if (argv[0] === "init") return await initConfig(CLIENT, argv.slice(1));
  if (argv[0] === "check") return await checkCommand(argv.slice(1), ctx);
  if (argv[0] === "route") return await routeCommand(argv.slice(1));
  if (argv[0] === "down") return await downCommand(argv.slice(1));
  if (argv[0] === "vpn") return await parseVpnArgs(argv.slice(1), CLIENT, ctx.env);
  if (argv[0] === "nat-check") return await natCheckCommand(argv.slice(1));
  if (argv[0] === "status") {
    const kit: StatusCliKit = {
      program: CLIENT,
      daemon: "client",
      command: baseCommand,
      run: runCommander,
    };
    return await statusCommand(argv.slice(1), kit);
  }
  const output = { out: "", err: "" };
  const all = argv.includes("--help-all");
  const program = buildProgram(output, all);
  const early = await runCommander(program, all ? ["--help"] : argv, output);
  if (early) return early;
  const o = program.opts<ClientOptions>();
  const linkText = program.args[0] as string | undefined;

  const issues: ConfigIssue[] = [];
  const both = (a: string, b: string) => issues.push({ path: a, message: `give ${a} or ${b}` });
  if (o.key !== undefined && o.keyFile !== undefined) both("--key-file", "--key, not both");
  if (linkText !== undefined && o.linkFile !== undefined) {
    both("--link-file", "a share link argument, not both");
  }
  if (o.password !== undefined && o.passwordFile !== undefined) {
    both("--password-file", "--password, not both");
  }
  if (issues.length > 0) return errorResult(new ConfigError(issues));

  /** Secret files read for flags, for their mode warnings. */
  const flagFiles: SecretFile[] = [];
  /** The one entry of a file a flag names, or undefined after recording why not. */
  const flagFile = async (
    flag: string,
    path: string,
    read: (f: { path: string; text: string }) => { text: string } | { error: string },
  ): Promise<string | undefined> => {
    const f = await readSecretFile(path);
    flagFiles.push(f);
    const r = f.ok ? read(f) : { error: f.error };
    if ("text" in r) return r.text;
    issues.push({ path: flag, message: r.error });
    return undefined;
  };
  const decodeLink = (text: string, where: string): ShareLink | undefined => {
    try {
      return decodeShareLink(text);
    } catch (e) {
      if (!(e instanceof LinkError)) throw e;
      issues.push({ path: where, message: e.message });
      return undefined;
    }
  };

  // Share links: the command line's (argument or --link-file), and OSTP_LINK's below it.
  let link: ShareLink | undefined;
  let linkOrigin = "link";
  if (linkText !== undefined) {
    try {
      link = decodeShareLink(linkText);
    } catch (e) {
      if (e instanceof LinkError) {
        return errorResult(e);
      }
      throw e;
    }
  } else if (o.linkFile !== undefined) {
    linkOrigin = "--link-file";
    const text = await flagFile(
      "--link-file",
      o.linkFile,
      (f) => singleSecretLine(f, "share link"),
    );
    if (text !== undefined) link = decodeLink(text, "--link-file");
  }
  // A link on the command line replaces all that OSTP_LINK would give: it is not even read then.
  const envLinkText = linkText === undefined && o.linkFile === undefined
    ? ctx.env(ENV_LINK)
    : undefined;
  const envLink = envLinkText === undefined ? undefined : decodeLink(envLinkText, ENV_LINK);

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

  // Each layer replaces the key (and password) of the layers below, whichever form they used.
  let keyGiven = merged.key !== undefined || merged.keyFile !== undefined;
  const setKey = (value: unknown, origin: string): void => {
    merged.key = value;
    delete merged.keyFile;
    origins.set("key", origin);
    keyGiven = true;
  };
  const applyLink = (l: ShareLink, origin: string): void => {
    merged.server = formatHostPort(l.server);
    origins.set("server", origin);
    setKey(formatAccessKey(l.key, "hex"), origin);
    if (l.mtu !== undefined) {
      merged.mtu = l.mtu;
      origins.set("mtu", origin);
    }
    if (l.mux !== undefined) {
      merged.mux = l.mux;
      origins.set("mux", origin);
    }
    if (l.carrier !== undefined) {
      merged.carrier = l.carrier;
      origins.set("carrier", origin);
    }
    for (const k of ["faketcp", "uot"] as const) {
      if (l.ports?.[k] === undefined) continue;
      merged[k] = { ...(isPlainObject(merged[k]) ? merged[k] : {}), port: l.ports[k] };
      origins.set(k, origin);
    }
    if (l.ports?.fecport !== undefined) {
      merged.fecPort = l.ports.fecport;
      origins.set("fecPort", origin);
    }
    if (l.turn !== undefined) {
      merged.turn = {
        ...(isPlainObject(merged.turn) ? merged.turn : {}),
        server: formatHostPort(l.turn.server),
        ...(l.turn.username !== undefined ? { username: l.turn.username } : {}),
      };
    }
    if (l.ports?.tls !== undefined || l.sni !== undefined) {
      merged.tls = {
        ...(isPlainObject(merged.tls) ? merged.tls : {}),
        ...(l.ports?.tls !== undefined ? { port: l.ports.tls } : {}),
        ...(l.sni !== undefined ? { serverName: l.sni } : {}),
      };
      origins.set("tls", origin);
    }
  };
  let auth: Record<string, unknown> | undefined; // set once the environment or a flag touches it
  let passwordOrigin: string | undefined;
  const setPassword = (value: string, origin: string): void => {
    auth ??= isPlainObject(merged.auth) ? { ...merged.auth } : {};
    auth.password = value;
    delete auth.passwordFile;
    origins.set("auth.password", origin);
    passwordOrigin = origin;
  };

  // The environment: above the config file, below the command line.
  if (envLink) applyLink(envLink, ENV_LINK);
  const envKey = ctx.env(ENV_KEY);
  if (envKey !== undefined) setKey(envKey, ENV_KEY);
  const envPassword = ctx.env(ENV_PASSWORD);
  if (envPassword !== undefined) setPassword(envPassword, ENV_PASSWORD);

  // The command line: a share link, then flags.
  if (link) applyLink(link, linkOrigin);
  const flag = (field: string, name: string, value: unknown): void => {
    merged[field] = value;
    origins.set(field, name);
  };
  if (o.server !== undefined) flag("server", "--server", o.server);
  if (o.key !== undefined) setKey(o.key, "--key");
  if (o.keyFile !== undefined) {
    const text = await flagFile("--key-file", o.keyFile, (f) => singleSecretLine(f, "access key"));
    if (text !== undefined) setKey(text, "--key-file");
    keyGiven = true;
  }
  if (o.listen !== undefined) flag("listen", "--listen", o.listen);
  const tunFlags = o.tunName !== undefined || (o.stateDir !== undefined && !o.l3) ||
    program.getOptionValueSource("autoRoute") === "cli";
  if (o.tun || (tunFlags && merged.tun !== undefined && merged.tun !== false)) {
    const t = isPlainObject(merged.tun) ? { ...merged.tun } : {};
    if (o.tunName !== undefined) t.name = o.tunName;
    if (o.stateDir !== undefined) t.stateDir = o.stateDir;
    if (program.getOptionValueSource("autoRoute") === "cli") t.autoRoute = o.autoRoute;
    flag("tun", "--tun", t);
  } else if (tunFlags) {
    issues.push({
      path: "--tun",
      message: "--tun-name, --state-dir and --no-auto-route need --tun",
    });
  }
  if (o.l3 || o.l3DefaultRoute) {
    if (!o.l3 && (merged.l3 === undefined || merged.l3 === false)) {
      issues.push({ path: "--l3-default-route", message: "needs --l3" });
    } else {
      const l = isPlainObject(merged.l3) ? { ...merged.l3 } : {};
      if (o.l3DefaultRoute) l.defaultRoute = true;
      if (o.stateDir !== undefined && !o.tun) l.stateDir = o.stateDir;
      flag("l3", "--l3", l);
    }
  }
  if (o.control !== undefined) flag("control", "--control", o.control);
  if (o.carrier !== undefined) flag("carrier", "--carrier", o.carrier);
  if (o.fec !== undefined) flag("fec", "--fec", o.fec);
  if (o.tlsCa !== undefined) {
    flag("tls", "--tls-ca", {
      ...(isPlainObject(merged.tls) ? merged.tls : {}),
      ca: absolutePath(o.tlsCa),
    });
  }
  if (o.stun !== undefined) flag("stun", "--stun", o.stun);
  for (const [proto, list] of [["tcp", o.tcpMappings], ["udp", o.udpMappings]] as const) {
    if (list === undefined) continue;
    merged.mappings = { ...(isPlainObject(merged.mappings) ? merged.mappings : {}), [proto]: list };
    origins.set("mappings", `--${proto}-mappings`);
  }
  if (program.getOptionValueSource("proxy") === "cli") flag("proxy", "--no-proxy", o.proxy);
  if (o.systemProxy) flag("systemProxy", "--system-proxy", true);
  for (
    const [field, name, raw, replaces] of [
      ["heartbeatInterval", "--heartbeat-interval", o.heartbeatInterval, "keepalive"],
      ["heartbeatTimeout", "--heartbeat-timeout", o.heartbeatTimeout, "idleTimeout"],
      ["hopInterval", "--hop-interval", o.hopInterval, ""],
    ] as const
  ) {
    if (raw === undefined) continue;
    if (!/^\d+(\.\d+)?$/.test(raw.trim())) {
      issues.push({ path: name, message: "expected a number of seconds" });
      continue;
    }
    if (replaces) delete merged[replaces];
    flag(field, name, Number(raw.trim()));
  }
  {
    const envTurnPassword = ctx.env(ENV_TURN_PASSWORD);
    const touched = o.turn !== undefined || o.turnUser !== undefined ||
      o.turnPasswordFile !== undefined ||
      (envTurnPassword !== undefined && isPlainObject(merged.turn));
    if (touched) {
      const t: Record<string, unknown> = isPlainObject(merged.turn) ? { ...merged.turn } : {};
      if (o.turn !== undefined) t.server = o.turn;
      if (o.turnUser !== undefined) t.username = o.turnUser;
      if (envTurnPassword !== undefined) {
        t.password = envTurnPassword;
        delete t.passwordFile;
      }
      if (o.turnPasswordFile !== undefined) {
        const text = await flagFile("--turn-password-file", o.turnPasswordFile, passwordFromFile);
        if (text !== undefined) {
          t.password = text;
          delete t.passwordFile;
        }
      }
      // No origin: a problem is named by its field (turn.password), clearer than a flag.
      merged.turn = t;
    }
  }
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
  if (o.password !== undefined) setPassword(o.password, "--password");
  if (o.passwordFile !== undefined) {
    const text = await flagFile("--password-file", o.passwordFile, passwordFromFile);
    if (text !== undefined) setPassword(text, "--password-file");
    else passwordOrigin = "--password-file";
  }
  if (o.username !== undefined) {
    auth ??= isPlainObject(merged.auth) ? { ...merged.auth } : {};
    auth.username = o.username;
    origins.set("auth.username", "--username");
  }
  if (auth) {
    if (auth.username === undefined && passwordOrigin !== undefined) {
      issues.push({ path: passwordOrigin, message: "needs --username too" });
    }
    if (auth.password === undefined && auth.passwordFile === undefined && !passwordOrigin) {
      issues.push({
        path: "--username",
        message: `needs a password too (--password-file, ${ENV_PASSWORD} or --password)`,
      });
    }
    merged.auth = auth;
  }
  if (o.logLevel !== undefined || o.logFormat !== undefined) {
    const log = isPlainObject(merged.log) ? { ...merged.log } : {};
    if (o.logLevel !== undefined) log.level = o.logLevel;
    if (o.logFormat !== undefined) log.format = o.logFormat;
    merged.log = log;
  }
  // A link that could not be read or decoded is reported as such, not as a missing server or key.
  const linkTried = o.linkFile !== undefined || envLinkText !== undefined;
  if (o.config === undefined && (merged.server === undefined || !keyGiven)) {
    // Nothing says where to connect: guide the user rather than list "required" fields.
    if (merged.server === undefined && !linkTried) {
      issues.push({
        path: "",
        message: `no server: pass an ostp:// share link (${ENV_LINK}, --link-file or an ` +
          "argument), --server or a config file",
      });
    }
    if (!keyGiven && !linkTried) {
      issues.push({
        path: "",
        message: `no access key: pass --key-file, ${ENV_KEY}, an ostp:// share link or a ` +
          "config file",
      });
    }
    return errorResult(new ConfigError(issues));
  }

  // The files the config names (keyFile, auth.passwordFile), unless a higher layer replaced them.
  const files = await readConfigSecretFiles(merged, "client", o.config);
  let config: ClientConfig | undefined;
  try {
    config = parseClientConfig(isPlainObject(raw) ? merged : raw, o.config, files);
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    for (const i of e.issues) {
      const where = origins.get(i.path) ?? origins.get(/^[^.[]+/.exec(i.path)?.[0] ?? "");
      issues.push(where ? { path: where, message: i.message } : i);
    }
  }
  if (!config || issues.length > 0) return errorResult(new ConfigError(issues, o.config));

  warnLooseFiles([...flagFiles, ...files.values()], ctx.warn);
  const typed: CommandLineSecret[] = [];
  if (linkText !== undefined) {
    typed.push({ given: "the share link", instead: `--link-file <path> or ${ENV_LINK}` });
  }
  if (o.key !== undefined) {
    typed.push({ given: "--key", instead: `--key-file <path> or ${ENV_KEY}` });
  }
  if (o.password !== undefined) {
    typed.push({ given: "--password", instead: `--password-file <path> or ${ENV_PASSWORD}` });
  }
  const warning = commandLineWarning(typed);
  if (warning) ctx.warn(warning);

  if (o.dryRun) {
    if (!config.tun) {
      return errorResult(new ConfigError([{ path: "--dry-run", message: "needs --tun" }]));
    }
    const { tunDryRun } = await import("./tun/tun_mode.ts");
    const servers = [config.server.host];
    const lines = tunDryRun(config.tun, { servers, excludeCidrs: [] });
    return {
      kind: "help",
      text: ["dry run: these changes would be made, none was:", ...lines].join("\n"),
    };
  }
  const result: ClientCliResult = { kind: "run", config };
  if (o.config !== undefined) result.configPath = o.config;
  const name = (link ?? envLink)?.name;
  if (name !== undefined) result.name = name;
  return result;
}

/**
 * `nat-check [host:port ...] [-c <config>] [--json]`: the NAT type, by the
 * STUN servers named (or the config's `stun`); see client/nat/nat_check.ts.
 */
async function natCheckCommand(argv: string[]): Promise<ClientCliResult> {
  const output = { out: "", err: "" };
  const cmd = baseCommand(`${CLIENT} nat-check`, output)
    .description(
      "Tell what kind of NAT this machine is behind (RFC 5780 mapping and filtering).\n" +
        "Give one STUN server with two addresses (coturn on two IPs) or two plain ones.",
    )
    .argument("[servers...]", "STUN servers, host:port (port 3478 when left out)")
    .option("-c, --config <file>", 'client config file whose "stun" servers to use')
    .option("--json", "print the report as JSON");
  const early = await runCommander(cmd, argv, output);
  if (early) return early;
  const o = cmd.opts<{ config?: string; json?: boolean }>();
  const { parseStunServer } = await import("../shared/config/nat_config.ts");
  const issues: ConfigIssue[] = [];
  const servers: HostPort[] = [];
  for (const [i, a] of (cmd.args as string[]).entries()) {
    try {
      servers.push(parseStunServer(a));
    } catch (e) {
      if (!(e instanceof HostPortError)) throw e;
      issues.push({ path: `servers[${i}]`, message: e.message });
    }
  }
  if (servers.length === 0 && o.config !== undefined) {
    try {
      const raw = await readJsoncFile(o.config);
      const files = await readConfigSecretFiles(raw, "client", o.config);
      servers.push(...(parseClientConfig(raw, o.config, files).nat?.stun ?? []));
    } catch (e) {
      if (e instanceof ConfigError) return errorResult(e);
      throw e;
    }
  }
  if (issues.length === 0 && servers.length === 0) {
    issues.push({ path: "", message: 'name a STUN server (host:port), or a config with "stun"' });
  }
  if (issues.length > 0) return errorResult(new ConfigError(issues));
  const addrs: Deno.NetAddr[] = [];
  for (const s of servers.slice(0, 2)) {
    try {
      const address = isIPv4(s.host) || isIPv6(s.host) ? s.host : (await lookup(s.host)).address;
      addrs.push({ transport: "udp", hostname: address, port: s.port });
    } catch (e) {
      return {
        kind: "failure",
        text: `error: ${s.host} does not resolve: ${(e as Error).message}`,
      };
    }
  }
  const { natCheck, formatNatReport } = await import("./nat/nat_check.ts");
  const report = await natCheck({ servers: addrs });
  const text = o.json ? JSON.stringify(report, null, 2) : formatNatReport(report);
  return { kind: report.reachable ? "help" : "failure", text };
}

/**
 * `check <config>`: validates a client config file and the files it names;
 * errors never contain a value from them.
 */
async function checkCommand(argv: string[], ctx: Required<CliContext>): Promise<ClientCliResult> {
  const output = { out: "", err: "" };
  const cmd = baseCommand(`${CLIENT} check`, output)
    .description("Validate a client config file: prints ok, or one line per problem.")
    .argument("<config>", "client config file (JSON with comments)");
  const early = await runCommander(cmd, argv, output);
  if (early) return early;
  const path = cmd.args[0];
  try {
    const raw = await readJsoncFile(path);
    const files = await readConfigSecretFiles(raw, "client", path);
    const config = parseClientConfig(raw, path, files);
    warnLooseFiles(files.values(), ctx.warn);
    return { kind: "check", text: "ok", config };
  } catch (e) {
    if (e instanceof ConfigError) return errorResult(e);
    throw e;
  }
}

const systemResolve: NameResolver = async (name) => (await lookup(name)).address;

/**
 * `route <host:port> [--process NAME] [--udp] [-c <config>] [--inbound NAME]`:
 * decides a flow on the config's rules (none without `-c`: the default
 * outbound) and explains the answer ({@link explainRoute}). Never connects and
 * counts no hit; a host name is resolved (with `resolveName`, the system
 * resolver by default) only when the config says `"resolve": "onDemand"` and an
 * IP rule could change the answer, as the running client would.
 */
export async function routeCommand(
  argv: string[],
  resolveName: NameResolver = systemResolve,
): Promise<Exclude<ClientCliResult, { kind: "run" }>> {
  const output = { out: "", err: "" };
  const cmd = baseCommand(`${CLIENT} route`, output)
    .description(
      "Print which rule a flow matches and which outbound it would take, without connecting.\n" +
        'A name is resolved only under "resolve": "onDemand", when the client would resolve it.',
    )
    .argument("<host:port>", "the flow's target: a name or an IP address (IPv6 in brackets)")
    .option("-c, --config <file>", "client config file with the rules (default: no rules)")
    .option("--process <name>", "the application's executable file name (curl, steam.exe)")
    .option("--udp", "a UDP flow (default: TCP)")
    .option("--inbound <name>", "the inbound the flow comes in on", "proxy");
  const early = await runCommander(cmd, argv, output);
  if (early) return early;
  const o = cmd.opts<{ config?: string; process?: string; udp?: boolean; inbound: string }>();
  const issues: ConfigIssue[] = [];
  let target: HostPort | undefined;
  try {
    target = parseHostPort(cmd.args[0]);
    if (target.port === 0) issues.push({ path: "<host:port>", message: "port 0" });
  } catch (e) {
    if (!(e instanceof HostPortError)) throw e;
    issues.push({ path: "<host:port>", message: e.message });
  }
  if (!(CLIENT_INBOUNDS as readonly string[]).includes(o.inbound)) {
    issues.push({
      path: "--inbound",
      message: `no inbound has this name (the inbounds: ${CLIENT_INBOUNDS.join(", ")})`,
    });
  }
  if (o.process !== undefined && (o.process.length === 0 || /[/\\]/.test(o.process))) {
    issues.push({ path: "--process", message: "give the executable's file name, no directory" });
  }
  if (issues.length > 0 || !target) return errorResult(new ConfigError(issues));
  let routing: RoutingConfig;
  if (o.config === undefined) {
    routing = parseRoutingConfig({});
  } else {
    try {
      const raw = await readJsoncFile(o.config);
      const fields: Record<string, unknown> = {};
      if (isPlainObject(raw)) {
        for (const f of ROUTING_FIELDS) if (raw[f] !== undefined) fields[f] = raw[f];
      }
      routing = parseRoutingConfig(fields, { inbounds: CLIENT_INBOUNDS }, o.config);
    } catch (e) {
      if (e instanceof ConfigError) return errorResult(e);
      throw e;
    }
  }
  const router = new Router(routing);
  const ctx: FlowContext = { inbound: o.inbound, network: o.udp ? "udp" : "tcp", target };
  if (o.process !== undefined) ctx.process = o.process;
  let { decision, lines } = explainRoute(router, ctx);
  if (decision.needsIp && router.resolve === "onDemand") {
    let ip: Uint8Array | null = null;
    let text = "";
    try {
      text = await resolveName(target.host);
      ip = parseIp(text);
    } catch {
      ip = null;
    }
    if (ip === null) {
      lines.push('  the name does not resolve here ("resolve": "onDemand"): this answer stands');
    } else {
      lines.push(`  resolved here ("resolve": "onDemand") to ${text}; decided again:`);
      const again = explainRoute(router, { ...ctx, ip });
      decision = again.decision;
      lines = [...lines, ...again.lines.slice(1)];
    }
  }
  if (o.config === undefined) {
    lines.push(`  (no config file: no rules, every flow takes "${DEFAULT_OUTBOUND}"; pass -c)`);
  }
  return {
    kind: "route",
    text: lines.join("\n"),
    outbound: decision.outbound,
    rule: router.label(decision.rule),
  };
}

/**
 * `down [--state-dir DIR]`: undoes the host changes (routes, rules, DNS) that
 * a TUN run which did not exit cleanly left behind (its journal).
 */
async function downCommand(argv: string[]): Promise<ClientCliResult> {
  const output = { out: "", err: "" };
  const cmd = baseCommand(`${CLIENT} down`, output)
    .description(
      "Undo the host changes a crashed run left behind: routes, rules and DNS of --tun, and on " +
        "Windows the system proxy.",
    )
    .option("--state-dir <dir>", "where the journal lives (default /var/lib/ostp)");
  const early = await runCommander(cmd, argv, output);
  if (early) return early;
  const o = cmd.opts<{ stateDir?: string }>();
  return { kind: "down", text: "", stateDir: o.stateDir ?? defaultStateDir() };
}
