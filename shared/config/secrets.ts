/**
 * Secrets kept off the command line: access keys, share links and proxy
 * passwords read from files (`--key-file`, `keyFile`, `keyFiles`,
 * `--link-file`, `--password-file`, `auth.passwordFile`) or from the
 * environment (`OSTP_KEY`, `OSTP_LINK`, `OSTP_PASSWORD`), and the warnings for
 * a secret typed on the command line or kept in a file other users can read.
 *
 * A secret file is read whole (at most {@link MAX_SECRET_FILE_BYTES}), must be
 * UTF-8 and is trimmed at the end. Key and link files hold one entry per line;
 * blank lines and lines starting with `#` are skipped. No message ever contains
 * what a file or variable holds: only its path or name.
 * @module
 */

import { dirname, isAbsolute, join } from "node:path";
import { type ConfigIssue, type ObjectReader, readErrorReason, typeName } from "./types.ts";

/** Environment variable with the access key (the server's: one or more, space- or comma-separated). */
export const ENV_KEY = "OSTP_KEY";
/** Environment variable with the client's `ostp://` share link. */
export const ENV_LINK = "OSTP_LINK";
/** Environment variable with the password the client's local proxy requires. */
export const ENV_PASSWORD = "OSTP_PASSWORD";
/** Environment variable with the TURN relay's password. */
export const ENV_TURN_PASSWORD = "OSTP_TURN_PASSWORD";

/** Largest secret file read, in bytes (a server key file may hold thousands of keys). */
export const MAX_SECRET_FILE_BYTES = 1 << 20;

/** What reading one secret file gave: its text, or why it could not be used. */
export type SecretFile =
  | {
    ok: true;
    /** The path read (relative paths of a config resolved against its directory). */
    path: string;
    /** The content, UTF-8 decoded, trailing whitespace removed; never empty. */
    text: string;
    /** Set when other users may read the file (mode & 0o077 on Unix). */
    warning?: string;
  }
  | {
    ok: false;
    /** The path tried. */
    path: string;
    /** What went wrong, naming the path (`cannot read /x: file not found`). */
    error: string;
  };

/** The secret files a config names, read ahead of validation, by the path as written. */
export type SecretFiles = ReadonlyMap<string, SecretFile>;

/**
 * Reads a secret file. Never throws for a file that cannot be used: the result
 * says why, naming `path` and never the content.
 */
export async function readSecretFile(path: string): Promise<SecretFile> {
  let bytes: Uint8Array | null;
  try {
    bytes = await readAtMost(path, MAX_SECRET_FILE_BYTES);
  } catch (e) {
    return { ok: false, path, error: `cannot read ${path}: ${readErrorReason(e)}` };
  }
  if (bytes === null) {
    return { ok: false, path, error: `${path} is larger than ${MAX_SECRET_FILE_BYTES} bytes` };
  }
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes).trimEnd();
  } catch {
    return { ok: false, path, error: `${path} is not valid UTF-8` };
  }
  if (text.length === 0) return { ok: false, path, error: `${path} is empty` };
  const out: SecretFile = { ok: true, path, text };
  const warning = await looseModeWarning(path);
  if (warning) out.warning = warning;
  return out;
}

/**
 * Reads at most `max` bytes of a file (or a pipe such as `/dev/fd/N`);
 * null if there is more, so `/dev/zero` or a huge file cannot exhaust memory.
 */
async function readAtMost(path: string, max: number): Promise<Uint8Array | null> {
  const f = await Deno.open(path, { read: true });
  try {
    const buf = new Uint8Array(max + 1);
    let n = 0;
    while (n < buf.length) {
      const r = await f.read(buf.subarray(n));
      if (r === null) break;
      n += r;
    }
    return n > max ? null : buf.subarray(0, n);
  } finally {
    f.close();
  }
}

/**
 * The warning for a secret file that its group or other users may access
 * (mode & 0o077, as ssh checks private keys), or undefined. Always undefined
 * where files have no Unix mode (Windows).
 */
export async function looseModeWarning(path: string): Promise<string | undefined> {
  let mode: number | null;
  try {
    mode = (await Deno.stat(path)).mode;
  } catch {
    return undefined;
  }
  if (mode === null || (mode & 0o077) === 0) return undefined;
  const octal = (mode & 0o777).toString(8).padStart(4, "0");
  return `warning: ${path} holds a secret and other users may read it (mode ${octal}); ` +
    `make it private with: chmod 600 ${path}`;
}

/** One entry of a key or link file: its text, trimmed, and its 1-based line number. */
export interface SecretLine {
  /** 1-based line number in the file. */
  line: number;
  /** The line without surrounding whitespace. */
  text: string;
}

/** The entries of a key or link file: one per line; blank lines and `#` comments skipped. */
export function secretLines(text: string): SecretLine[] {
  const out: SecretLine[] = [];
  text.split(/\r?\n/).forEach((raw, i) => {
    const t = raw.trim();
    if (t.length > 0 && !t.startsWith("#")) out.push({ line: i + 1, text: t });
  });
  return out;
}

/**
 * The one entry of a single-secret file (a client's key file, a link file),
 * or an error message naming the file: it holds none or more than one.
 */
export function singleSecretLine(
  file: { path: string; text: string },
  what: string,
): { text: string } | { error: string } {
  const lines = secretLines(file.text);
  if (lines.length === 0) return { error: `${file.path} holds no ${what}` };
  if (lines.length > 1) {
    return { error: `${file.path} holds ${lines.length} lines; expected one ${what}` };
  }
  return { text: lines[0].text };
}

/**
 * A password file's content: the whole file without its trailing newline, or
 * an error message if it spans several lines.
 */
export function passwordFromFile(file: { path: string; text: string }): { text: string } | {
  error: string;
} {
  if (/[\r\n]/.test(file.text)) return { error: `${file.path} holds more than one line` };
  return { text: file.text };
}

/** A path from a config file: relative paths are relative to the config file's directory. */
export function resolveConfigPath(path: string, configPath?: string): string {
  if (configPath === undefined || isAbsolute(path)) return path;
  return join(dirname(configPath), path);
}

/**
 * Reads, ahead of validation, the secret files a raw config names: `keyFile`
 * and `auth.passwordFile` of a client's, `keyFiles` of a server's. Values of
 * the wrong type are skipped here and reported by the validator.
 */
export async function readConfigSecretFiles(
  raw: unknown,
  daemon: "server" | "client",
  configPath?: string,
): Promise<Map<string, SecretFile>> {
  const paths: string[] = [];
  if (typeof raw === "object" && raw !== null && !Array.isArray(raw)) {
    const r = raw as Record<string, unknown>;
    if (daemon === "client") {
      if (typeof r.keyFile === "string") paths.push(r.keyFile);
      const auth = r.auth;
      if (typeof auth === "object" && auth !== null && !Array.isArray(auth)) {
        const pf = (auth as Record<string, unknown>).passwordFile;
        if (typeof pf === "string") paths.push(pf);
      }
      const turn = r.turn;
      if (typeof turn === "object" && turn !== null && !Array.isArray(turn)) {
        const pf = (turn as Record<string, unknown>).passwordFile;
        if (typeof pf === "string") paths.push(pf);
      }
    } else if (Array.isArray(r.keyFiles)) {
      for (const p of r.keyFiles) if (typeof p === "string") paths.push(p);
    }
  }
  const out = new Map<string, SecretFile>();
  for (const p of paths) {
    if (p.length === 0 || p.includes("\0") || out.has(p)) continue;
    out.set(p, await readSecretFile(resolveConfigPath(p, configPath)));
  }
  return out;
}

/**
 * Looks up the secret file named by the string field `field` of `r` in
 * `files`, recording an issue (and returning undefined) if the field is not
 * a path, the file was not read ahead, or it cannot be used.
 */
export function secretFileField(
  r: ObjectReader,
  field: string,
  files: SecretFiles | undefined,
): (SecretFile & { ok: true }) | undefined {
  return secretFileAt(r.get(field), r.at(field), r.issues, files);
}

/**
 * Like {@link secretFileField} for a value found at `path` (such as an entry
 * of `keyFiles`).
 */
export function secretFileAt(
  v: unknown,
  path: string,
  issues: ConfigIssue[],
  files: SecretFiles | undefined,
): (SecretFile & { ok: true }) | undefined {
  if (typeof v !== "string" || v.length === 0 || v.includes("\0")) {
    const got = typeof v === "string" ? "" : `, got ${typeName(v)}`;
    issues.push({ path, message: `expected a file path${got}` });
    return undefined;
  }
  const f = files?.get(v);
  if (!f) {
    issues.push({
      path,
      message: "the file was not read (load the config with loadClientConfig or loadServerConfig)",
    });
    return undefined;
  }
  if (!f.ok) {
    issues.push({ path, message: f.error });
    return undefined;
  }
  return f;
}

/** Sends the warning of every file that other users may read to `warn`. */
export function warnLooseFiles(files: Iterable<SecretFile>, warn: (line: string) => void): void {
  for (const f of files) if (f.ok && f.warning) warn(f.warning);
}

/** Where command-line parsing reads the environment and sends warnings; tests replace both. */
export interface CliContext {
  /** Reads an environment variable; default: the process environment, if readable. */
  env?: (name: string) => string | undefined;
  /** Receives each warning line; default: stderr, each distinct line once per process. */
  warn?: (line: string) => void;
}

/**
 * Reads an environment variable without prompting: undefined when unset,
 * empty, or when env access is not granted.
 */
export function processEnv(name: string): string | undefined {
  try {
    if (Deno.permissions.querySync({ name: "env", variable: name }).state !== "granted") {
      return undefined;
    }
    const v = Deno.env.get(name);
    return v === undefined || v.length === 0 ? undefined : v;
  } catch {
    return undefined;
  }
}

const warned = new Set<string>();

/** Writes `line` to stderr unless this process already wrote the same line (reloads re-parse). */
export function warnOnce(line: string): void {
  if (warned.has(line)) return;
  warned.add(line);
  console.error(line);
}

/** The context with its defaults filled in; empty environment values read as unset. */
export function cliContext(ctx: CliContext = {}): Required<CliContext> {
  const env = ctx.env;
  return {
    env: env
      ? (name) => {
        const v = env(name);
        return v === undefined || v.length === 0 ? undefined : v;
      }
      : processEnv,
    warn: ctx.warn ?? warnOnce,
  };
}

/** A secret given on the command line and the safer ways to give it. */
export interface CommandLineSecret {
  /** How it was given, e.g. `--key` or `the share link`. */
  given: string;
  /** The safer forms, e.g. `--key-file <path> or OSTP_KEY`. */
  instead: string;
}

/**
 * The one warning line for secrets given on the command line (visible to
 * every local user in `ps`, kept in shell history, echoed by `deno task`),
 * or undefined when there are none.
 */
export function commandLineWarning(secrets: CommandLineSecret[]): string | undefined {
  if (secrets.length === 0) return undefined;
  const given = secrets.map((s) => s.given).join(" and ");
  const instead = secrets.map((s) => s.instead).join("; ");
  const [is, it] = secrets.length > 1 ? ["are", "them"] : ["is", "it"];
  return `warning: ${given} ${is} on the command line, where other local users can read ${it} ` +
    `(ps) and shell history keeps ${it}. Use instead: ${instead}`;
}
