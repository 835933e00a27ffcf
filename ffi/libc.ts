/**
 * The few libc calls the project needs through Deno FFI (Linux): open, close,
 * ioctl, read, write, and errno. Loaded lazily so nothing opens libc unless a
 * feature needs it.
 * @module
 */

const SYMBOLS = {
  open: { parameters: ["buffer", "i32"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
  ioctl: { parameters: ["i32", "u64", "buffer"], result: "i32" },
  read: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  read_blocking: {
    name: "read",
    parameters: ["i32", "buffer", "usize"],
    result: "isize",
    nonblocking: true,
  },
  write: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  __errno_location: { parameters: [], result: "pointer" },
  strerror: { parameters: ["i32"], result: "pointer" },
} as const satisfies Deno.ForeignLibraryInterface;

/** The loaded library's symbols. */
export type Libc = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];

let lib: Deno.DynamicLibrary<typeof SYMBOLS> | null = null;

/** Opens libc on first use (Linux only). */
export function libc(): Libc {
  if (Deno.build.os !== "linux") throw new Error("libc FFI is only wired for Linux");
  lib ??= Deno.dlopen("libc.so.6", SYMBOLS);
  return lib.symbols;
}

/** The calling thread's errno (valid right after a failed synchronous call). */
export function errno(): number {
  const p = libc().__errno_location();
  if (!p) return 0;
  return new Deno.UnsafePointerView(p).getInt32();
}

/** A libc call failed; `code` is errno. */
export class OsError extends Error {
  constructor(readonly call: string, readonly code: number) {
    const s = libc().strerror(code);
    super(`${call}: ${s ? Deno.UnsafePointerView.getCString(s) : "errno " + code}`);
    this.name = "OsError";
  }
}

/** NUL-terminated bytes of `s`, for path arguments. */
export function cString(s: string): Uint8Array<ArrayBuffer> {
  const b = new TextEncoder().encode(s);
  const out = new Uint8Array(b.length + 1);
  out.set(b);
  return out;
}

/** open(2) flags used here. */
export const O_RDWR = 2;
/** close-on-exec. */
export const O_CLOEXEC = 0o2000000;
