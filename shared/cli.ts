/**
 * Command-line pieces both daemons share: a commander program that reports
 * instead of printing or exiting, its early results (help, version, usage
 * error), and the `init` subcommand that writes a config template.
 * @module
 */

import { isAbsolute, join } from "node:path";
import { Argument, Command, CommanderError } from "commander";
import { serverConfigTemplate } from "./config/server_config.ts";
import { clientConfigTemplate } from "./config/client_config.ts";
import { programName } from "./program_name.ts";

/**
 * A commander program that reports through `output` instead of printing or
 * exiting (also used by `ostp-client`'s subcommands).
 */
export function baseCommand(name: string, output: { out: string; err: string }): Command {
  return new Command(name)
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
    .allowExcessArguments(false);
}

/**
 * Keeps `--help` to a screen: hides every option of `program` whose long
 * name is not in `essential` (unless `all`), and adds `--help-all`, which the
 * caller turns into a full `--help`.
 */
export function essentialHelp(
  program: Command,
  essential: ReadonlySet<string>,
  all: boolean,
): Command {
  if (!all) { for (const o of program.options) if (!essential.has(o.long ?? "")) o.hideHelp(); }
  return program.option("--help-all", "show every option");
}

/** The results every program can end with before doing anything. */
export type EarlyResult = { kind: "help" | "version" | "error"; text: string };

/**
 * Runs commander on `argv`; returns the help/version/usage-error result, or
 * undefined to go on (also used by `ostp-client`).
 */
export async function runCommander(
  program: Command,
  argv: string[],
  output: { out: string; err: string },
): Promise<EarlyResult | undefined> {
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
  return undefined;
}

/**
 * Writes `text` to `path`, refusing to replace an existing file unless
 * `force`. New files are created readable by the owner only (they hold keys).
 */
export async function writeConfigFile(
  path: string,
  text: string,
  force: boolean,
): Promise<{ ok: true } | { ok: false; kind: "error" | "failure"; text: string }> {
  try {
    await Deno.writeTextFile(path, text, { createNew: !force, mode: 0o600 });
    return { ok: true };
  } catch (e) {
    if (e instanceof Deno.errors.AlreadyExists) {
      return {
        ok: false,
        kind: "failure",
        text: `error: ${path} already exists (pass --force to overwrite it)`,
      };
    }
    const reason = e instanceof Deno.errors.PermissionDenied
      ? "permission denied"
      : e instanceof Deno.errors.NotFound
      ? "no such directory"
      : e instanceof Deno.errors.IsADirectory
      ? "is a directory"
      : (e as Error).message;
    return { ok: false, kind: "failure", text: `error: cannot write ${path}: ${reason}` };
  }
}

/** What `init` ends with. */
export type InitResult =
  | { kind: "init"; text: string; path?: string }
  | { kind: "help" | "version" | "error" | "failure"; text: string };

/** `init server|client [path] [--force]`, shared by both programs; `program` names the caller. */
export async function initConfig(program: string, argv: string[]): Promise<InitResult> {
  const output = { out: "", err: "" };
  const cmd = baseCommand(`${program} init`, output)
    .description(
      "Write a config template with every field, its default and a comment.\n" +
        "A server template holds a freshly generated key; a client template a placeholder key\n" +
        "to replace with the one the server gave you. Without a path it is printed.",
    )
    .addArgument(new Argument("<kind>", "which config").choices(["server", "client"]))
    .argument("[path]", "file to write (refused if it exists, unless --force)")
    .option("-f, --force", "overwrite an existing file");
  const early = await runCommander(cmd, argv, output);
  if (early) return early;
  const [kind, path] = cmd.args as ["server" | "client", string | undefined];
  const text = kind === "server" ? serverConfigTemplate() : clientConfigTemplate();
  if (path === undefined) return { kind: "init", text };
  const w = await writeConfigFile(path, text, cmd.opts<{ force?: boolean }>().force === true);
  if (!w.ok) return { kind: w.kind, text: w.text };
  return {
    kind: "init",
    path,
    // Each program checks its own kind of config, whichever program wrote it.
    text: `wrote ${path}\nvalidate it with: ${programName(kind)} check ${path}`,
  };
}

/** `path` made absolute against the working directory. */
export function absolutePath(path: string): string {
  return isAbsolute(path) ? path : join(Deno.cwd(), path);
}
