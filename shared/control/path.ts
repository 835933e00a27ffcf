/**
 * Where the local control socket of a daemon lives. Default, per daemon
 * (`server.sock` / `client.sock`):
 *
 * 1. `$XDG_RUNTIME_DIR/ostp/` when that variable holds an absolute path;
 * 2. `/run/ostp/` when running as root (`/var/run/ostp/` on macOS);
 * 3. otherwise `<temp dir>/ostp-<uid>/` (`$TMPDIR`, else `/tmp`).
 *
 * The `control` config field or `--control <path>` replaces it; `false`
 * (`--no-control`) turns the socket off. Windows has none.
 * @module
 */

/** Which daemon a control socket belongs to. */
export type DaemonKind = "server" | "client";

/** The configured control setting: a path, `false` (off), or absent (the default path). */
export type ControlSetting = string | false | undefined;

/** A directory the control socket may not be placed in; the message says why. */
export class ControlPathError extends Error {
  /** Creates the error. */
  constructor(message: string) {
    super(message);
    this.name = "ControlPathError";
  }
}

function env(name: string): string | undefined {
  if (Deno.permissions.querySync({ name: "env", variable: name }).state !== "granted") {
    return undefined;
  }
  const v = Deno.env.get(name);
  return v ? v : undefined;
}

function uid(): number | null {
  if (Deno.permissions.querySync({ name: "sys", kind: "uid" }).state !== "granted") return null;
  return Deno.uid();
}

/**
 * The default socket path of `daemon` (see the module doc), or `null` where
 * there is none (Windows, or the user id is not readable without `--allow-sys`).
 */
export function defaultControlPath(daemon: DaemonKind): string | null {
  if (Deno.build.os === "windows") return null;
  const file = `${daemon}.sock`;
  const xdg = env("XDG_RUNTIME_DIR");
  if (xdg?.startsWith("/")) return `${xdg.replace(/\/+$/, "")}/ostp/${file}`;
  const id = uid();
  if (id === null) return null;
  if (id === 0) return `${Deno.build.os === "darwin" ? "/var/run" : "/run"}/ostp/${file}`;
  const tmp = env("TMPDIR")?.replace(/\/+$/, "") || "/tmp";
  return `${tmp}/ostp-${id}/${file}`;
}

/** The socket path a setting means, or `null` for none (off, or no default here). */
export function resolveControlPath(setting: ControlSetting, daemon: DaemonKind): string | null {
  if (setting === false) return null;
  if (Deno.build.os === "windows") return null;
  return setting ?? defaultControlPath(daemon);
}

/** The directory part of `path` (`.` when it has none). */
export function parentDir(path: string): string {
  const i = path.lastIndexOf("/");
  return i < 0 ? "." : i === 0 ? "/" : path.slice(0, i);
}

/**
 * Makes sure `dir` exists and is safe for a socket: created with mode 0700 if
 * missing; if it exists, it must be a directory owned by this user or root and
 * not writable by others (unless sticky, like /tmp), so nobody else can
 * replace the socket.
 * @returns whether the directory was created.
 * @throws {ControlPathError} when it is not safe or cannot be created.
 */
export async function ensureSocketDir(dir: string): Promise<boolean> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(dir);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) {
      throw new ControlPathError(`cannot use ${dir}: ${(e as Error).message}`);
    }
    try {
      await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
      await Deno.chmod(dir, 0o700);
    } catch (e) {
      throw new ControlPathError(`cannot create ${dir}: ${(e as Error).message}`);
    }
    return true;
  }
  if (!info.isDirectory) throw new ControlPathError(`${dir} is not a directory`);
  const me = uid();
  if (info.uid !== null && me !== null && info.uid !== me && info.uid !== 0) {
    throw new ControlPathError(`${dir} belongs to another user`);
  }
  const mode = info.mode ?? 0;
  if ((mode & 0o022) !== 0 && (mode & 0o1000) === 0) {
    throw new ControlPathError(`${dir} is writable by other users`);
  }
  return false;
}
