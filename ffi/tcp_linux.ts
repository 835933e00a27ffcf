/**
 * TCP connections with a firewall mark (`SO_MARK`), through libc (Linux).
 *
 * With system-wide capture on, every socket the machine opens is routed into
 * the TUN — the client's own direct connections too, which would loop back
 * into it. The policy rules skip packets carrying the client's mark, and only
 * a socket created here can carry one: Deno's own TCP API gives no access to
 * the descriptor. Setting a mark needs CAP_NET_ADMIN, which TUN mode has.
 *
 * The socket is non-blocking; waiting for readiness runs `poll(2)` on a
 * worker thread (a `nonblocking` FFI call), so no JS thread ever blocks;
 * `close()` shuts the socket down, which wakes a pending poll, and the
 * descriptor is closed only once no wait is pending on it (no reuse of a
 * number a poll still watches).
 * @module
 */

import { DialError, type Duplex } from "../shared/duplex.ts";
import { isMapped, parseIp } from "../shared/net/cidr.ts";
import { errno, libc } from "./libc.ts";

const AF_INET = 2;
const AF_INET6 = 10;
const SOCK_STREAM = 1;
const SOCK_NONBLOCK = 0o4000;
const SOCK_CLOEXEC = 0o2000000;
const SOL_SOCKET = 1;
const SO_ERROR = 4;
const SO_MARK = 36;
const IPPROTO_TCP = 6;
const TCP_NODELAY = 1;
const POLLIN = 1;
const POLLOUT = 4;
const MSG_NOSIGNAL = 0x4000;
const SHUT_WR = 1;
const SHUT_RDWR = 2;
const EINPROGRESS = 115;
const EAGAIN = 11;
const EINTR = 4;
/** Longest single poll; close() wakes a pending one at once (shutdown), so this only bounds. */
const WAIT_SLICE_MS = 5000;

/** Maps a connect errno to the reason inbounds report. */
function dialError(code: number, what: string): DialError {
  switch (code) {
    case 111:
      return new DialError("refused", `${what}: connection refused`);
    case 101:
    case 113:
      return new DialError("unreachable", `${what}: network unreachable`);
    case 110:
      return new DialError("timeout", `${what}: timed out`);
    case 1:
    case 13:
      return new DialError("denied", `${what}: not permitted (errno ${code})`);
    default:
      return new DialError("general", `${what}: errno ${code}`);
  }
}

function sockaddr(ip: Uint8Array, port: number): { name: Uint8Array<ArrayBuffer>; v6: boolean } {
  if (isMapped(ip)) {
    const name = new Uint8Array(16);
    const v = new DataView(name.buffer);
    v.setUint16(0, AF_INET, true);
    v.setUint16(2, port);
    name.set(ip.subarray(12, 16), 4);
    return { name, v6: false };
  }
  const name = new Uint8Array(28);
  const v = new DataView(name.buffer);
  v.setUint16(0, AF_INET6, true);
  v.setUint16(2, port);
  name.set(ip, 8);
  return { name, v6: true };
}

/** Options of {@link dialMarked}. */
export interface MarkedDialOptions {
  /** The firewall mark the socket's packets carry. */
  mark: number;
  /** Give up connecting after this long, ms (default 10 s). */
  timeoutMs?: number;
  signal?: AbortSignal;
}

/**
 * Connects to `host` (an IP literal) and `port` with `SO_MARK` set; the
 * result is a {@link Duplex} like Deno's own connections.
 * @throws {DialError} refused, unreachable, timeout, denied (no CAP_NET_ADMIN for the mark).
 */
export async function dialMarked(
  host: string,
  port: number,
  opts: MarkedDialOptions,
): Promise<Duplex> {
  const ip = parseIp(host);
  const what = `${host.includes(":") ? `[${host}]` : host}:${port}`;
  if (!ip) throw new DialError("general", `${what}: not an IP address`);
  const c = libc();
  const { name, v6 } = sockaddr(ip, port);
  const fd = c.socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) throw dialError(errno(), what);
  const sock = new MarkedTcpConn(fd);
  try {
    const int = new Uint8Array(4);
    new DataView(int.buffer).setUint32(0, opts.mark >>> 0, true);
    if (c.setsockopt(fd, SOL_SOCKET, SO_MARK, int, 4) < 0) {
      throw dialError(errno(), `${what} (SO_MARK)`);
    }
    new DataView(int.buffer).setUint32(0, 1, true);
    c.setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, int, 4);
    if (c.connect(fd, name, name.length) < 0) {
      const e = errno();
      if (e !== EINPROGRESS) throw dialError(e, what);
      const deadline = performance.now() + (opts.timeoutMs ?? 10_000);
      for (;;) {
        if (opts.signal?.aborted) throw new DialError("timeout", `${what}: cancelled`);
        const left = deadline - performance.now();
        if (left <= 0) throw new DialError("timeout", `${what}: timed out`);
        const ev = await sock.wait(POLLOUT, Math.min(left, WAIT_SLICE_MS));
        if (ev !== 0) break;
      }
      const err = new Uint8Array(4);
      const len = new Uint8Array(4);
      new DataView(len.buffer).setUint32(0, 4, true);
      c.getsockopt(fd, SOL_SOCKET, SO_ERROR, err, len);
      const code = new DataView(err.buffer).getInt32(0, true);
      if (code !== 0) throw dialError(code, what);
    }
    return sock;
  } catch (e) {
    sock.close();
    throw e;
  }
}

/** A connected, marked, non-blocking TCP socket. */
class MarkedTcpConn implements Duplex {
  private closed = false;
  private waiting = 0;
  private fdClosed = false;
  private readonly pfd = new Uint8Array(8);
  private readonly pfdView = new DataView(this.pfd.buffer);

  constructor(private readonly fd: number) {}

  /** Waits for `events` up to `ms`; the revents seen (0 on timeout). */
  async wait(events: number, ms: number): Promise<number> {
    // Each wait has its own pollfd: a read and a write may wait at once.
    const pfd = this.waiting === 0 ? this.pfd : new Uint8Array(8);
    const v = pfd === this.pfd ? this.pfdView : new DataView(pfd.buffer);
    v.setInt32(0, this.fd, true);
    v.setInt16(4, events, true);
    v.setInt16(6, 0, true);
    this.waiting++;
    try {
      const r = await libc().poll_blocking(pfd, 1n, Math.max(1, Math.round(ms)));
      return r > 0 ? v.getInt16(6, true) : 0;
    } finally {
      this.waiting--;
      if (this.closed && this.waiting === 0) this.release();
    }
  }

  async read(p: Uint8Array): Promise<number | null> {
    if (p.length === 0) return 0;
    const c = libc();
    for (;;) {
      if (this.closed) throw new Deno.errors.BadResource("connection closed");
      const n = Number(c.read(this.fd, p as Uint8Array<ArrayBuffer>, BigInt(p.length)));
      if (n > 0) return n;
      if (n === 0) return null;
      const e = errno();
      if (e === EINTR) continue;
      if (e !== EAGAIN) throw osStreamError(e);
      // Readable, hung up or in error: the next read tells which.
      await this.wait(POLLIN, WAIT_SLICE_MS);
    }
  }

  async write(p: Uint8Array): Promise<number> {
    if (p.length === 0) return 0;
    const c = libc();
    for (;;) {
      if (this.closed) throw new Deno.errors.BadResource("connection closed");
      const n = Number(
        c.sendto(this.fd, p as Uint8Array<ArrayBuffer>, BigInt(p.length), MSG_NOSIGNAL, null, 0),
      );
      if (n > 0) return n;
      const e = errno();
      if (e === EINTR) continue;
      if (e !== EAGAIN) throw osStreamError(e);
      await this.wait(POLLOUT, WAIT_SLICE_MS);
    }
  }

  closeWrite(): Promise<void> {
    if (!this.closed) libc().shutdown(this.fd, SHUT_WR);
    return Promise.resolve();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.waiting === 0) this.release();
    else libc().shutdown(this.fd, SHUT_RDWR); // wakes the pending poll; it releases
  }

  private release(): void {
    if (this.fdClosed) return;
    this.fdClosed = true;
    libc().close(this.fd);
  }
}

function osStreamError(code: number): Error {
  if (code === 104) return new Deno.errors.ConnectionReset("connection reset by peer");
  if (code === 32) return new Deno.errors.BrokenPipe("broken pipe");
  return new Error(`socket error: errno ${code}`);
}
