/**
 * `/proc` through libc (Linux), for the process lookup: Deno 2 lets its file API read `/proc`
 * only under `--allow-all` (`--allow-read` is not enough), while `--allow-ffi`, which the client
 * daemon has, reaches libc directly. `LibcProcFs` implements the resolver's `ProcFs` with
 * `open`/`read`/`close`, `readlink` and `getdents64` (`opendir`/`readdir64` on a libc older than
 * glibc 2.30, which lacks `getdents64`).
 *
 * Table reads (`ProcFs.open` + `read`) run on a worker thread (`nonblocking` symbols): printing
 * `/proc/net/tcp` on a busy host takes the kernel tens of milliseconds. The other calls are
 * synchronous, as the seam is: a directory listing, a link or a small file takes microseconds.
 *
 * Errors follow the seam's contract: ENOENT, ESRCH, EACCES and EPERM (the path vanished, or is
 * another user's process; Deno's API maps the last two to one `PermissionDenied` kind, which
 * `denoProcFs` also skips) answer `null`; any other errno throws a `ProcFsError`.
 * @module
 */

import type { ProcFile, ProcFs } from "../client/router/process_linux.ts";

const O_RDONLY = 0;
const O_CLOEXEC = 0o2000000;

/** Operation not permitted. (These errno values are the same on x86-64 and arm64 Linux.) */
export const EPERM = 1;
/** No such file or directory. */
export const ENOENT = 2;
/** No such process (a `/proc/PID` whose process exited while open). */
export const ESRCH = 3;
/** Interrupted system call: retried. */
export const EINTR = 4;
/** Permission denied. */
export const EACCES = 13;
/** Not a directory. */
export const ENOTDIR = 20;
/** Is a directory. */
export const EISDIR = 21;
/** Invalid argument (`readlink` of something that is not a link). */
export const EINVAL = 22;

/** The errno values that mean "gone, or not ours to read": the methods answer `null`. */
export const SKIPPED_ERRNOS: ReadonlySet<number> = new Set([ENOENT, ESRCH, EACCES, EPERM]);

const SYMBOLS = {
  open: { parameters: ["buffer", "i32"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
  read: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  read_async: {
    name: "read",
    parameters: ["i32", "buffer", "usize"],
    result: "isize",
    nonblocking: true,
  },
  readlink: { parameters: ["buffer", "buffer", "usize"], result: "isize" },
  getdents64: { parameters: ["i32", "buffer", "usize"], result: "isize", optional: true },
  opendir: { parameters: ["buffer"], result: "pointer" },
  readdir64: { parameters: ["pointer"], result: "pointer" },
  closedir: { parameters: ["pointer"], result: "i32" },
  __errno_location: { parameters: [], result: "pointer" },
  strerror: { parameters: ["i32"], result: "pointer" },
} as const satisfies Deno.ForeignLibraryInterface;

type Symbols = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];

let lib: Deno.DynamicLibrary<typeof SYMBOLS> | null = null;

function sym(): Symbols {
  if (Deno.build.os !== "linux") throw new Error("procfs FFI is Linux only");
  lib ??= Deno.dlopen("libc.so.6", SYMBOLS);
  return lib.symbols;
}

/** The calling thread's errno; only meaningful right after a failed synchronous call. */
function errno(): number {
  const p = sym().__errno_location();
  return p ? new Deno.UnsafePointerView(p).getInt32() : 0;
}

function clearErrno(): void {
  const p = sym().__errno_location();
  if (p) new Int32Array(Deno.UnsafePointerView.getArrayBuffer(p, 4))[0] = 0;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const HOST_LE = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** NUL-terminated bytes of a path; `null` if it holds a NUL (no such file can exist). */
function cPath(path: string): Uint8Array<ArrayBuffer> | null {
  if (path.includes("\0")) return null;
  const b = encoder.encode(path);
  const out = new Uint8Array(b.length + 1);
  out.set(b);
  return out;
}

/** A libc call on a `/proc` path failed with an errno the resolver does not skip. */
export class ProcFsError extends Error {
  /** `call` is the libc function, `code` its errno. */
  constructor(readonly call: string, readonly path: string, readonly code: number) {
    const s = sym().strerror(code);
    const text = s ? Deno.UnsafePointerView.getCString(s) : "unknown error";
    super(`process lookup: ${call} ${path}: ${text} (errno ${code})`);
    this.name = "ProcFsError";
  }
}

/** `null` for a skipped errno, else throws. */
function fail(call: string, path: string, code: number): null {
  if (SKIPPED_ERRNOS.has(code)) return null;
  throw new ProcFsError(call, path, code);
}

/** Runs a synchronous call that answers -1 and sets errno, retrying on EINTR. */
function retry(f: () => number): { r: number; code: number } {
  for (;;) {
    const r = f();
    if (r >= 0) return { r, code: 0 };
    const code = errno();
    if (code !== EINTR) return { r, code };
  }
}

function openFd(path: string): number | null {
  const c = cPath(path);
  if (!c) return null;
  const s = sym();
  const { r, code } = retry(() => s.open(c, O_RDONLY | O_CLOEXEC));
  return r < 0 ? fail("open", path, code) : r;
}

/** Options of `LibcProcFs`. */
export interface LibcProcFsOptions {
  /**
   * List directories with `opendir`/`readdir64` (one call per entry) instead of `getdents64`
   * (one call per 32 KiB of entries). Automatic when libc has no `getdents64`.
   */
  useReaddir?: boolean;
}

const DIRENT_BUF = 32 * 1024;
const LINK_BUF = 1024;
const LINK_MAX = 64 * 1024;
const TEXT_CHUNK = 16 * 1024;

/**
 * `ProcFs` over libc. Opens libc on construction (throws where `Deno.dlopen` may not, or off
 * Linux). An instance's scratch buffers serve its synchronous methods; `open` files have their
 * own descriptor and read into the caller's buffer.
 */
export class LibcProcFs implements ProcFs {
  readonly #s: Symbols;
  readonly #readdir: boolean;
  readonly #dents = new Uint8Array(DIRENT_BUF);
  readonly #dentsView = new DataView(this.#dents.buffer);
  #link = new Uint8Array(LINK_BUF);
  readonly #chunk = new Uint8Array(TEXT_CHUNK);

  /** Loads libc (once per process). */
  constructor(options: LibcProcFsOptions = {}) {
    this.#s = sym();
    this.#readdir = options.useReaddir === true || this.#s.getdents64 === null;
  }

  /** Whether directories are listed with `readdir64` (see `LibcProcFsOptions.useReaddir`). */
  get usesReaddir(): boolean {
    return this.#readdir;
  }

  /** Opens `path` read-only; reads run on a worker thread. `null` if skipped (see module). */
  open(path: string): Promise<ProcFile | null> {
    try {
      const fd = openFd(path);
      return Promise.resolve(fd === null ? null : new LibcProcFile(this.#s, fd, path));
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** Entry names of a directory, without `.` and `..`. */
  readDir(path: string): string[] | null {
    return this.#readdir ? this.#readDirStream(path) : this.#readDirDents(path);
  }

  #readDirDents(path: string): string[] | null {
    const fd = openFd(path);
    if (fd === null) return null;
    const s = this.#s;
    const getdents = s.getdents64!;
    const buf = this.#dents;
    const v = this.#dentsView;
    const out: string[] = [];
    try {
      for (;;) {
        const { r, code } = retry(() => Number(getdents(fd, buf, BigInt(buf.length))));
        if (r < 0) return fail("getdents64", path, code);
        if (r === 0) return out;
        // struct linux_dirent64: d_ino u64, d_off i64, d_reclen u16, d_type u8, d_name[].
        for (let off = 0; off + 19 < r;) {
          const reclen = v.getUint16(off + 16, HOST_LE);
          if (reclen === 0) break;
          const start = off + 19;
          let end = start;
          const limit = Math.min(off + reclen, r);
          while (end < limit && buf[end] !== 0) end++;
          pushName(out, buf.subarray(start, end));
          off += reclen;
        }
      }
    } finally {
      s.close(fd);
    }
  }

  #readDirStream(path: string): string[] | null {
    const c = cPath(path);
    if (!c) return null;
    const s = this.#s;
    let dir: Deno.PointerValue = null;
    for (;;) {
      dir = s.opendir(c);
      if (dir !== null) break;
      const code = errno();
      if (code !== EINTR) return fail("opendir", path, code);
    }
    const out: string[] = [];
    try {
      for (;;) {
        clearErrno();
        const ent = s.readdir64(dir);
        if (ent === null) {
          const code = errno();
          return code === 0 ? out : fail("readdir64", path, code);
        }
        // struct dirent64 as glibc lays it out: the name starts at byte 19.
        const name = Deno.UnsafePointerView.getCString(ent, 19);
        if (name !== "." && name !== "..") out.push(name);
      }
    } finally {
      s.closedir(dir);
    }
  }

  /** A symbolic link's target (any length up to 64 KiB). */
  readLink(path: string): string | null {
    const c = cPath(path);
    if (!c) return null;
    const s = this.#s;
    for (;;) {
      const buf = this.#link;
      const { r, code } = retry(() => Number(s.readlink(c, buf, BigInt(buf.length))));
      if (r < 0) return fail("readlink", path, code);
      // A full buffer may hold a cut target: grow and ask again.
      if (r < buf.length || buf.length >= LINK_MAX) return decoder.decode(buf.subarray(0, r));
      this.#link = new Uint8Array(buf.length * 4);
    }
  }

  /** A file's whole contents as UTF-8 (synchronous: meant for `comm` and the like). */
  readText(path: string): string | null {
    const fd = openFd(path);
    if (fd === null) return null;
    const s = this.#s;
    const chunk = this.#chunk;
    const parts: Uint8Array[] = [];
    let total = 0;
    try {
      for (;;) {
        const { r, code } = retry(() => Number(s.read(fd, chunk, BigInt(chunk.length))));
        // ESRCH here: the process exited after the open.
        if (r < 0) return fail("read", path, code);
        if (r === 0) break;
        parts.push(chunk.slice(0, r));
        total += r;
      }
    } finally {
      s.close(fd);
    }
    if (parts.length === 1) return decoder.decode(parts[0]);
    const all = new Uint8Array(total);
    let at = 0;
    for (const p of parts) {
      all.set(p, at);
      at += p.length;
    }
    return decoder.decode(all);
  }
}

function pushName(out: string[], name: Uint8Array): void {
  if (name.length === 1 && name[0] === 46) return; // "."
  if (name.length === 2 && name[0] === 46 && name[1] === 46) return; // ".."
  out.push(decoder.decode(name));
}

/**
 * An open `/proc` file. `read` runs `read(2)` on a worker thread; errno lives on that thread, so
 * a failed read is repeated once synchronously to learn it (failures are rare: ESRCH when the
 * process behind a `/proc/PID` file exited, which reads as the end). `close` waits for a read in
 * flight, so the descriptor cannot be reused under it.
 */
class LibcProcFile implements ProcFile {
  #fd: number;
  #closing = false;
  #inFlight: Promise<unknown> | null = null;

  constructor(readonly s: Symbols, fd: number, readonly path: string) {
    this.#fd = fd;
  }

  read(buf: Uint8Array): Promise<number | null> {
    if (this.#fd < 0 || this.#closing) return Promise.reject(new Error(`${this.path}: closed`));
    if (this.#inFlight) {
      return Promise.reject(new Error(`${this.path}: a read is already in progress`));
    }
    const p = this.#read(buf as Uint8Array<ArrayBuffer>);
    const flight = p.finally(() => {
      this.#inFlight = null;
      if (this.#closing) this.#release();
    });
    this.#inFlight = flight.catch(() => {});
    return flight;
  }

  async #read(buf: Uint8Array<ArrayBuffer>): Promise<number | null> {
    const fd = this.#fd;
    let r = Number(await this.s.read_async(fd, buf, BigInt(buf.length)));
    if (r < 0) {
      const again = retry(() => Number(this.s.read(fd, buf, BigInt(buf.length))));
      if (again.r < 0) return fail("read", this.path, again.code);
      r = again.r;
    }
    return r === 0 ? null : r;
  }

  close(): void {
    if (this.#fd < 0 || this.#closing) return;
    this.#closing = true;
    if (!this.#inFlight) this.#release();
  }

  #release(): void {
    if (this.#fd < 0) return;
    this.s.close(this.#fd);
    this.#fd = -1;
  }
}

let shared: LibcProcFs | null = null;

/** The process-wide `LibcProcFs` (created, and libc opened, on the first call). */
export function libcProcFs(): LibcProcFs {
  shared ??= new LibcProcFs();
  return shared;
}
