/**
 * The daemons' local control socket: a Unix socket (mode 0600) on which one
 * JSON request line (`{"cmd":"status"}`) gets one JSON answer line
 * (`{"ok":true,…}` or `{"ok":false,"error":"…"}`), then the connection closes.
 * Requests are bounded ({@link MAX_REQUEST_BYTES}, {@link REQUEST_TIMEOUT_MS}),
 * and so is writing the answer (the same timeout: a peer that never reads
 * does not hold one of the {@link MAX_CONNECTIONS} slots); bad input gets an
 * error answer or a closed connection, never a crash.
 * @module
 */

import { getLog } from "../log.ts";
import {
  ControlPathError,
  type ControlSetting,
  type DaemonKind,
  ensureSocketDir,
  parentDir,
  resolveControlPath,
} from "./path.ts";

const log = getLog("control");

/** Longest request line accepted, bytes (newline included). */
export const MAX_REQUEST_BYTES = 4096;
/**
 * A connection that has not sent a full line by then is closed; so is one
 * whose answer could not be written in that time (the peer does not read).
 */
export const REQUEST_TIMEOUT_MS = 5000;
/** Connections served at once; more are closed right away. */
export const MAX_CONNECTIONS = 16;

/** A parsed request: `cmd` plus whatever else the object held. */
export interface ControlRequest {
  /** The command name. */
  cmd: string;
  [field: string]: unknown;
}

/** What a command handler answers (merged into `{"ok":true}`). */
export type ControlAnswer = Record<string, unknown>;

/** Handles one command; throw {@link ControlCommandError} for an error answer. */
export type ControlHandler = (req: ControlRequest) => ControlAnswer | Promise<ControlAnswer>;

/** A command failed; its message becomes the answer's `error`. */
export class ControlCommandError extends Error {
  /** Creates the error. */
  constructor(message: string) {
    super(message);
    this.name = "ControlCommandError";
  }
}

/** Why {@link ControlServer.open} did not open a socket. */
export type ControlOpenFailure =
  /** Another process answers on the path. */
  | { reason: "busy"; message: string }
  /** The path or its directory cannot be used. */
  | { reason: "unusable"; message: string };

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Encodes one answer line. */
export function answerLine(answer: Record<string, unknown>): Uint8Array {
  return encoder.encode(JSON.stringify(answer) + "\n");
}

/**
 * Turns a request line (without its newline) into the answer object. Never
 * throws: malformed JSON, a non-object, a missing `cmd`, an unknown command and
 * a failing handler all give `{"ok":false,"error":…}`. Unexpected handler
 * errors are logged and answered with a generic message.
 */
export async function answerRequest(
  line: string,
  commands: Readonly<Record<string, ControlHandler>>,
): Promise<Record<string, unknown>> {
  let req: unknown;
  try {
    req = JSON.parse(line);
  } catch {
    return { ok: false, error: "request is not valid JSON" };
  }
  if (typeof req !== "object" || req === null || Array.isArray(req)) {
    return { ok: false, error: 'request must be a JSON object such as {"cmd":"status"}' };
  }
  const cmd = (req as Record<string, unknown>).cmd;
  if (typeof cmd !== "string") return { ok: false, error: '"cmd" must be a string' };
  const known = Object.keys(commands);
  if (!Object.hasOwn(commands, cmd)) {
    return { ok: false, error: `unknown command (known: ${known.join(", ")})` };
  }
  try {
    return { ...(await commands[cmd](req as ControlRequest)), ok: true };
  } catch (e) {
    if (e instanceof ControlCommandError) return { ok: false, error: e.message };
    log.error("control command {cmd} failed: {error}", { cmd, error: String(e) });
    return { ok: false, error: "internal error" };
  }
}

/**
 * Reads bytes from `conn` until a newline (or the end of what the peer sent);
 * `"too-long"` past {@link MAX_REQUEST_BYTES}; `null` when nothing came before
 * the peer closed or the timeout passed.
 */
async function readRequestLine(
  conn: Deno.Conn,
  timeoutMs: number,
): Promise<string | "too-long" | null> {
  const buf = new Uint8Array(MAX_REQUEST_BYTES);
  let len = 0;
  const timer = setTimeout(() => {
    try {
      conn.close();
    } catch {
      // already closed
    }
  }, timeoutMs);
  try {
    while (len < buf.length) {
      const n = await conn.read(buf.subarray(len));
      if (n === null) return len > 0 ? decoder.decode(buf.subarray(0, len)) : null;
      const nl = buf.subarray(len, len + n).indexOf(10);
      len += n;
      if (nl >= 0) {
        const end = len - n + nl;
        return decoder.decode(buf.subarray(0, end));
      }
    }
    return "too-long";
  } catch {
    return null; // reset by the peer, or closed by the timeout
  } finally {
    clearTimeout(timer);
  }
}

/** Whether something accepts connections on the Unix socket `path`. */
async function answers(path: string): Promise<boolean> {
  try {
    const c = await Deno.connect({ transport: "unix", path });
    c.close();
    return true;
  } catch {
    return false;
  }
}

/** Binds `path` with a umask that leaves it 0600 from the start, where permitted. */
function bind(path: string): Deno.UnixListener {
  const canUmask = Deno.permissions.querySync({ name: "sys", kind: "umask" }).state === "granted";
  const old = canUmask ? Deno.umask(0o177) : null;
  try {
    return Deno.listen({ transport: "unix", path });
  } finally {
    if (old !== null) Deno.umask(old);
  }
}

/** A listening control socket; {@link close} it on exit (it removes the file). */
export class ControlServer {
  readonly #listener: Deno.UnixListener;
  readonly #commands: Readonly<Record<string, ControlHandler>>;
  readonly #conns = new Set<Deno.Conn>();
  readonly #timeoutMs: number;
  readonly #inode: number | null;
  #loop: Promise<void>;
  #closed = false;

  private constructor(
    readonly path: string,
    listener: Deno.UnixListener,
    commands: Readonly<Record<string, ControlHandler>>,
    timeoutMs: number,
    inode: number | null,
  ) {
    this.#inode = inode;
    this.#listener = listener;
    this.#commands = commands;
    this.#timeoutMs = timeoutMs;
    this.#loop = this.#acceptLoop();
  }

  /**
   * Opens the socket at `path` (its directory created 0700 if missing). A
   * stale socket file nobody answers on is replaced; if another process
   * answers, or the path is not usable, nothing is opened and the failure says
   * why (the daemon then runs without a control socket).
   */
  static async open(
    path: string,
    commands: Readonly<Record<string, ControlHandler>>,
    options: { timeoutMs?: number } = {},
  ): Promise<ControlServer | ControlOpenFailure> {
    try {
      await ensureSocketDir(parentDir(path));
    } catch (e) {
      if (e instanceof ControlPathError) return { reason: "unusable", message: e.message };
      throw e;
    }
    let existing: Deno.FileInfo | null = null;
    try {
      existing = await Deno.lstat(path);
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) {
        return { reason: "unusable", message: `cannot use ${path}: ${(e as Error).message}` };
      }
    }
    if (existing) {
      if (!existing.isSocket) {
        return { reason: "unusable", message: `${path} exists and is not a socket` };
      }
      if (await answers(path)) {
        return { reason: "busy", message: `another process answers on ${path}` };
      }
      try {
        await Deno.remove(path);
      } catch (e) {
        if (!(e instanceof Deno.errors.NotFound)) {
          return {
            reason: "unusable",
            message: `cannot remove the stale ${path}: ${(e as Error).message}`,
          };
        }
      }
    }
    let listener: Deno.UnixListener;
    try {
      listener = bind(path);
    } catch (e) {
      return { reason: "unusable", message: `cannot listen on ${path}: ${(e as Error).message}` };
    }
    let inode: number | null;
    try {
      await Deno.chmod(path, 0o600);
      inode = (await Deno.lstat(path)).ino;
    } catch (e) {
      listener.close();
      return { reason: "unusable", message: `cannot secure ${path}: ${(e as Error).message}` };
    }
    const timeoutMs = options.timeoutMs ?? REQUEST_TIMEOUT_MS;
    return new ControlServer(path, listener, commands, timeoutMs, inode);
  }

  async #acceptLoop(): Promise<void> {
    try {
      for await (const conn of this.#listener) {
        if (this.#conns.size >= MAX_CONNECTIONS) {
          conn.close();
          continue;
        }
        this.#conns.add(conn);
        this.#serve(conn).finally(() => this.#conns.delete(conn));
      }
    } catch (e) {
      if (!this.#closed) log.warn("control socket stopped: {error}", { error: String(e) });
    }
  }

  async #serve(conn: Deno.Conn): Promise<void> {
    const line = await readRequestLine(conn, this.#timeoutMs);
    try {
      if (line === "too-long") {
        await writeAll(
          conn,
          answerLine({ ok: false, error: `request longer than ${MAX_REQUEST_BYTES} bytes` }),
          this.#timeoutMs,
        );
      } else if (line !== null) {
        const answer = answerLine(await answerRequest(line.trim(), this.#commands));
        await writeAll(conn, answer, this.#timeoutMs);
      }
    } catch {
      // the peer went away, or did not read the answer in time (closed by writeAll)
    } finally {
      try {
        conn.close();
      } catch {
        // already closed
      }
    }
  }

  /** Stops accepting, closes open connections and removes the socket file. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#listener.close();
    } catch {
      // already closed
    }
    for (const c of this.#conns) {
      try {
        c.close();
      } catch {
        // already closed
      }
    }
    await this.#loop;
    try {
      // Only our own socket file: another daemon may have taken the path since.
      if ((await Deno.lstat(this.path)).ino === this.#inode) await Deno.remove(this.path);
    } catch {
      // Deno removed it with the listener, or someone else did
    }
  }
}

/** Writes all of `data`, or closes `conn` (the pending write then rejects) after `timeoutMs`. */
async function writeAll(conn: Deno.Conn, data: Uint8Array, timeoutMs: number): Promise<void> {
  const timer = setTimeout(() => {
    try {
      conn.close();
    } catch {
      // already closed
    }
  }, timeoutMs);
  try {
    let off = 0;
    while (off < data.length) off += await conn.write(data.subarray(off));
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Opens a daemon's control socket as configured (`setting`: path, `false`,
 * or absent for the default), logging where it listens, or a warning and
 * `null` when it cannot (the daemon then runs without one).
 */
export async function openDaemonControl(
  setting: ControlSetting,
  daemon: DaemonKind,
  commands: Readonly<Record<string, ControlHandler>>,
): Promise<ControlServer | null> {
  const path = resolveControlPath(setting, daemon);
  if (path === null) {
    if (setting === undefined && Deno.build.os !== "windows") {
      log.warn(
        "running without a control socket: no default path without --allow-sys (the user " +
          "id); pass --control <path>",
      );
    }
    return null;
  }
  const opened = await ControlServer.open(path, commands);
  if (opened instanceof ControlServer) {
    log.info("control socket on {path}", { path });
    return opened;
  }
  log.warn("running without a control socket: {reason}", { reason: opened.message });
  return null;
}
