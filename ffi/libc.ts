/**
 * The few libc calls the project needs through Deno FFI (Linux): open, close,
 * ioctl, read, write, sockets, capabilities, and errno. Loaded lazily so nothing opens libc unless a
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
  readv: { parameters: ["i32", "buffer", "i32"], result: "isize" },
  writev: { parameters: ["i32", "buffer", "i32"], result: "isize" },
  /** ioctl whose argument is a value, not a pointer (TUNSETOFFLOAD). */
  ioctl_value: { name: "ioctl", parameters: ["i32", "u64", "u64"], result: "i32" },
  /** poll(2) on a worker thread: waits without blocking the JS thread. */
  poll_blocking: {
    name: "poll",
    parameters: ["buffer", "u64", "i32"],
    result: "i32",
    nonblocking: true,
  },
  eventfd: { parameters: ["u32", "i32"], result: "i32" },
  setns: { parameters: ["i32", "i32"], result: "i32" },
  if_nametoindex: { parameters: ["buffer"], result: "u32" },
  socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
  sendto: {
    parameters: ["i32", "buffer", "usize", "i32", "buffer", "u32"],
    result: "isize",
  },
  recv: { parameters: ["i32", "buffer", "usize", "i32"], result: "isize" },
  setsockopt: { parameters: ["i32", "i32", "i32", "buffer", "u32"], result: "i32" },
  getsockopt: { parameters: ["i32", "i32", "i32", "buffer", "buffer"], result: "i32" },
  connect: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  shutdown: { parameters: ["i32", "i32"], result: "i32" },
  capget: { parameters: ["buffer", "buffer"], result: "i32" },
  capset: { parameters: ["buffer", "buffer"], result: "i32" },
  /** prctl(2) with its four optional arguments fixed (x86-64/aarch64 pass them in registers). */
  prctl: { parameters: ["i32", "u64", "u64", "u64", "u64"], result: "i32" },
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
/** open(2): read only. */
export const O_RDONLY = 0;
/** open(2): non-blocking reads and writes. */
export const O_NONBLOCK = 0o4000;
/** errno: try again (no data on a non-blocking descriptor). */
export const EAGAIN = 11;
/** errno: file descriptor in bad state (a TUN whose interface was deleted). */
export const EBADFD = 77;
/** errno: interrupted system call. */
export const EINTR = 4;
/** errno: operation not permitted. */
export const EPERM = 1;
/** errno: permission denied. */
export const EACCES = 13;
